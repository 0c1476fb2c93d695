"""The main job on the embedded default: the bundled bag through the classifier node.

Starts the classifier node and the bag replay as separate processes on loopback DDS,
collects the labelled detections, and prints per frame a table of its boxes (id, the bag's
true class, the node's label and score, points in the box) and the agreement with the
bag's ground-truth classes. ``--record PATH`` writes the clouds, the labelled detections and
the node's markers as a rosbag2 MCAP bag (``PATH/PATH.mcap``: Foxglove opens the file,
``ros2 bag`` the folder). No downloads, CPU only.

    python -m blendclip_ros.demo [--bag data/demo/...] [--prompts config/prompts/nuscenes.yaml] [--record out/demo]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    parser.add_argument("--record", type=Path, metavar="PATH",
                        help="write clouds, labelled detections and markers as a rosbag2 MCAP bag to this new folder")
    return parser.parse_args(argv)


@dataclass
class Recording:
    """What the listener received, keyed by header stamp (ns); messages are rclpy objects."""

    outputs: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)
    clouds: dict = field(default_factory=dict)
    markers: list = field(default_factory=list)


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not (args.bag / "metadata.yaml").is_file():
        print(f"blendclip-demo: no rosbag2 at {args.bag}", file=sys.stderr)
        return 2
    if args.record is not None and args.record.exists():
        print(f"blendclip-demo: --record: {args.record} already exists", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))
    apply_ros_environment()
    import rclpy  # noqa: PLC0415 - after the environment is set
    from rclpy.qos import qos_profile_sensor_data  # noqa: PLC0415
    from sensor_msgs.msg import PointCloud2  # noqa: PLC0415
    from vision_msgs.msg import Detection3DArray  # noqa: PLC0415
    from visualization_msgs.msg import MarkerArray  # noqa: PLC0415

    env = ros_environment()
    node_cmd = [sys.executable, "-m", "blendclip_ros.ros.classifier_node", "--ros-args",
                "--params-file", str(REPO / "config" / "classify.yaml"), "-r", f"__node:={NODE}",
                "-r", f"points:={args.cloud_topic}", "-r", f"detections:={args.detections_topic}",
                "-p", f"model.device:={args.device}"]
    if args.checkpoint:
        node_cmd += ["-p", f"model.checkpoint:={args.checkpoint}"]
    if args.prompts:
        node_cmd += ["-p", f"prompts.file:={args.prompts}"]
    if args.record is not None:
        node_cmd += ["-p", "publish_markers:=true"]
    node = subprocess.Popen(node_cmd, env=env)
    rclpy.init()
    listener = rclpy.create_node("blendclip_demo_listener")
    got = Recording()
    listener.create_subscription(Detection3DArray, f"/{NODE}/detections", got.outputs.append, 50)
    if args.record is not None:
        listener.create_subscription(MarkerArray, f"/{NODE}/markers", got.markers.append, 50)
    listener.create_subscription(Detection3DArray, args.detections_topic,
                                 lambda m: got.inputs.setdefault(_stamp_ns(m), m), 50)
    listener.create_subscription(  # also makes the replay wait for this listener (2 subscribers per topic)
        PointCloud2, args.cloud_topic, lambda m: got.clouds.setdefault(_stamp_ns(m), m), qos_profile_sensor_data)
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
        _report(got)
        if args.record is not None:
            _record(args.record, got, args.cloud_topic)
            print(f"recorded {len(got.outputs)} labelled frames to {args.record / (args.record.name + '.mcap')} "
                  f"(rosbag2 folder {args.record})")
        return 0 if got.outputs else 1
    finally:
        for process in (replay, node):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=20)
        listener.destroy_node()
        rclpy.try_shutdown()


def _box_table(output, truth, cloud) -> list[str]:
    """One row per box: id, the bag's true class, the node's top label and score, points in the box."""
    from .geometry.boxes import Boxes  # noqa: PLC0415
    from .geometry.crop import points_in_boxes  # noqa: PLC0415
    from .ros.conversions import detections_to_arrays, pointcloud2_to_array  # noqa: PLC0415

    boxes = detections_to_arrays(output, strict=False)
    counts = np.zeros(len(boxes), dtype=np.int64)
    if cloud is not None and len(boxes):
        crops = points_in_boxes(pointcloud2_to_array(cloud), Boxes(boxes.centers, boxes.sizes, boxes.quaternions))
        counts = np.array([len(c) for c in crops])
    true = [d.results[0].hypothesis.class_id if d.results else "-" for d in truth.detections] if truth else []
    width = max([len("id"), *map(len, boxes.ids)])
    rows = [f"  {'id':<{width}}  {'true class':<21} {'label':<21} {'score':>5} {'points':>6}"]
    for i, det in enumerate(output.detections):
        top = det.results[0].hypothesis if det.results else None
        rows.append(f"  {boxes.ids[i]:<{width}}  {true[i] if i < len(true) else '-':<21} "
                    f"{top.class_id if top else 'none':<21} {top.score if top else 0.0:5.2f} {counts[i]:6d}")
    return rows


def _report(got: Recording) -> None:
    """Per frame: label counts and the per-box table; then agreement with the input (ground-truth) classes."""
    agree = total = 0
    for out in got.outputs:
        labels = Counter(d.results[0].hypothesis.class_id if d.results else "none" for d in out.detections)
        key = _stamp_ns(out)
        truth, cloud = got.inputs.get(key), got.clouds.get(key)
        if truth is not None:
            for det, gt in zip(out.detections, truth.detections):
                if det.results and gt.results and det.results[0].hypothesis.class_id != "unknown":
                    total += 1
                    agree += det.results[0].hypothesis.class_id == gt.results[0].hypothesis.class_id
        points = cloud.width * cloud.height if cloud is not None else 0
        print(f"frame {key * 1e-9:.2f}: {points} points, {len(out.detections)} boxes -> " +
              ", ".join(f"{label} {n}" for label, n in labels.most_common()))
        print("\n".join(_box_table(out, truth, cloud)))
    print(f"{len(got.outputs)} labelled frames; top-1 agrees with the bag's ground truth on {agree}/{total} "
          "encoded boxes" + (f" ({100.0 * agree / total:.1f} %)" if total else ""))


def _record(path: Path, got: Recording, cloud_topic: str) -> None:
    """Write clouds, labelled detections and markers (their CDR bytes) to a rosbag2 MCAP bag.

    Log times are the header stamps, so a player shows each cloud with its labels.
    """
    from rclpy.serialization import serialize_message  # noqa: PLC0415

    from .bags.writer import CLOUD_TYPE, DETECTIONS_TYPE, BagWriter  # noqa: PLC0415

    entries = [(_stamp_ns(m), cloud_topic, CLOUD_TYPE, m) for m in got.clouds.values()]
    entries += [(_stamp_ns(m), f"/{NODE}/detections", DETECTIONS_TYPE, m) for m in got.outputs]
    entries += [(_stamp_ns(m.markers[0]), f"/{NODE}/markers", "visualization_msgs/msg/MarkerArray", m)
                for m in got.markers if m.markers]
    with BagWriter(path, storage="mcap") as bag:
        for stamp, topic, msgtype, msg in sorted(entries, key=lambda e: e[0]):
            bag.write_raw(topic, msgtype, stamp, serialize_message(msg))


if __name__ == "__main__":
    sys.exit(main())
