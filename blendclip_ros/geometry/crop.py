"""Points-in-boxes cropping: which points of a cloud lie inside each oriented box.

A point ``p`` is inside a box when its box-frame coordinates ``R^T (p - c)`` satisfy
``|local_k| <= size_k / 2 + margin`` on all three axes, boundary included. This is the
nuScenes devkit's ``points_in_box`` test (``0 <= v.e <= |e|^2`` along each edge ``e``)
written in the box frame. Non-finite points are never inside; invalid boxes (see
:attr:`Boxes.valid`) and boxes that the margin shrinks to nothing contain no points.

The numpy path buckets the points once into a coarse 2D grid (a linear-time radix sort of
16-bit cell ids) spanning the union of the boxes' axis-aligned footprints, then runs the
exact test, for all boxes in one batch, only on the points of the cells that each box's
xy footprint overlaps. The torch variant keeps results on the input's device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .boxes import Boxes

if TYPE_CHECKING:
    import torch

_MAX_CELLS_PER_AXIS = 254  # plus two border cells: (254 + 2)^2 ids fit in uint16
_CELL_PER_FOOTPRINT = 0.125  # grid cell edge / median box footprint edge
_CANDIDATE_CHUNK = 1 << 18  # candidate (point, box) pairs tested per vectorised step (~40 MB)
_DENSE_CHUNK_ELEMENTS = 1 << 21  # points x boxes per step of the on-device torch kernel


def _xyz(points: Any) -> np.ndarray:
    """The ``(N, 3)`` coordinate view of a numpy array or (CPU/CUDA) torch tensor."""
    if type(points).__module__.startswith("torch"):
        points = points.detach().cpu().numpy()
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points: expected shape (N, >=3), got {points.shape}")
    if not np.issubdtype(points.dtype, np.floating):
        points = points.astype(np.float64)
    return points[:, :3]


def _box_frame(boxes: Boxes, margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the boxes that can hold points, their rotations and their half extents."""
    half = 0.5 * boxes.sizes + float(margin)
    usable = boxes.valid & (half > 0).all(axis=1) & np.isfinite(half).all(axis=1)
    active = np.flatnonzero(usable)
    return active, boxes.rotation_matrices[active], half[active]


def _empty_result(count: int) -> list[np.ndarray]:
    return [np.zeros(0, dtype=np.int64) for _ in range(count)]


