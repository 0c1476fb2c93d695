"""Multi-sweep accumulation: past clouds moved into the current cloud's frame through a fixed frame.

ROS-free (numpy only), so the node, the benchmarks and the tests share it:

* :class:`PoseHistory` holds time-stamped poses of the cloud frame in the fixed frame (from
  ``nav_msgs/Odometry``) and interpolates them at a stamp (linear translation, slerp rotation);
* :class:`SweepRing` keeps the last N sweeps (bounded memory) and merges them, transformed
  with one 4x4 matrix product per sweep, into the newest one's frame;
* :class:`BoxTracks` estimates box velocities from stable detection ids across frames;
  with them, the points of a moving box in a past sweep are moved along by ``v * lag``
  (constant velocity, as the BlendCLIP mining does), so moving objects gain points instead
  of smearing a trail behind them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from ..errors import BlendClipError, ConfigError
from ..geometry.boxes import Boxes
from ..geometry.crop import points_in_boxes

NS = 1_000_000_000
#: Boxes slower than this (m/s) are treated as static (no compensation).
MIN_SPEED = 0.2


class PoseError(BlendClipError):
    """No pose of the cloud frame in the fixed frame at a stamp."""


def pose_matrix(translation: Sequence[float], quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """4x4 homogeneous transform from a translation and an x, y, z, w quaternion."""
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_quat(quaternion_xyzw).as_matrix()
    matrix[:3, 3] = translation
    return matrix


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform."""
    out = np.eye(4)
    out[:3, :3] = matrix[:3, :3].T
    out[:3, 3] = -matrix[:3, :3].T @ matrix[:3, 3]
    return out


class PoseHistory:
    """Poses ``fixed <- frame`` at stamps (a ring of ``capacity``), interpolated at any covered stamp.

    A stamp outside the covered span is accepted within ``tolerance_ns`` of its nearest pose.
    Thread-safe: poses arrive on one thread and are read on another.
    """

    def __init__(self, capacity: int = 400, tolerance_ns: int = NS // 20) -> None:
        self.capacity = int(capacity)
        self.tolerance_ns = int(tolerance_ns)
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._stamps = np.empty(0, dtype=np.int64)
            self._translations = np.empty((0, 3))
            self._quaternions = np.empty((0, 4))

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp_ns: int, translation: Sequence[float], quaternion_xyzw: Sequence[float]) -> None:
        """Insert a pose (out-of-order stamps are placed in order; a repeated stamp replaces)."""
        quaternion = np.asarray(quaternion_xyzw, dtype=float)
        norm = float(np.linalg.norm(quaternion))
        if not np.isfinite(norm) or norm < 1e-6 or not np.isfinite(translation).all():
            raise PoseError(f"pose at {stamp_ns} ns: not a finite translation and non-zero quaternion")
        with self._lock:
            index = int(np.searchsorted(self._stamps, stamp_ns))
            if index < len(self._stamps) and self._stamps[index] == stamp_ns:
                self._translations[index], self._quaternions[index] = translation, quaternion / norm
                return
            self._stamps = np.insert(self._stamps, index, stamp_ns)[-self.capacity:]
            self._translations = np.insert(self._translations, index, translation, axis=0)[-self.capacity:]
            self._quaternions = np.insert(self._quaternions, index, quaternion / norm, axis=0)[-self.capacity:]

    def at(self, stamp_ns: int) -> np.ndarray:
        """4x4 ``fixed <- frame`` at ``stamp_ns``; PoseError when the history does not cover it."""
        with self._lock:
            stamps, translations, quaternions = self._stamps, self._translations, self._quaternions
        if not len(stamps):
            raise PoseError("no pose received yet")
        index = int(np.searchsorted(stamps, stamp_ns))
        if index < len(stamps) and stamps[index] == stamp_ns:
            return pose_matrix(translations[index], quaternions[index])
        if index == 0 or index == len(stamps):
            nearest = 0 if index == 0 else len(stamps) - 1
            gap = abs(int(stamps[nearest]) - int(stamp_ns))
            if gap > self.tolerance_ns:
                raise PoseError(f"no pose within {self.tolerance_ns / 1e6:.0f} ms of stamp {stamp_ns} ns "
                                f"(poses cover {stamps[0]}..{stamps[-1]} ns)")
            return pose_matrix(translations[nearest], quaternions[nearest])
        before, after = index - 1, index
        share = (stamp_ns - stamps[before]) / (stamps[after] - stamps[before])
        translation = (1 - share) * translations[before] + share * translations[after]
        rotation = Slerp([0.0, 1.0], Rotation.from_quat(quaternions[[before, after]]))([share])[0]
        return pose_matrix(translation, rotation.as_quat())


@dataclass
class Sweep:
    """One stored cloud: its stamp and its xyz points in its own frame."""

    stamp_ns: int
    points: np.ndarray  # (N, 3) float32, the cloud's own frame


