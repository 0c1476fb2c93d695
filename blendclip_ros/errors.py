"""Typed errors for bad user input: one clear line naming the field and the problem."""


class BlendClipError(Exception):
    """Base class for every error the package raises on bad input."""


class MessageFormatError(BlendClipError, ValueError):
    """A ROS message (cloud, detections) is malformed; the message names the field."""


class PointFileError(BlendClipError, ValueError):
    """A point or box file cannot be read or has the wrong layout."""


class CheckpointError(BlendClipError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class PromptError(BlendClipError, ValueError):
    """A prompt set (YAML or inline labels) is invalid."""


class ConfigError(BlendClipError, ValueError):
    """A configuration value is invalid."""


class PointCloudError(BlendClipError, ValueError):
    """An in-memory point cloud has the wrong shape, dtype or values (e.g. NaN, too many points)."""
