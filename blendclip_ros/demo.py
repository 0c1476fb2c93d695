"""The main job on the embedded default: the bundled bag through the classifier node.

Starts the classifier node and the bag replay as separate processes on loopback DDS,
collects the labelled detections, and prints per-frame results, latency and agreement
with the bag's ground-truth classes. No downloads, CPU only.

    python -m blendclip_ros.demo [--bag data/demo/...] [--prompts config/prompts/nuscenes.yaml]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from .environment import apply_ros_environment, ros_environment

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BAG = REPO / "data" / "demo"
DEFAULT_CHECKPOINT = REPO / "data" / "checkpoints" / "blendclip_tiny_sim.safetensors"
DEFAULT_PROMPTS = REPO / "data" / "checkpoints" / "sim_classes.yaml"
NODE = "blendclip_demo_classifier"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="blendclip-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bag", type=Path, default=DEFAULT_BAG, help="rosbag2 folder (default: %(default)s)")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                        help="checkpoint file ('' for an untrained encoder; default: the bundled tiny model "
                             "trained on simulated data, %(default)s)")
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS),
                        help="prompt-set YAML (default: the 13 simulated classes, %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--cloud-topic", default="/lidar/points")
    parser.add_argument("--detections-topic", default="/detections")
    parser.add_argument("--rate", type=float, default=1.0, help="replay rate factor")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not (args.bag / "metadata.yaml").is_file():
        print(f"blendclip-demo: no rosbag2 at {args.bag}", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))
    apply_ros_environment()
    import rclpy  # noqa: PLC0415 - after the environment is set
    from rclpy.qos import qos_profile_sensor_data  # noqa: PLC0415
    from sensor_msgs.msg import PointCloud2  # noqa: PLC0415
    from vision_msgs.msg import Detection3DArray  # noqa: PLC0415

    env = ros_environment()
    node_cmd = [sys.executable, "-m", "blendclip_ros.ros.classifier_node", "--ros-args",
                "--params-file", str(REPO / "config" / "classify.yaml"), "-r", f"__node:={NODE}",
                "-r", f"points:={args.cloud_topic}", "-r", f"detections:={args.detections_topic}",
                "-p", f"model.device:={args.device}"]
    if args.checkpoint:
        node_cmd += ["-p", f"model.checkpoint:={args.checkpoint}"]
    if args.prompts:
        node_cmd += ["-p", f"prompts.file:={args.prompts}"]
    node = subprocess.Popen(node_cmd, env=env)
    rclpy.init()
    listener = rclpy.create_node("blendclip_demo_listener")
    outputs: list[Detection3DArray] = []
    inputs: dict[tuple[int, int], Detection3DArray] = {}
    cloud_sizes: dict[tuple[int, int], int] = {}
    listener.create_subscription(Detection3DArray, f"/{NODE}/detections", outputs.append, 50)
    listener.create_subscription(Detection3DArray, args.detections_topic,
                                 lambda m: inputs.setdefault((m.header.stamp.sec, m.header.stamp.nanosec), m), 50)
    listener.create_subscription(  # also makes the replay wait for this listener (2 subscribers per topic)
        PointCloud2, args.cloud_topic,
        lambda m: cloud_sizes.setdefault((m.header.stamp.sec, m.header.stamp.nanosec), m.width * m.height),
        qos_profile_sensor_data)
    replay = None
    try:
        deadline = time.monotonic() + 120
        while listener.count_publishers(f"/{NODE}/detections") == 0 and node.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the classifier node did not come up within 120 s")
            rclpy.spin_once(listener, timeout_sec=0.1)
        if node.poll() is not None:
            return 1
        print(f"classifier node up; replaying {args.bag}", flush=True)
        replay = subprocess.Popen([sys.executable, "-m", "blendclip_ros.ros.replay", str(args.bag),
                                   "--rate", str(args.rate), "--wait-for-subscribers", "2",
                                   "--start-delay", "1.0"], env=env)
        while replay.poll() is None:
            rclpy.spin_once(listener, timeout_sec=0.05)
        settle = time.monotonic() + 3.0
        while time.monotonic() < settle:
            rclpy.spin_once(listener, timeout_sec=0.05)
        _report(outputs, inputs, cloud_sizes)
        return 0 if outputs else 1
    finally:
        for process in (replay, node):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=20)
        listener.destroy_node()
        rclpy.try_shutdown()


def _report(outputs: list, inputs: dict, cloud_sizes: dict) -> None:
    """Per-frame label counts and agreement with the input (ground-truth) classes."""
    agree = total = 0
    for out in outputs:
        labels = Counter(d.results[0].hypothesis.class_id if d.results else "none" for d in out.detections)
        key = (out.header.stamp.sec, out.header.stamp.nanosec)
        truth = inputs.get(key)
        if truth is not None:
            for det, gt in zip(out.detections, truth.detections):
                if det.results and gt.results and det.results[0].hypothesis.class_id != "unknown":
                    total += 1
                    agree += det.results[0].hypothesis.class_id == gt.results[0].hypothesis.class_id
        stamp = out.header.stamp.sec + out.header.stamp.nanosec * 1e-9
        print(f"frame {stamp:.2f}: {cloud_sizes.get(key, 0)} points, {len(out.detections)} boxes -> " +
              ", ".join(f"{label} {n}" for label, n in labels.most_common()))
    print(f"{len(outputs)} labelled frames; top-1 agrees with the bag's ground truth on {agree}/{total} "
          "encoded boxes" + (f" ({100.0 * agree / total:.1f} %)" if total else ""))


if __name__ == "__main__":
    sys.exit(main())
