"""Counters and timings of the classifier node, turned into a DiagnosticArray."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


class NodeStats:
    """Thread-safe message counts, drop reasons and receive-to-publish latencies."""

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.published = 0
        self._latencies_ms: deque[float] = deque(maxlen=window)
        self._inference_ms: deque[float] = deque(maxlen=window)
        self._last_report = time.monotonic()
        self._last_counts: Counter[str] = Counter()

    def receive(self, kind: str) -> None:
        with self._lock:
            self.received[kind] += 1

    def drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += count

    def publish(self, latency_ms: float, inference_ms: float) -> None:
        with self._lock:
            self.published += 1
            self._latencies_ms.append(latency_ms)
            self._inference_ms.append(inference_ms)

    def snapshot(self) -> dict[str, float]:
        """Totals, rates since the previous snapshot, and latency percentiles (ms)."""
        with self._lock:
            now = time.monotonic()
            elapsed = max(now - self._last_report, 1e-9)
            counts = Counter(self.received)
            counts["published"] = self.published
            rates = {f"rate_{k}_hz": (counts[k] - self._last_counts[k]) / elapsed for k in counts}
            self._last_report, self._last_counts = now, counts
            latencies = np.array(self._latencies_ms) if self._latencies_ms else np.zeros(1)
            inference = np.array(self._inference_ms) if self._inference_ms else np.zeros(1)
            return {
                **{f"received_{k}": v for k, v in self.received.items()},
                "published": self.published,
                **{f"dropped_{k}": v for k, v in self.dropped.items()},
                **rates,
                "latency_p50_ms": float(np.percentile(latencies, 50)),
                "latency_p99_ms": float(np.percentile(latencies, 99)),
                "inference_p50_ms": float(np.percentile(inference, 50)),
            }


def diagnostic_array(stamp, name: str, hardware_id: str, values: dict[str, object], *,
                     level: bytes = DiagnosticStatus.OK, message: str = "ok") -> DiagnosticArray:
    """One DiagnosticStatus with every value as a key/value pair."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v))
                                      for k, v in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array
