"""Camera crops of annotated boxes, by BlendCLIP's rules (all configurable in :class:`CropRules`).

* only annotations whose nuScenes visibility token is in ``visibilities`` (default ``{"4"}``,
  80-100 % visible);
* every camera where the box lies fully inside the image: the devkit's ``BoxVisibility.ALL``
  test (all 8 corners more than 1 m in front, strictly inside the image);
* crop = axis-aligned box of the 8 projected corners, clipped to the image, kept when both sides
  are at least ``min_size`` pixels; no margin, no resize; stored as JPEG.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from blendclip_ros.errors import ConfigError


@dataclass(frozen=True)
class CropRules:
    visibilities: tuple[str, ...] = ("4",)
    min_size: int = 50
    cameras: tuple[str, ...] | None = None  # None = every camera of the sample
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.min_size < 1:
            raise ConfigError(f"min_size: expected >= 1 pixel, got {self.min_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality: expected 1..100, got {self.jpeg_quality}")


def crop_rects(corners_cam: np.ndarray, intrinsic: np.ndarray, size: tuple[int, int],
               min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop rectangles (B, 4) = x0, y0, x1, y1 of boxes given by corners (B, 8, 3) in the camera frame,
    and which boxes pass the rules (fully inside the image, both sides >= ``min_size``)."""
    corners = np.asarray(corners_cam, dtype=np.float64).reshape(-1, 8, 3)
    width, height = size
    depth = corners[..., 2]
    uvw = corners @ np.asarray(intrinsic, dtype=np.float64)[:3, :3].T
    uv = uvw[..., :2] / np.where(np.abs(uvw[..., 2:]) > 1e-12, uvw[..., 2:], 1e-12)
    inside = ((uv[..., 0] > 0) & (uv[..., 0] < width) & (uv[..., 1] > 0) & (uv[..., 1] < height)
              & (depth > 1.0)).all(axis=1)
    lo = np.maximum(uv.min(axis=1), 0.0)
    hi = np.minimum(uv.max(axis=1), [width, height])
    rects = np.concatenate([lo, hi], axis=1)
    big = ((hi - lo) >= min_size).all(axis=1)
    return rects, inside & big


def box_corners(centres: np.ndarray, sizes: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """(B, 8, 3) corners of boxes with l, w, h ``sizes`` and (B, 3, 3) ``rotations``."""
    signs = np.array([[x, y, z] for x in (1, -1) for y in (1, -1) for z in (1, -1)], dtype=np.float64)
    local = signs[None] * (np.asarray(sizes, dtype=np.float64)[:, None] / 2)
    return local @ np.asarray(rotations).transpose(0, 2, 1) + np.asarray(centres)[:, None]


def jpeg_crop(image: Image.Image, rect: np.ndarray, quality: int = 90) -> bytes:
    """The rectangle ``x0, y0, x1, y1`` of an image as JPEG bytes."""
    x0, y0, x1, y1 = (round(float(v)) for v in rect)
    buffer = io.BytesIO()
    image.crop((x0, y0, x1, y1)).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def covered_fraction(rects: np.ndarray, depths: np.ndarray, size: tuple[int, int], scale: float = 0.25) -> np.ndarray:
    """Per rectangle, the fraction of its area hidden behind nearer rectangles (z-buffer of the
    projected boxes at ``scale`` resolution): the stand-in for nuScenes' visibility where a dataset
    has no visibility tokens."""
    width, height = max(1, int(size[0] * scale)), max(1, int(size[1] * scale))
    owner = np.full((height, width), -1, dtype=np.int64)
    r = np.round(np.asarray(rects, dtype=np.float64).reshape(-1, 4) * scale).astype(np.int64)
    r[:, [0, 2]] = np.clip(r[:, [0, 2]], 0, width)
    r[:, [1, 3]] = np.clip(r[:, [1, 3]], 0, height)
    for i in np.argsort(-np.asarray(depths))[::1]:  # far to near: nearer boxes paint over
        owner[r[i, 1]:r[i, 3], r[i, 0]:r[i, 2]] = i
    area = np.maximum((r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1]), 1)
    visible = np.bincount(owner[owner >= 0], minlength=len(r))
    return 1.0 - visible / area
