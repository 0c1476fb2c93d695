"""Crop preprocessing: box-frame rotation, up-axis, colour channels, point sampling, normalisation.

A crop becomes an encoder's input as the model family's authors prepare theirs (an
:class:`InputConvention`): keep the finite rows, optionally rotate them into the box frame, turn
REP-103 z-up axes into the family's up-axis, add colour channels where the family takes them
(LiDAR has none: a constant gray, or the intensity), then

* ``normalize_then_sample`` (the BlendCLIP release): centre the whole crop on its mean, scale
  its farthest point to radius 1, then reduce clouds above the cap by farthest point sampling
  (random start), without re-centring;
* ``sample_then_normalize`` (ULIP-2, OpenShape, Uni3D evaluations): sample first, then
  normalise what was kept.

Families that always take a fixed number of points also resample sparse crops up to it (every
point kept, plus random duplicates).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.transform import Rotation

from ..errors import ConfigError, PointCloudError
from ..model.config import DictConfig
from .boxes import Boxes

SamplingMethod = Literal["fps", "random"]
DEFAULT_MAX_POINTS = 8192
ORDERS = ("normalize_then_sample", "sample_then_normalize")
UP_AXES = ("z", "y")
COLOURS = ("gray", "intensity")


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")


@dataclass(frozen=True)
class InputConvention(DictConfig):
    """How one model family wants its input clouds.

    ``num_points``: the cap (and, with ``resample_up``, the exact count) of points per cloud;
    ``order``: normalise before or after sampling; ``up_axis``: ``"y"`` rotates REP-103 z-up
    crops to y-up as ``(x, y, z) -> (x, z, -y)``; ``channels``: 3 (xyz) or 6 (xyz + rgb in
    [0, 1]); ``colour``: rgb from a constant ``gray`` or from the point column
    ``intensity_column`` divided by ``intensity_scale`` (clipped to [0, 1]).
    """

    num_points: int = DEFAULT_MAX_POINTS
    resample_up: bool = False
    order: str = "normalize_then_sample"
    up_axis: str = "z"
    channels: int = 3
    colour: str = "gray"
    gray: float = 0.4
    intensity_column: int = 3
    intensity_scale: float = 255.0

    def __post_init__(self) -> None:
        _check_count("num_points", self.num_points)
        for name, value, allowed in (("order", self.order, ORDERS), ("up_axis", self.up_axis, UP_AXES),
                                     ("colour", self.colour, COLOURS), ("channels", self.channels, (3, 6))):
            if value not in allowed:
                raise ConfigError(f"{name}: expected one of {list(allowed)}, got {value!r}")
        if not 0.0 <= float(self.gray) <= 1.0:
            raise ConfigError(f"gray: expected a value in [0, 1], got {self.gray!r}")
        if not float(self.intensity_scale) > 0:
            raise ConfigError(f"intensity_scale: expected a positive number, got {self.intensity_scale!r}")
        if int(self.intensity_column) < 3:
            raise ConfigError(f"intensity_column: expected a column >= 3, got {self.intensity_column!r}")

    @property
    def reads_intensity(self) -> bool:
        """Whether rgb comes from the clouds' intensity column (which they must then have)."""
        return self.channels == 6 and self.colour == "intensity"

    def replace(self, **changes: Any) -> InputConvention:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


#: The BlendCLIP release: xyz, normalise the whole crop, FPS down to 8192, no re-centring.
RELEASE_CONVENTION = InputConvention()


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


def z_up_to_y_up(xyz: np.ndarray) -> np.ndarray:
    """REP-103 z-up coordinates as a y-up frame: ``(x, y, z) -> (x, z, -y)`` (a rotation about x)."""
    return np.stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]], axis=1)


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
    _check_count("max_points", max_points)
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


def resample_up(points: np.ndarray, count: int, seed: int | None = None) -> np.ndarray:
    """``points`` followed by random duplicates of its rows up to ``count`` rows (empty stays empty)."""
    points = np.asarray(points)
    if len(points) == 0 or len(points) >= count:
        return points
    extra = np.random.default_rng(seed).integers(len(points), size=count - len(points))
    return np.concatenate([points, points[extra]])