class SweepRing:
    """The last ``sweeps`` clouds (bounded memory); :meth:`merged` joins them in the newest frame.

    ``pose_at(stamp_ns)`` gives ``fixed <- cloud frame`` at a stamp (odometry or tf2) and may
    raise :class:`PoseError`; sweeps whose pose is missing are left out and counted.
    """

    def __init__(self, sweeps: int, pose_at: Callable[[int], np.ndarray]) -> None:
        if int(sweeps) < 1:
            raise ConfigError(f"accumulate.sweeps: must be at least 1, got {sweeps!r}")
        self.sweeps = int(sweeps)
        self.pose_at = pose_at
        self._ring: deque[Sweep] = deque(maxlen=self.sweeps)

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, stamp_ns: int, points: np.ndarray) -> None:
        """Store a cloud (xyz, then any extra columns such as intensity); an older stamp than the
        newest (a replay restarted) empties the ring."""
        if self._ring and stamp_ns <= self._ring[-1].stamp_ns:
            if stamp_ns == self._ring[-1].stamp_ns:
                return
            self._ring.clear()
        self._ring.append(Sweep(int(stamp_ns), np.ascontiguousarray(points, dtype=np.float32)))

    def merged(self, stamp_ns: int, points: np.ndarray, boxes: Boxes | None = None,
               velocities: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """The current cloud plus the stored sweeps older than ``stamp_ns``, all in its frame.

        ``velocities`` (M, 3) in the current frame (m/s), one per box of ``boxes``: points of
        the past sweeps that lay in box m at its past position (centre - v * lag) are moved by
        ``v * lag``. Only xyz move; extra columns (intensity) are kept. Returns the ``(N, D)``
        float32 cloud and the number of past sweeps that had no pose (left out).
        """
        current = np.ascontiguousarray(points, dtype=np.float32)
        past = [s for s in self._ring if s.stamp_ns < stamp_ns][-(self.sweeps - 1):] if self.sweeps > 1 else []
        if not past:
            return current, 0
        try:
            cloud_from_fixed = invert(self.pose_at(stamp_ns))
        except PoseError:
            return current, len(past)
        moving = None
        if boxes is not None and velocities is not None and len(boxes):
            fast = np.linalg.norm(velocities, axis=1) >= MIN_SPEED
            if fast.any():
                moving = (boxes.subset(np.flatnonzero(fast)), velocities[fast])
        chunks, missing = [current], 0
        for sweep in past:
            try:
                transform = cloud_from_fixed @ self.pose_at(sweep.stamp_ns)
            except PoseError:
                missing += 1
                continue
            moved = sweep.points.copy()
            moved[:, :3] = sweep.points[:, :3] @ transform[:3, :3].T.astype(np.float32) \
                + transform[:3, 3].astype(np.float32)
            if moving is not None:
                _follow_boxes(moved, *moving, (stamp_ns - sweep.stamp_ns) / NS)
            chunks.append(moved)
        return np.concatenate(chunks), missing


def _follow_boxes(points: np.ndarray, boxes: Boxes, velocities: np.ndarray, lag_s: float) -> None:
    """Move (in place) the points inside each box's past position by the box's ``v * lag``."""
    shift = velocities * lag_s
    past = Boxes(boxes.centers - shift, boxes.sizes, boxes.quaternions)
    inside = points_in_boxes(points[:, :3], past)
    counts = np.array([len(i) for i in inside])
    if counts.sum():
        rows, first = np.unique(np.concatenate(inside), return_index=True)  # a point in two boxes moves once
        points[rows, :3] += np.repeat(shift, counts, axis=0)[first].astype(np.float32)


class BoxTracks:
    """Box velocities from stable detection ids: centre displacement in the fixed frame over time.

    vision_msgs has no velocity field; a tracker's stable ``Detection3D.id`` gives one. Ids not
    seen for ``max_age_s`` are forgotten (bounded memory); empty ids get no velocity.
    """

    def __init__(self, max_age_s: float = 1.0) -> None:
        self.max_age_ns = int(max_age_s * NS)
        self._last: dict[str, tuple[int, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._last)

    def velocities(self, stamp_ns: int, ids: Sequence[str], centers: np.ndarray,
                   fixed_from_cloud: np.ndarray) -> np.ndarray:
        """``(M, 3)`` velocities in the cloud frame (zeros for new or id-less boxes); records the boxes."""
        fixed = centers @ fixed_from_cloud[:3, :3].T + fixed_from_cloud[:3, 3]
        out = np.zeros((len(ids), 3))
        for row, box_id in enumerate(ids):
            seen = self._last.get(box_id) if box_id else None
            if seen is not None and 0 < stamp_ns - seen[0] <= self.max_age_ns:
                out[row] = (fixed[row] - seen[1]) / ((stamp_ns - seen[0]) / NS)
            if box_id:
                self._last[box_id] = (stamp_ns, fixed[row])
        self._last = {k: v for k, v in self._last.items() if 0 <= stamp_ns - v[0] <= self.max_age_ns}
        return out @ fixed_from_cloud[:3, :3]  # rotate fixed-frame velocities into the cloud frame
