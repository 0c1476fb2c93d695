"""Bring detection boxes into the cloud's frame: tf2 where installed, else a clear refusal."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import BlendClipError


class FrameError(BlendClipError):
    """The boxes' frame cannot be related to the cloud's frame."""


def transform_boxes(centers: np.ndarray, quaternions: np.ndarray, translation: np.ndarray,
                    rotation_xyzw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply the rigid transform (rotation then translation) to box centres and orientations."""
    rotation = Rotation.from_quat(rotation_xyzw)
    new_centers = rotation.apply(centers) + translation
    new_quats = (rotation * Rotation.from_quat(quaternions)).as_quat() if len(quaternions) else quaternions
    return new_centers, new_quats


class FrameResolver:
    """Looks up transforms at a message stamp with tf2_ros when it is installed.

    On installs without tf2_ros (e.g. ROS 2 from PyPI wheels) only boxes already in the
    cloud's frame can be used; :meth:`lookup` raises FrameError otherwise.
    """

    def __init__(self, node: Any, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        try:
            import tf2_ros  # noqa: PLC0415 - optional dependency, present on real ROS installs
        except ImportError:
            self._buffer = None
            return
        self._buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self._buffer, node)

    @property
    def available(self) -> bool:
        return self._buffer is not None

    def lookup(self, target_frame: str, source_frame: str, stamp: Any) -> tuple[np.ndarray, np.ndarray]:
        """Translation and x,y,z,w rotation taking ``source_frame`` coordinates to ``target_frame``."""
        if self._buffer is None:
            raise FrameError(f"boxes are in frame '{source_frame}' but the cloud is in '{target_frame}', "
                             "and tf2_ros is not installed to transform them")
        from rclpy.duration import Duration  # noqa: PLC0415
        from rclpy.time import Time  # noqa: PLC0415

        try:
            tf = self._buffer.lookup_transform(target_frame, source_frame, Time.from_msg(stamp),
                                               timeout=Duration(seconds=self.timeout_s))
        except Exception as exc:  # tf2 raises several unrelated exception types
            raise FrameError(f"no transform from '{source_frame}' to '{target_frame}' at the message stamp: "
                             f"{exc}") from exc
        t, r = tf.transform.translation, tf.transform.rotation
        return np.array([t.x, t.y, t.z]), np.array([r.x, r.y, r.z, r.w])
