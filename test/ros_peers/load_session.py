"""Drive a classifier node process under load: feeders, a recording receiver, RSS; for tests and benchmarks.

The node, the feeder (``blendclip-replay`` or :mod:`load_publisher`) and the receiver
(:mod:`load_receiver`) are separate processes, so latency is measured across real DDS:
output receive time minus the input's publish stamp, both ``time.time_ns()`` on one host.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PEERS = Path(__file__).resolve().parent
REPO = PEERS.parents[1]


def node_command(name: str, *ros_args: str) -> list[str]:
    """The classifier as its own process with the shipped parameter file plus overrides."""
    return [sys.executable, "-m", "blendclip_ros.ros.classifier_node", "--ros-args",
            "--params-file", str(REPO / "config" / "classify.yaml"), "-r", f"__node:={name}", *ros_args]


def relay_command(name: str, *ros_args: str) -> list[str]:
    """:mod:`load_relay`, the do-nothing stand-in for the node (transport baseline)."""
    return [sys.executable, str(PEERS / "load_relay.py"), "--node", name, "--ros-args", *ros_args]


def peer_environment(domain_id: int | None = None) -> dict[str, str]:
    """Environment for standalone runs (benchmarks): loopback DDS, a domain of this process's own."""
    from blendclip_ros.environment import ros_environment

    env = ros_environment()
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else os.getpid() % 100 + 1)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


class Peer:
    """A process whose output lines are collected by a thread (the last ``keep`` are kept)."""

    def __init__(self, cmd: list[str], env: dict[str, str], keep: int = 2000) -> None:
        self.process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: deque[str] = deque(maxlen=keep)
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, text: str, timeout: float) -> str:
        """The first collected line containing ``text``; TimeoutError (with the output) if none comes."""
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self.alive and not self._reader.is_alive()):
                    raise TimeoutError(f"no {text!r} from {self.process.args[:4]} within {timeout} s:\n"
                                       + "\n".join(list(self.lines)[-30:]))
                self._new.wait(min(remaining, 0.5))

    def stop(self, timeout: float = 30.0) -> str:
        """SIGINT, wait (SIGKILL after ``timeout``), return the collected output."""
        if self.alive:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        self.process.stdout.close()
        return "\n".join(self.lines)


def start_receiver(env: dict[str, str], out: Path, node: str, timeout: float = 60.0) -> Peer:
    """Start :mod:`load_receiver` and wait until it has discovered the node's output."""
    peer = Peer([sys.executable, str(PEERS / "load_receiver.py"), str(out), "--node", node], env)
    peer.wait_for("matched", timeout)
    return peer


def replay_command(bag: Path, rate: float, cloud_topic: str, detections_topic: str) -> list[str]:
    """Loop a bag made by blendclip-bag-from-nuscenes, restamped to the publish time."""
    return [sys.executable, "-m", "blendclip_ros.ros.replay", str(bag), "--rate", str(rate), "--loop", "--restamp",
            "--remap", f"/lidar/points:={cloud_topic}", "--remap", f"/detections:={detections_topic}",
            "--wait-for-subscribers", "1", "--wait-timeout", "60"]


def publisher_command(rate: float, duration: float, cloud_topic: str, detections_topic: str, *,
                      info: Path | None = None, synthetic: tuple[int, int] | None = None) -> list[str]:
    source = ["--info", str(info)] if info is not None else ["--synthetic", *map(str, synthetic)]
    return [sys.executable, str(PEERS / "load_publisher.py"), *source, "--rate", str(rate), "--duration",
            str(duration), "--cloud-topic", cloud_topic, "--detections-topic", detections_topic]


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS from /proc, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"/proc/{pid}/status has no VmRSS")


@dataclass(frozen=True)
class Recording:
    """What :mod:`load_receiver` saw: one row per output and the node's diagnostics over time."""

    outputs: np.ndarray  # (M, 6) int64: received_ns, stamp_ns, detections, labelled, ids_crc32, valid
    diagnostics: list[dict[str, float]]

    @classmethod
    def load(cls, path: Path) -> Recording:
        data = json.loads(Path(path).read_text())
        outputs = np.array(data["outputs"], dtype=np.int64).reshape(-1, len(data["fields"]))
        return cls(outputs, data["diagnostics"])

    @property
    def received_s(self) -> np.ndarray:
        return self.outputs[:, 0] / 1e9

    @property
    def latency_ms(self) -> np.ndarray:
        """Output receive time minus the input's stamp (its publish time)."""
        return (self.outputs[:, 0] - self.outputs[:, 1]) / 1e6

    @property
    def last(self) -> dict[str, float]:
        return self.diagnostics[-1] if self.diagnostics else {}


def stop_receiver(peer: Peer, out: Path) -> Recording:
    log = peer.stop()
    if peer.process.returncode != 0 or not Path(out).is_file():
        raise RuntimeError(f"receiver failed ({peer.process.returncode}): {log}")
    return Recording.load(out)
