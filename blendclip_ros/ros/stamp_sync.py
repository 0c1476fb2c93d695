"""Pair clouds with detection arrays by header stamp (a message_filters stand-in).

Exact matching by default, approximate with a slop. Buffers are bounded; messages that
can no longer be paired are dropped and counted, never accumulated. Only the newest
pair is kept for processing (see :class:`LatestSlot`), so latency never builds a backlog.
Pure Python: no rclpy needed, stamps are integer nanoseconds.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
C = TypeVar("C")
D = TypeVar("D")


@dataclass(frozen=True)
class Stamped(Generic[T]):
    """A message with its header stamp (ns) and the monotonic time it arrived (ns)."""

    stamp_ns: int
    received_ns: int
    msg: T


class StampSynchronizer(Generic[C, D]):
    """Matches each detection array with the cloud of the same (or nearest within slop) stamp.

    ``add_cloud``/``add_detections`` return the matched ``(cloud, detections)`` pair or
    None. Unmatched messages older than a match, or pushed out of a full buffer, are
    counted in :attr:`dropped` under ``"cloud_unmatched"``/``"detections_unmatched"``.
    Thread-safe.
    """

    def __init__(self, slop_s: float = 0.0, queue_size: int = 10) -> None:
        if slop_s < 0:
            raise ValueError(f"slop: must be >= 0 s, got {slop_s}")
        if queue_size < 1:
            raise ValueError(f"queue_size: must be >= 1, got {queue_size}")
        self.slop_ns = int(round(slop_s * 1e9))
        self.queue_size = queue_size
        self._clouds: deque[Stamped[C]] = deque()
        self._detections: deque[Stamped[D]] = deque()
        self.dropped: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add_cloud(self, item: Stamped[C]) -> tuple[Stamped[C], Stamped[D]] | None:
        with self._lock:
            return self._add(item, self._clouds, self._detections, "cloud")

    def add_detections(self, item: Stamped[D]) -> tuple[Stamped[C], Stamped[D]] | None:
        with self._lock:
            pair = self._add(item, self._detections, self._clouds, "detections")
            return None if pair is None else (pair[1], pair[0])

    def _add(self, item: Stamped, own: deque, other: deque, kind: str) -> tuple[Stamped, Stamped] | None:
        match = self._nearest(item.stamp_ns, other)
        if match is None:
            own.append(item)
            while len(own) > self.queue_size:
                own.popleft()
                self.dropped[f"{kind}_unmatched"] += 1
            return None
        other_kind = "detections" if kind == "cloud" else "cloud"
        # Everything in the other queue up to the match can never pair with a newer message.
        while other:
            candidate = other.popleft()
            if candidate is match:
                break
            self.dropped[f"{other_kind}_unmatched"] += 1
        # Own messages older than the matched stamp are stale too.
        while own and own[0].stamp_ns < match.stamp_ns - self.slop_ns:
            own.popleft()
            self.dropped[f"{kind}_unmatched"] += 1
        return item, match

    def _nearest(self, stamp_ns: int, queue: deque[Stamped]) -> Stamped | None:
        best, best_gap = None, None
        for candidate in queue:
            gap = abs(candidate.stamp_ns - stamp_ns)
            if gap <= self.slop_ns and (best_gap is None or gap < best_gap):
                best, best_gap = candidate, gap
        return best

    def clear(self) -> None:
        """Forget buffered messages (counted as dropped)."""
        with self._lock:
            self.dropped["cloud_unmatched"] += len(self._clouds)
            self.dropped["detections_unmatched"] += len(self._detections)
            self._clouds.clear()
            self._detections.clear()


class LatestSlot(Generic[T]):
    """A one-element mailbox: ``put`` replaces an unconsumed item (returned, to be counted)."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._cond = threading.Condition()

    def put(self, item: T) -> T | None:
        with self._cond:
            replaced, self._item = self._item, item
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """Wait up to ``timeout`` seconds for an item and remove it."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def wake(self) -> None:
        """Wake a waiting ``take`` (e.g. on shutdown)."""
        with self._cond:
            self._cond.notify_all()
