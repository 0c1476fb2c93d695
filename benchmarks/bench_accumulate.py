"""Multi-sweep accumulation on a simulated bag: points per box, top-1 with 1 vs N sweeps, latency cost.

A street scene is simulated at 20 Hz (the nuScenes LiDAR rate) and written as a new bag with the
ego poses (``/odom``, ``/tf``; blendclip_sim.bag_export ``poses=True``). The bag is read back
and each frame with a full history is classified by the shipped tiny checkpoint against the 13
simulated classes, through the node's own accumulation code (PoseHistory from the bag's
odometry, SweepRing, BoxTracks from the detection ids):
  1 sweep        the current cloud only (the baseline)
  N static       N sweeps, ego motion compensated only (moving objects smear)
  N tracked      N sweeps, and the points of moving boxes moved along by their tracked velocity
Reported per mode: points per box (median, mean), top-1 accuracy against the simulated ground
truth, top-1 agreement with the 1-sweep labels, and ms per frame (merge + crop + encode + rank).

    source scripts/env.sh && python benchmarks/bench_accumulate.py [--quick] [--sweeps 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from blendclip_ros.bags.reader import decode, read_bag
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.pipeline import ObjectClassifier
from blendclip_ros.ros.accumulate import BoxTracks, PoseHistory, SweepRing
from blendclip_ros.ros.conversions import pointcloud2_to_array
from blendclip_sim.bag_export import CLOUD_TOPIC, DETECTIONS_TOPIC, ODOM_TOPIC, write_frames_bag
from blendclip_sim.scene import generate_scene, simulate

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "data" / "checkpoints" / "blendclip_tiny_sim.safetensors"
PROMPTS = REPO / "data" / "checkpoints" / "sim_classes.yaml"
RATE_HZ = 20.0
MIN_POINTS = 5  # config/classify.yaml's classify.min_points


def stamp(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def simulated_bag(folder: Path, seed: int, duration: float) -> Path:
    scene = generate_scene(seed, duration=duration, name=f"accumulate-{seed}")
    return write_frames_bag(simulate(scene, RATE_HZ, progress=True), folder / "bag", poses=True)


def detections(msg) -> tuple[Boxes, list[str], list[str]]:
    rows = [(d.bbox.center.position, d.bbox.center.orientation, d.bbox.size) for d in msg.detections]
    centers = np.array([[p.x, p.y, p.z] for p, _, _ in rows]).reshape(-1, 3)
    quats = np.array([[q.x, q.y, q.z, q.w] for _, q, _ in rows]).reshape(-1, 4)
    sizes = np.array([[s.x, s.y, s.z] for _, _, s in rows]).reshape(-1, 3)
    return (Boxes.from_quaternions(centers, sizes, quats), [d.id for d in msg.detections],
            [d.results[0].hypothesis.class_id for d in msg.detections])


def measure(bag: Path, sweeps: int, threads: int) -> dict[str, dict[str, list]]:
    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = ObjectClassifier.from_config(CHECKPOINT, prompts=PROMPTS, min_points=MIN_POINTS)
    poses = PoseHistory()
    ring = SweepRing(sweeps, poses.at)
    tracks = BoxTracks()
    clouds: dict[int, np.ndarray] = {}
    results: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    messages = [(m, decode(m)) for m in read_bag(bag, [CLOUD_TOPIC, DETECTIONS_TOPIC, ODOM_TOPIC])]
    frames = 0
    for raw, msg in tqdm(messages, desc="frames", unit="msg", leave=False):
        if raw.topic == ODOM_TOPIC:
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            poses.add(stamp(msg.header), (p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
        elif raw.topic == CLOUD_TOPIC:
            clouds[stamp(msg.header)] = pointcloud2_to_array(msg)
            ring.add(stamp(msg.header), clouds[stamp(msg.header)])
        else:
            now = stamp(msg.header)
            boxes, ids, truth = detections(msg)
            velocities = tracks.velocities(now, ids, boxes.centers, poses.at(now))
            frames += 1
            if frames < sweeps or not len(boxes):  # measure frames with a full history only
                continue
            points = clouds.pop(now)
            for mode, merge in (("1 sweep", lambda: points),  # noqa: B023 - each is called in this iteration
                                (f"{sweeps} static", lambda: ring.merged(now, points)[0]),  # noqa: B023
                                (f"{sweeps} tracked", lambda: ring.merged(now, points, boxes, velocities)[0])):  # noqa: B023
                start = time.perf_counter()
                out = classifier.classify(merge(), boxes)
                results[mode]["ms"].append((time.perf_counter() - start) * 1e3)
                results[mode]["points"] += [r.num_points for r in out]
                results[mode]["label"] += [r.prediction.label for r in out]
                results[mode]["truth"] += truth
                results[mode]["moving"] += list(np.linalg.norm(velocities, axis=1) >= 0.2)
    return results


def report(results: dict[str, dict[str, list]]) -> None:
    base = np.array(results["1 sweep"]["label"])
    truth = np.array(results["1 sweep"]["truth"])
    moving = np.array(results["1 sweep"]["moving"])
    print(f"\n{len(truth)} boxes in {len(results['1 sweep']['ms'])} frames ({moving.sum()} on moving objects); "
          f"min_points {MIN_POINTS}")
    header = (f"{'mode':12} {'pts/box med':>11} {'mean':>7} {'moving mean':>11} {'top-1':>6} "
              f"{'top-1 moving':>12} {'agree w/ 1':>10} {'ms/frame':>9} {'cost':>6}")
    print(header + "\n" + "-" * len(header))
    base_ms = float(np.median(results["1 sweep"]["ms"]))
    for mode, r in results.items():
        points, labels = np.array(r["points"]), np.array(r["label"])
        ms = float(np.median(r["ms"]))
        print(f"{mode:12} {np.median(points):11.0f} {points.mean():7.1f} "
              f"{points[moving].mean() if moving.any() else float('nan'):11.1f} {np.mean(labels == truth):6.1%} "
              f"{np.mean(labels[moving] == truth[moving]) if moving.any() else float('nan'):12.1%} "
              f"{np.mean(labels == base):10.1%} {ms:9.1f} {ms / base_ms:5.2f}x")
    print("(top-1 against the simulated ground truth; 'agree w/ 1' = same label as with 1 sweep; cost = "
          "ms/frame against the 1-sweep baseline, measured in the same run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short scene (CI smoke)")
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of simulated driving")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the node's model.threads)")
    args = parser.parse_args()
    if args.quick:
        args.duration = (args.sweeps + 2) / RATE_HZ
    print(f"CPU, {args.threads} torch threads; load average {os.getloadavg()[0]:.1f} (other processes distort "
          f"timings); scene seed {args.seed}, {args.duration:g} s at {RATE_HZ:g} Hz, {args.sweeps} sweeps")
    with tempfile.TemporaryDirectory() as tmp:
        report(measure(simulated_bag(Path(tmp), args.seed, args.duration), args.sweeps, args.threads))


if __name__ == "__main__":
    main()
