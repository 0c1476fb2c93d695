"""Soak: the classifier node under a 4x replay of the real sweep for minutes; is memory flat?

A bag of the real nuScenes sweep (10 Hz) is looped by ``blendclip-replay --rate 4 --restamp``
(40 Hz in, more than the node can classify) into a node process for ``--duration`` seconds.
The node's resident memory (VmRSS from /proc) is sampled every ``--sample`` seconds; a
receiver process records every output. Printed: RSS at start (first output, model warm),
end and peak, and its growth; outputs, drops by reason; end-to-end latency (receive - stamp)
and throughput per time window. Target: flat memory, i.e. RSS growth after the first
window below 5 % (and no latency trend).

    source scripts/env.sh && python benchmarks/soak_node.py [--duration 600] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blendclip_ros.ros.bag_from_nuscenes import main as bag_from_nuscenes  # noqa: E402
from test.ros_peers.load_session import (  # noqa: E402
    Peer,
    node_command,
    peer_environment,
    replay_command,
    rss_kib,
    start_receiver,
    stop_receiver,
)

NUSCENES_INFO = REPO.parent / "shared/data/mmdet3d/demo/data/nuscenes/n015-2018-07-24-11-22-45+0800.pkl"
NODE = "blendclip_soak"
TOPICS = ("/soak/points", "/soak/detections")
TARGET_GROWTH = 0.05


def sample_rss(node: Peer, duration: float, period: float) -> list[tuple[float, int]]:
    """(seconds since start, VmRSS KiB) every ``period`` s for ``duration`` s; stops early if the node dies."""
    samples, start = [], time.monotonic()
    with tqdm(total=round(duration), desc="soak", unit="s") as bar:
        while (elapsed := time.monotonic() - start) < duration and node.alive:
            samples.append((elapsed, rss_kib(node.pid)))
            time.sleep(min(period, max(0.0, duration - elapsed)))
            bar.update(round(time.monotonic() - start) - bar.n)
    samples.append((time.monotonic() - start, rss_kib(node.pid)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of replay (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="20 s (CI smoke)")
    parser.add_argument("--rate", type=float, default=4.0, help="replay rate factor (default: %(default)s)")
    parser.add_argument("--encoder", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--sample", type=float, default=None, help="RSS sampling period, s (default: duration/60)")
    parser.add_argument("--windows", type=int, default=10, help="time windows in the latency table")
    parser.add_argument("--torch-threads", type=int, default=None, help="OMP_NUM_THREADS for the node")
    parser.add_argument("--domain-id", type=int, default=None)
    args = parser.parse_args()
    if args.quick:
        args.duration, args.windows = 20.0, 4
    if not NUSCENES_INFO.is_file():
        raise SystemExit(f"real sweep not found at {NUSCENES_INFO}")
    period = args.sample or max(args.duration / 60, 1.0)
    env = peer_environment(args.domain_id)
    if args.torch_threads:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    print(f"CPU, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}; {args.encoder} encoder, "
          f"replay at {args.rate:g}x of 10 Hz for {args.duration:g} s")
    with tempfile.TemporaryDirectory() as tmp:
        bag, out = Path(tmp) / "sweep", Path(tmp) / "outputs.json"
        if bag_from_nuscenes([str(bag), "--mmdet3d-info", str(NUSCENES_INFO), "--repeat", "20", "--period", "0.1",
                              "--quiet"]) != 0:
            raise SystemExit("could not write the bag")
        node = Peer(node_command(NODE, "-p", f"model.encoder:={args.encoder}", "-r", f"points:={TOPICS[0]}",
                                 "-r", f"detections:={TOPICS[1]}"), env)
        replay = None
        try:
            receiver = start_receiver(env, out, NODE, timeout=180)
            rss_idle = rss_kib(node.pid)
            replay = Peer(replay_command(bag, args.rate, *TOPICS), env)
            samples = sample_rss(node, args.duration, period)
            replay_log = replay.stop()
            time.sleep(2.0)
            recording = stop_receiver(receiver, out)
        finally:
            if replay is not None:
                replay.stop()
            node_log = node.stop()
    if not len(recording.outputs):
        raise SystemExit(f"no outputs; node log:\n{node_log[-3000:]}\nreplay log:\n{replay_log[-2000:]}")
    report(args, rss_idle, samples, recording, replay_log)


def report(args, rss_idle: int, samples: list[tuple[float, int]], recording, replay_log: str) -> None:
    times = np.array([t for t, _ in samples])
    rss = np.array([r for _, r in samples]) / 1024
    warm = rss[times >= min(times[-1], args.duration / args.windows)][0]  # RSS once the first window is over
    growth = (rss[-1] - warm) / warm
    last = recording.last
    counts = {k: int(v) for k, v in last.items() if k.startswith(("received_", "dropped_", "published"))}
    print(f"\nreplay: {replay_log.strip().splitlines()[-1] if replay_log.strip() else '(no summary)'}")
    print(f"node RSS: idle (configured) {rss_idle / 1024:.0f} MiB, first sample {rss[0]:.0f} MiB, after the first "
          f"window {warm:.0f} MiB, end {rss[-1]:.0f} MiB, peak {rss.max():.0f} MiB; growth after warm-up "
          f"{rss[-1] - warm:+.1f} MiB ({growth:+.1%}; target < {TARGET_GROWTH:.0%}: "
          f"{'met' if growth < TARGET_GROWTH else 'NOT met'})")
    print(f"outputs received: {len(recording.outputs)}; node counters: {counts}")
    received = counts.get("received_detections", 0)
    if received:
        print(f"published {counts.get('published', 0) / received:.0%} of received pairs, superseded "
              f"{counts.get('dropped_superseded_pairs', 0) / received:.0%}")
    elapsed = recording.received_s - recording.received_s[0]
    latency = recording.latency_ms
    edges = np.linspace(0, elapsed[-1] + 1e-9, args.windows + 1)
    print(f"\n{'window s':>13} {'outputs':>8} {'out/s':>6} {'e2e p50':>8} {'e2e p99':>8} {'RSS MiB':>8}")
    for lo, hi in itertools.pairwise(edges):
        inside = (elapsed >= lo) & (elapsed < hi)
        in_rss = rss[(times >= lo) & (times < hi)]
        if inside.any():
            print(f"{lo:6.0f}-{hi:6.0f} {inside.sum():8d} {inside.sum() / (hi - lo):6.1f} "
                  f"{np.median(latency[inside]):8.1f} {np.percentile(latency[inside], 99):8.1f} "
                  f"{in_rss.max() if in_rss.size else float('nan'):8.0f}")
    slope = np.polyfit(elapsed, latency, 1)[0] if len(latency) > 2 else float("nan")
    print(f"latency trend {slope:+.2f} ms per s of run; node's own p50/p99 at the end "
          f"{last.get('latency_p50_ms', float('nan')):.1f}/{last.get('latency_p99_ms', float('nan')):.1f} ms")


if __name__ == "__main__":
    main()
