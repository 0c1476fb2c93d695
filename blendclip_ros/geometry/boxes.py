"""Oriented 3D boxes: centres, vision_msgs extents and x, y, z, w quaternions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.transform import Rotation


def _as_rows(name: str, value: ArrayLike, width: int) -> np.ndarray:
    """``value`` as a read-only float64 ``(M, width)`` array; ValueError naming ``name`` otherwise."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Boxes.{name}: not numeric ({exc})") from exc
    if array.size == 0:
        array = array.reshape(0, width)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"Boxes.{name}: expected shape (M, {width}), got {array.shape}")
    return array


def _normalised(quaternions: np.ndarray) -> np.ndarray:
    """Unit quaternions; rows with zero or non-finite norm become NaN (an invalid box)."""
    norms = np.linalg.norm(quaternions, axis=1, keepdims=True)
    usable = np.isfinite(norms) & (norms > 0)
    return np.divide(quaternions, norms, out=np.full_like(quaternions, np.nan), where=usable)


@dataclass(frozen=True, eq=False)
class Boxes:
    """``M`` oriented boxes (float64, read-only arrays).

    ``centers (M, 3)``; ``sizes (M, 3)`` = full extents along the box's own x, y, z axes
    (vision_msgs ``BoundingBox3D.size``); ``quaternions (M, 4)`` in x, y, z, w order, stored
    normalised. Non-finite values, non-positive sizes and zero quaternions are accepted and
    make that box invalid (see :attr:`valid`); only wrong shapes raise ``ValueError``.
    """

    centers: np.ndarray
    sizes: np.ndarray
    quaternions: np.ndarray

    def __post_init__(self) -> None:
        centers = _as_rows("centers", self.centers, 3)
        sizes = _as_rows("sizes", self.sizes, 3)
        quaternions = _normalised(_as_rows("quaternions", self.quaternions, 4))
        if not len(centers) == len(sizes) == len(quaternions):
            raise ValueError(
                f"Boxes: centers, sizes and quaternions have {len(centers)}, {len(sizes)} "
                f"and {len(quaternions)} rows"
            )
        for name, array in (("centers", centers), ("sizes", sizes), ("quaternions", quaternions)):
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    @classmethod
    def from_quaternions(
        cls, centers: ArrayLike, sizes: ArrayLike, quaternions: ArrayLike
    ) -> Boxes:
        """Boxes from x, y, z, w quaternions (normalised here; zero/NaN ones mark the box invalid)."""
        return cls(centers, sizes, quaternions)

    @classmethod
    def from_yaw(cls, centers: ArrayLike, sizes: ArrayLike, yaws: ArrayLike) -> Boxes:
        """Boxes rotated by ``yaws`` (radians, counter-clockwise about +z)."""
        half = 0.5 * np.asarray(yaws, dtype=np.float64).reshape(-1)
        zeros = np.zeros_like(half)
        return cls(centers, sizes, np.stack([zeros, zeros, np.sin(half), np.cos(half)], axis=1))

    @classmethod
    def from_mmdet3d(cls, array: ArrayLike) -> Boxes:
        """Boxes from mmdet3d LiDAR rows ``[x, y, z_center, l, w, h, yaw]`` (size = ``[l, w, h]``)."""
        rows = _as_rows("mmdet3d", array, 7)
        return cls.from_yaw(rows[:, :3], rows[:, 3:6], rows[:, 6])

    @classmethod
    def empty(cls) -> Boxes:
        """No boxes."""
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4)))

    def __len__(self) -> int:
        return len(self.centers)

    def subset(self, idx: ArrayLike) -> Boxes:
        """The boxes selected by an index array, slice or boolean mask (in that order)."""
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
            if idx.dtype != bool:
                idx = idx.astype(np.int64).reshape(-1)
        return Boxes(self.centers[idx], self.sizes[idx], self.quaternions[idx])

    @cached_property
    def valid(self) -> np.ndarray:
        """``(M,)`` bool: finite centre, finite positive sizes and a usable quaternion."""
        return (
            np.isfinite(self.centers).all(axis=1)
            & np.isfinite(self.sizes).all(axis=1)
            & (self.sizes > 0).all(axis=1)
            & np.isfinite(self.quaternions).all(axis=1)
        )

    @cached_property
    def rotation_matrices(self) -> np.ndarray:
        """``(M, 3, 3)`` box-to-parent rotations (columns = box axes); NaN for unusable quaternions."""
        matrices = np.full((len(self), 3, 3), np.nan)
        usable = np.isfinite(self.quaternions).all(axis=1)
        if usable.any():
            matrices[usable] = Rotation.from_quat(self.quaternions[usable]).as_matrix()
        matrices.flags.writeable = False
        return matrices

    @cached_property
    def yaws(self) -> np.ndarray:
        """``(M,)`` heading of each box's x axis about +z (radians, in (-pi, pi]); NaN if unusable."""
        x, y, z, w = self.quaternions.T
        return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
