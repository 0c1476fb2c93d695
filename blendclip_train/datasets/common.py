"""What the dataset readers share: the y-up to z-up rotation, image encoding, ``FORMAT:PATH`` specs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from blendclip_ros.errors import ConfigError, PointFileError

#: How y-up sources (ShapeNet, Objaverse, ModelNet40, ScanObjectNN) become z-up (REP-103): a
#: +90 degree rotation about x. A proper rotation, unlike OpenShape's y/z swap (a mirror image).
Y_UP_TO_Z_UP = "rot_x(+90 deg): (x, y, z) -> (x, -z, y)"


def y_up_to_z_up(points: np.ndarray) -> np.ndarray:
    """``(N, C)`` points with their first three columns rotated from y-up to z-up (other columns kept)."""
    src = np.asarray(points, dtype=np.float32)
    out = src.copy()
    out[:, 1], out[:, 2] = -src[:, 2], src[:, 1]
    return out


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of raw uint8 pixels: HWC or CHW, grey, RGB or RGBA (alpha and grey become RGB)."""
    from PIL import Image

    image = np.asarray(pixels)
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
        image = image.transpose(1, 2, 0)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise PointFileError(f"image: expected HxW, HxWxC or CxHxW pixels, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).convert("RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def split_spec(spec: str, formats: tuple[str, ...]) -> tuple[str, Path]:
    """``"FORMAT:PATH"`` into its format (one of ``formats``) and path."""
    fmt, sep, path = str(spec).partition(":")
    if not sep or fmt.lower() not in formats or not path:
        raise ConfigError(f"data: expected FORMAT:PATH with FORMAT one of {', '.join(formats)}; got {spec!r}")
    return fmt.lower(), Path(path)


def even_subset(count: int, keep: int | None) -> list[int]:
    """Indices of ``keep`` evenly spaced items out of ``count`` (all when ``keep`` is None or larger)."""
    if keep is None or keep >= count:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, keep).round()})
