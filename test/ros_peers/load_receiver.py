"""Record a classifier node's outputs and diagnostics until SIGINT/SIGTERM, then write JSON.

usage: python load_receiver.py OUT.json --node NAME

Per output (bounded: six numbers): wall-clock receive time (``time.time_ns()`` when the
serialised message is taken, before this Python process spends milliseconds deserialising
it, which a C++ consumer would not), header
stamp, number of detections, number labelled (top hypothesis not "unknown"), CRC32 of the
ids in order, and whether every hypothesis is a label of the latest ``~/label_info`` (or a
lone "unknown") with scores sorted. Every /diagnostics status of the node is kept with its
receive time. Prints "matched" once the node's output publisher is discovered.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from vision_msgs.msg import Detection3DArray, LabelInfo

from blendclip_ros.ros.spin import spin_until_shutdown

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
UNKNOWN = "unknown"


class Recorder:
    def __init__(self, node, name: str) -> None:
        self.name = name
        self.labels: set[str] = set()
        self.outputs: list[list[int]] = []
        self.diagnostics: list[dict[str, float]] = []
        self.sub = node.create_subscription(Detection3DArray, f"/{name}/detections", self.on_output, 100, raw=True)
        node.create_subscription(LabelInfo, f"/{name}/label_info", self.on_label_info, LATCHED)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)

    def on_label_info(self, msg: LabelInfo) -> None:
        self.labels = {c.class_name for c in msg.class_map}

    def on_output(self, data: bytes) -> None:
        received = time.time_ns()
        msg = deserialize_message(data, Detection3DArray)
        labelled, valid = 0, bool(self.labels)
        for det in msg.detections:
            names = [r.hypothesis.class_id for r in det.results]
            scores = [r.hypothesis.score for r in det.results]
            labelled += bool(names) and names[0] != UNKNOWN
            valid &= names == [UNKNOWN] or (bool(names) and set(names) <= self.labels
                                            and scores == sorted(scores, reverse=True))
        ids = zlib.crc32("\n".join(d.id for d in msg.detections).encode())
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.outputs.append([received, stamp, len(msg.detections), labelled, ids, int(valid)])

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.hardware_id == f"/{self.name}":
                values: dict[str, float] = {"time_ns": time.time_ns()}
                for kv in status.values:
                    try:
                        values[kv.key] = float(kv.value)
                    except ValueError:
                        pass
                self.diagnostics.append(values)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--node", required=True, help="the classifier node's name")
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("load_receiver")
    recorder = Recorder(node, args.node)
    def report_match() -> None:
        if recorder.sub.get_publisher_count() > 0:
            print("matched", flush=True)
            node.destroy_timer(match_timer)

    match_timer = node.create_timer(0.1, report_match)
    spin_until_shutdown(node)
    fields = ["received_ns", "stamp_ns", "detections", "labelled", "ids_crc32", "valid"]
    with open(args.out, "w") as f:
        json.dump({"fields": fields, "outputs": recorder.outputs, "diagnostics": recorder.diagnostics}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
