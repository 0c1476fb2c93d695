"""BlendCLIP crop preprocessing: box-frame rotation, point sampling, unit-sphere normalisation.

A crop becomes the encoder's input as in BlendCLIP: keep the finite xyz rows, optionally
rotate them into the box frame, reduce clouds above ``max_points`` by farthest point
sampling (random start), then centre on the mean and scale so that the farthest point lies
at radius 1. Crops at or below the cap are neither sampled nor padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.transform import Rotation

from ..errors import ConfigError
from .boxes import Boxes

SamplingMethod = Literal["fps", "random"]
DEFAULT_MAX_POINTS = 8192


def _xyz64(points: ArrayLike) -> np.ndarray:
    """The first three columns as a float64 ``(N, 3)`` array."""
    array = np.asarray(points)
    if array.ndim != 2 or array.shape[1] < 3:
        raise ValueError(f"points: expected shape (N, >=3), got {array.shape}")
    return array[:, :3].astype(np.float64)


def center_points(points: ArrayLike) -> np.ndarray:
    """xyz minus their mean, float64 ``(N, 3)`` (empty stays empty)."""
    xyz = _xyz64(points)
    return xyz - xyz.mean(axis=0) if len(xyz) else xyz


def scale_to_unit_sphere(points: ArrayLike) -> np.ndarray:
    """xyz scaled about the origin so the farthest point has norm 1 (all-zero stays zero)."""
    xyz = _xyz64(points)
    radius = np.sqrt(np.einsum("ij,ij->i", xyz, xyz).max()) if len(xyz) else 0.0
    return xyz / radius if radius > 0 else xyz


def rotate_into_box_frame(points: ArrayLike, center: ArrayLike, quaternion: ArrayLike) -> np.ndarray:
    """Box-frame coordinates ``R^T (p - c)`` of xyz, for a box pose with an x, y, z, w quaternion."""
    quat = np.asarray(quaternion, dtype=np.float64).reshape(-1)
    norm = np.linalg.norm(quat) if quat.shape == (4,) else 0.0
    if not (np.isfinite(norm) and norm > 0):
        raise ValueError(f"quaternion: expected 4 finite values (x, y, z, w), not all zero, got {quat}")
    rotation = Rotation.from_quat(quat / norm).as_matrix()
    return (_xyz64(points) - np.asarray(center, dtype=np.float64).reshape(3)) @ rotation


def farthest_point_indices(points: ArrayLike, count: int, seed: int | None = None) -> np.ndarray:
    """Indices of ``count`` points chosen by farthest point sampling from a random start.

    Each step updates every point's squared distance to the chosen set (float32, on
    mean-centred contiguous columns) and takes the farthest: ``count`` vectorised passes
    over the cloud. Expects finite xyz.
    """
    xyz = _xyz64(points)
    count = min(int(count), len(xyz))
    chosen = np.empty(count, dtype=np.int64)
    if count == 0:
        return chosen
    x, y, z = np.ascontiguousarray((xyz - xyz.mean(axis=0)).T, dtype=np.float32)
    chosen[0] = np.random.default_rng(seed).integers(len(xyz))
    nearest = np.full(len(xyz), np.inf, dtype=np.float32)
    distance = np.empty_like(nearest)
    term = np.empty_like(nearest)
    for step in range(1, count):
        last = chosen[step - 1]
        np.subtract(x, x[last], out=distance)
        np.multiply(distance, distance, out=distance)
        for axis in (y, z):
            np.subtract(axis, axis[last], out=term)
            np.multiply(term, term, out=term)
            distance += term
        np.minimum(nearest, distance, out=nearest)
        chosen[step] = np.argmax(nearest)
    return chosen


def _check_sampling(max_points: int, method: str) -> None:
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise ConfigError(f"max_points: expected a positive integer, got {max_points!r}")
    if method not in ("fps", "random"):
        raise ConfigError(f"method: expected 'fps' or 'random', got {method!r}")


def sample_points(
    points: np.ndarray, max_points: int, method: SamplingMethod = "fps", seed: int | None = None
) -> np.ndarray:
    """At most ``max_points`` rows of ``points`` (all columns): unchanged at or below the cap,
    else farthest point sampling (in sampling order) or a random subset (in input order)."""
    _check_sampling(max_points, method)
    points = np.asarray(points)
    if len(points) <= max_points:
        return points
    if method == "fps":
        return points[farthest_point_indices(points, max_points, seed)]
    keep = np.random.default_rng(seed).choice(len(points), size=max_points, replace=False)
    return points[np.sort(keep)]


def preprocess_crop(
    points: ArrayLike,
    box: Boxes | None = None,
    *,
    rotate_to_box: bool = False,
    max_points: int = DEFAULT_MAX_POINTS,
    method: SamplingMethod = "fps",
    seed: int | None = 0,
) -> np.ndarray:
    """One crop as BlendCLIP's encoder input: ``(K, 3)`` float32 with mean 0 and max radius 1.

    Non-finite rows are dropped; ``rotate_to_box`` expresses the points in the frame of
    ``box`` (a single-box :class:`Boxes`). ``K = min(finite rows, max_points)``; a single
    point becomes the origin and an empty crop gives ``(0, 3)``.
    """
    xyz = _xyz64(points)
    if rotate_to_box and (box is None or len(box) != 1):
        raise ValueError("box: rotate_to_box needs a Boxes holding exactly one box")
    return preprocess_crops(
        xyz,
        [np.arange(len(xyz))],
        box,
        rotate_to_box=rotate_to_box,
        max_points=max_points,
        method=method,
        seed=seed,
    )[0]


def preprocess_crops(
    points: ArrayLike,
    index_lists: Sequence[np.ndarray],
    boxes: Boxes | None = None,
    *,
    rotate_to_box: bool = False,
    max_points: int = DEFAULT_MAX_POINTS,
    method: SamplingMethod = "fps",
    seed: int | None = 0,
) -> list[np.ndarray]:
    """:func:`preprocess_crop` for each crop ``points[index_lists[i]]`` (box ``i`` of ``boxes``).

    Every crop uses the same ``seed``, so a crop's result does not depend on its position
    in the batch. The centring and scaling run once over all crops together.
    """
    _check_sampling(max_points, method)
    cloud = np.asarray(points)
    if cloud.ndim != 2 or cloud.shape[1] < 3:
        raise ValueError(f"points: expected shape (N, >=3), got {cloud.shape}")
    if rotate_to_box and (boxes is None or len(boxes) != len(index_lists)):
        raise ValueError("boxes: rotate_to_box needs one box per index list")
    crops = []
    for i, indices in enumerate(index_lists):
        xyz = cloud[np.asarray(indices, dtype=np.int64), :3].astype(np.float64)
        xyz = xyz[np.isfinite(xyz).all(axis=1)]
        if rotate_to_box:
            xyz = (xyz - boxes.centers[i]) @ boxes.rotation_matrices[i]
        crops.append(sample_points(xyz, max_points, method, seed))
    return _normalise_all(crops)


def _normalise_all(crops: list[np.ndarray]) -> list[np.ndarray]:
    """Centre each crop on its mean and scale its farthest point to radius 1, all at once.

    A crop whose radius is at rounding level (coincident points) becomes all zeros.
    """
    if not crops:
        return []
    lengths = np.array([len(c) for c in crops], dtype=np.int64)
    flat = np.concatenate(crops) if crops else np.zeros((0, 3))
    segment = np.repeat(np.arange(len(crops)), lengths)
    sums = np.stack(
        [np.bincount(segment, weights=flat[:, k], minlength=len(crops)) for k in range(3)], axis=1
    )
    means = sums / np.maximum(lengths, 1)[:, None]
    flat = flat - means[segment]
    radius = np.zeros(len(crops))
    nonempty = lengths > 0
    if nonempty.any():
        starts = (np.cumsum(lengths) - lengths)[nonempty]
        radius[nonempty] = np.sqrt(np.maximum.reduceat(np.einsum("ij,ij->i", flat, flat), starts))
    degenerate = radius <= 1e-9 * (1.0 + np.linalg.norm(means, axis=1))
    scale = np.where(degenerate, 0.0, 1.0 / np.where(degenerate, 1.0, radius))
    flat = (flat * scale[segment][:, None]).astype(np.float32)
    return np.split(flat, np.cumsum(lengths)[:-1])