def preprocess_crop(
    points: ArrayLike,
    box: Boxes | None = None,
    *,
    rotate_to_box: bool = False,
    max_points: int | None = None,
    method: SamplingMethod = "fps",
    seed: int | None = 0,
    convention: InputConvention = RELEASE_CONVENTION,
) -> np.ndarray:
    """One crop as a model's input: ``(K, channels)`` float32 (see :func:`preprocess_crops`).

    Non-finite rows are dropped; ``rotate_to_box`` expresses the points in the frame of
    ``box`` (a single-box :class:`Boxes`). A single point becomes the origin and an empty crop
    gives ``(0, channels)``.
    """
    array = np.asarray(points)
    if array.ndim != 2 or array.shape[1] < 3:
        raise ValueError(f"points: expected shape (N, >=3), got {array.shape}")
    if rotate_to_box and (box is None or len(box) != 1):
        raise ValueError("box: rotate_to_box needs a Boxes holding exactly one box")
    return preprocess_crops(array, [np.arange(len(array))], box, rotate_to_box=rotate_to_box,
                            max_points=max_points, method=method, seed=seed, convention=convention)[0]


def preprocess_crops(
    points: ArrayLike,
    index_lists: Sequence[np.ndarray],
    boxes: Boxes | None = None,
    *,
    rotate_to_box: bool = False,
    max_points: int | None = None,
    method: SamplingMethod = "fps",
    seed: int | None = 0,
    convention: InputConvention = RELEASE_CONVENTION,
) -> list[np.ndarray]:
    """Each crop ``points[index_lists[i]]`` (box ``i`` of ``boxes``) as ``convention`` wants it.

    ``max_points`` (default ``convention.num_points``) caps the crop; with
    ``convention.resample_up`` sparser crops are filled up to it. Every crop uses the same
    ``seed``, so a crop's result does not depend on its position in the batch. Normalisation
    runs once over all crops together.
    """
    cap = convention.num_points if max_points is None else max_points
    _check_sampling(cap, method)
    cloud = np.asarray(points)
    if cloud.ndim != 2 or cloud.shape[1] < 3:
        raise ValueError(f"points: expected shape (N, >=3), got {cloud.shape}")
    if rotate_to_box and (boxes is None or len(boxes) != len(index_lists)):
        raise ValueError("boxes: rotate_to_box needs one box per index list")
    colour = _colour_source(cloud, convention)
    crops, colours = [], []
    for i, indices in enumerate(index_lists):
        rows = np.asarray(indices, dtype=np.int64)
        xyz = cloud[rows, :3].astype(np.float64)
        finite = np.isfinite(xyz).all(axis=1)
        xyz = xyz[finite]
        if rotate_to_box:
            xyz = (xyz - boxes.centers[i]) @ boxes.rotation_matrices[i]
        if convention.up_axis == "y":
            xyz = z_up_to_y_up(xyz)
        crops.append(xyz)
        colours.append(None if colour is None else colour[rows][finite])
    if convention.order == "normalize_then_sample":
        crops = _normalise_all(crops)
    features = [xyz if rgb is None else np.concatenate([xyz, rgb], axis=1) for xyz, rgb in zip(crops, colours)]
    sampled = [sample_points(f, cap, method, seed) for f in features]
    if convention.resample_up:
        sampled = [resample_up(f, cap, seed) for f in sampled]
    if convention.order == "sample_then_normalize":
        xyz = _normalise_all([f[:, :3] for f in sampled])
        sampled = [np.concatenate([p, f[:, 3:]], axis=1) for p, f in zip(xyz, sampled)]
    return [_with_channels(f, convention) for f in sampled]


def _colour_source(cloud: np.ndarray, convention: InputConvention) -> np.ndarray | None:
    """Per-point rgb ``(N, 3)`` in [0, 1] for the whole cloud, or ``None`` (xyz only or gray fill)."""
    if not convention.reads_intensity:
        return None
    column = convention.intensity_column
    if cloud.shape[1] <= column:
        raise PointCloudError(f"points: colour 'intensity' needs column {column}, the cloud has "
                              f"{cloud.shape[1]} columns")
    value = np.nan_to_num(cloud[:, column].astype(np.float64) / convention.intensity_scale, nan=0.0)
    return np.repeat(np.clip(value, 0.0, 1.0)[:, None], 3, axis=1)


def _with_channels(features: np.ndarray, convention: InputConvention) -> np.ndarray:
    """float32 ``(K, channels)``: xyz, then the colour columns or the gray fill."""
    if convention.channels == 3 or features.shape[1] == 6:
        return np.ascontiguousarray(features[:, :convention.channels], dtype=np.float32)
    out = np.full((len(features), 6), convention.gray, dtype=np.float32)
    out[:, :3] = features[:, :3]
    return out


def _normalise_all(crops: list[np.ndarray]) -> list[np.ndarray]:
    """Centre each crop on its mean and scale its farthest point to radius 1, all at once.

    A crop whose radius is at rounding level (coincident points) becomes all zeros.
    """
    if not crops:
        return []
    lengths = np.array([len(c) for c in crops], dtype=np.int64)
    flat = np.concatenate(crops).astype(np.float64) if crops else np.zeros((0, 3))
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