def points_in_boxes(points: Any, boxes: Boxes, margin: float = 0.0) -> list[np.ndarray]:
    """Indices of the points inside each box.

    ``points`` is an ``(N, >=3)`` numpy array or torch tensor (any device; it is read on
    the CPU); columns 0..2 are x, y, z. ``margin`` (metres) grows every face of every box
    (negative shrinks it). Returns one ascending int64 index array per box, in box order.
    Memory stays bounded: the grid is fixed-size and candidate (point, box) pairs are
    tested in groups of boxes holding about 260k pairs (plus at most one box's worth).
    """
    xyz = _xyz(points)
    result = _empty_result(len(boxes))
    active, rotations, half = _box_frame(boxes, margin)
    if len(active) == 0 or len(xyz) == 0:
        return result
    centers = boxes.centers[active]
    grid = _PointGrid(xyz[:, :2], centers, rotations, half)
    # Per-box parameters as rows (struct of arrays keeps every step below contiguous):
    # 0..8 = R^T row-major (row k = box axis k), 9..11 = centre, 12..14 = half extents.
    params = np.concatenate(
        [rotations.transpose(0, 2, 1).reshape(-1, 9), centers, half], axis=1
    ).T.copy()
    columns = np.ascontiguousarray(xyz.T)
    for first, point_ids, per_box in grid.candidate_groups(_CANDIDATE_CHUNK):
        if len(point_ids) == 0:
            continue
        box_params = np.repeat(params[:, first : first + len(per_box)], per_box, axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            offset = columns[:, point_ids] - box_params[9:12]
            inside = np.ones(len(point_ids), dtype=bool)
            for k in range(3):
                row = box_params[3 * k : 3 * k + 3]
                local = offset[0] * row[0] + offset[1] * row[1] + offset[2] * row[2]
                inside &= np.abs(local, out=local) <= box_params[12 + k]
        kept = point_ids[inside]
        # kept[ends[j] : ends[j + 1]] are box (first + j)'s points.
        ends = np.concatenate([[0], np.cumsum(inside, dtype=np.int64)])[np.cumsum(per_box)]
        for j, (begin, end) in enumerate(zip(np.concatenate([[0], ends[:-1]]), ends)):
            # A box's candidates come as ascending runs (one per grid cell): timsort merges them.
            result[active[first + j]] = np.sort(kept[begin:end], kind="stable")
    return result


class _PointGrid:
    """Points bucketed into a coarse 2D grid over the union of the box footprints.

    At most 254 x 254 interior cells, an eighth of the median footprint wide; points outside
    the grid (or non-finite) go to border cells that no box queries. The bucketing is a
    stable argsort of 16-bit cell ids, which numpy performs as a linear-time radix sort.
    Each box queries, per grid column it spans, the run of cells covering its footprint
    (the xy projection of the box) within that column.
    """

    def __init__(
        self, xy: np.ndarray, centers: np.ndarray, rotations: np.ndarray, half: np.ndarray
    ) -> None:
        # Exact axis-aligned half extents of each rotated box, and a padding that keeps
        # rounding in the bucketing from ever dropping a point that the exact test keeps.
        reach = np.einsum("mij,mj->mi", np.abs(rotations), half)
        pad = 1e-6 * (1.0 + np.abs(centers).max(axis=1) + reach.max(axis=1))
        low = centers[:, :2] - reach[:, :2] - pad[:, None]
        high = centers[:, :2] + reach[:, :2] + pad[:, None]
        origin = low.min(axis=0)
        span = high.max(axis=0) - origin
        size = max(
            _CELL_PER_FOOTPRINT * float(np.median(high - low)),
            float(span.max()) / (_MAX_CELLS_PER_AXIS - 1) * (1.0 + 1e-9),  # floor(span/size)+1 fits
            1e-3,
        )
        cells = np.floor(span / size).astype(np.int64) + 1
        stride = int(cells[1]) + 2
        column = [self._cell_coordinate(xy[:, k], origin[k], size, int(cells[k])) for k in (0, 1)]
        cell_id = (column[0] * stride + column[1]).astype(np.uint16)
        self.order = np.argsort(cell_id, kind="stable")  # radix sort for 16-bit keys
        starts = np.zeros(stride * (int(cells[0]) + 2) + 1, dtype=np.int64)
        np.cumsum(np.bincount(cell_id, minlength=len(starts) - 1), out=starts[1:])

        first = np.clip(np.floor((low - origin) / size).astype(np.int64) + 1, 1, cells)
        last = np.clip(np.floor((high - origin) / size).astype(np.int64) + 1, 1, cells)
        rows_per_box = last[:, 0] - first[:, 0] + 1
        self.run_box = np.repeat(np.arange(len(low)), rows_per_box)
        row_x = first[self.run_box, 0] + _ramp(rows_per_box)
        strip_low = origin[0] + (row_x - 1) * size - pad[self.run_box]
        strip_high = origin[0] + row_x * size + pad[self.run_box]
        y_low, y_high = _footprint_y_range(
            centers[:, :2], rotations[:, :2, :], half, self.run_box, strip_low, strip_high
        )
        hit = y_low <= y_high  # a padded AABB column can miss the footprint: empty run
        y_low, y_high = np.where(hit, y_low, origin[1]), np.where(hit, y_high, origin[1])
        y_first = np.floor((y_low - pad[self.run_box] - origin[1]) / size).astype(np.int64) + 1
        y_last = np.floor((y_high + pad[self.run_box] - origin[1]) / size).astype(np.int64) + 1
        y_first = np.clip(y_first, first[self.run_box, 1], last[self.run_box, 1])
        y_last = np.where(hit, np.clip(y_last, y_first, last[self.run_box, 1]), y_first - 1)
        self.run_start = starts[row_x * stride + y_first]
        self.run_length = starts[row_x * stride + y_last + 1] - self.run_start
        self.box_count = len(low)

    @staticmethod
    def _cell_coordinate(values: np.ndarray, origin: float, size: float, cells: int) -> np.ndarray:
        """1-based cell index along one axis (float64 arithmetic), clipped to the border cells."""
        scaled = np.subtract(values, origin, dtype=np.float64)
        scaled *= 1.0 / size
        scaled += 1.0
        with np.errstate(invalid="ignore"):
            index = scaled.astype(np.int32)  # truncation: everything left of the grid -> <= 0
        return np.clip(index, 0, cells + 1, out=index)

    def candidate_groups(self, chunk: int):
        """Yield ``(first_box, point_ids, pairs_per_box)`` for consecutive groups of boxes.

        ``point_ids`` are the candidate points of boxes ``first_box, first_box + 1, ...``,
        concatenated in box order (``pairs_per_box`` each); a group holds about ``chunk``
        pairs, plus at most one box's worth.
        """
        per_box = np.bincount(self.run_box, weights=self.run_length, minlength=self.box_count)
        before = np.cumsum(per_box) - per_box
        group_of_box = (before // chunk).astype(np.int64)
        box_bounds = np.flatnonzero(np.diff(group_of_box, prepend=-1, append=group_of_box[-1] + 1))
        run_bounds = np.searchsorted(self.run_box, box_bounds)
        for first_box, end_box, begin, end in zip(
            box_bounds[:-1], box_bounds[1:], run_bounds[:-1], run_bounds[1:]
        ):
            lengths = self.run_length[begin:end]
            point_ids = self.order[np.repeat(self.run_start[begin:end], lengths) + _ramp(lengths)]
            yield first_box, point_ids, per_box[first_box:end_box].astype(np.int64)


# The 12 edges of a box as pairs of corner numbers; corner bit k set = +half along axis k.
_EDGES = np.array([(c, c | 1 << k) for k in range(3) for c in range(8) if not c >> k & 1])
_CORNER_SIGNS = np.array([[1.0 if c >> k & 1 else -1.0 for k in range(3)] for c in range(8)])


def _footprint_y_range(
    centers_xy: np.ndarray,
    rotations_xy: np.ndarray,
    half: np.ndarray,
    run_box: np.ndarray,
    strip_low: np.ndarray,
    strip_high: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """y extent of each box's xy projection within the strip ``strip_low <= x <= strip_high``.

    The projection is the convex hull of the 8 projected corners, whose edges are among the
    12 projected box edges; so the extent is the min/max of y over all edges clipped to the
    strip. Empty strips give ``(+inf, -inf)``.
    """
    corners = centers_xy[:, None, :] + np.einsum("mij,cj,mj->mci", rotations_xy, _CORNER_SIGNS, half)
    start = corners[run_box][:, _EDGES[:, 0]]  # (R, 12, 2)
    delta = corners[run_box][:, _EDGES[:, 1]] - start
    low, high = strip_low[:, None], strip_high[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_a = (low - start[..., 0]) / delta[..., 0]
        t_b = (high - start[..., 0]) / delta[..., 0]
    vertical = delta[..., 0] == 0
    inside_strip = (low <= start[..., 0]) & (start[..., 0] <= high)
    t_min = np.where(vertical, np.where(inside_strip, 0.0, 1.0), np.maximum(np.minimum(t_a, t_b), 0.0))
    t_max = np.where(vertical, np.where(inside_strip, 1.0, 0.0), np.minimum(np.maximum(t_a, t_b), 1.0))
    hit = t_min <= t_max
    y_one = start[..., 1] + t_min * delta[..., 1]
    y_two = start[..., 1] + t_max * delta[..., 1]
    y_low = np.where(hit, np.minimum(y_one, y_two), np.inf).min(axis=1)
    y_high = np.where(hit, np.maximum(y_one, y_two), -np.inf).max(axis=1)
    return y_low, y_high


def _ramp(lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(n) for n in lengths])`` without a Python loop."""
    run_starts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(run_starts, lengths)


def points_in_boxes_torch(
    points: torch.Tensor, boxes: Boxes, margin: float = 0.0
) -> list[torch.Tensor]:
    """:func:`points_in_boxes` returning int64 index tensors on ``points.device``.

    CPU tensors use the grid path; on an accelerator the test runs there in float64,
    chunked over boxes so that at most ~2 M point-box pairs are live at once.
    """
    import torch

    if points.device.type == "cpu":
        return [torch.from_numpy(idx) for idx in points_in_boxes(points, boxes, margin)]
    return _points_in_boxes_dense_torch(points, boxes, margin)


def _points_in_boxes_dense_torch(
    points: torch.Tensor, boxes: Boxes, margin: float
) -> list[torch.Tensor]:
    """Every point against every box on ``points.device``, in chunks of boxes (float64)."""
    import torch

    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points: expected shape (N, >=3), got {tuple(points.shape)}")
    device = points.device
    result = [torch.zeros(0, dtype=torch.int64, device=device) for _ in range(len(boxes))]
    active, rotations, half = _box_frame(boxes, margin)
    if len(active) == 0 or len(points) == 0:
        return result
    xyz = points.detach()[:, :3].to(torch.float64)
    centers_t = torch.from_numpy(boxes.centers[active]).to(device)
    rotations_t = torch.from_numpy(np.ascontiguousarray(rotations)).to(device)
    half_t = torch.from_numpy(half).to(device)
    step = max(1, _DENSE_CHUNK_ELEMENTS // len(xyz))
    for start in range(0, len(active), step):
        stop = start + step
        offsets = xyz[None, :, :] - centers_t[start:stop, None, :]  # (B, N, 3)
        local = torch.bmm(offsets, rotations_t[start:stop])
        inside = (local.abs() <= half_t[start:stop, None, :]).all(dim=2)
        for row, mask in enumerate(inside):
            result[int(active[start + row])] = torch.nonzero(mask).flatten()
    return result
