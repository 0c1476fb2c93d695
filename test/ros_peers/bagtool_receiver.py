"""Count clouds and detection arrays with their receive times, save them, then exit.

usage: python bagtool_receiver.py OUT.npz [--cloud-topic T] [--detections-topic T]
       [--count N] [--timeout S] [--idle S]

Exits when N messages of each topic arrived, or when nothing arrived for ``--idle`` seconds
after the first message, or at ``--timeout`` (exit 1 if nothing arrived at all). Saves per
topic kind (cloud, dets) the receive times (monotonic, s) and header stamps, plus the last
cloud's points and the last array's boxes, ids and labels.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from vision_msgs.msg import Detection3DArray

from blendclip_ros.ros.conversions import detections_to_arrays, pointcloud2_to_array


def _stamp(msg: object) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--cloud-topic", default="/lidar/points")
    parser.add_argument("--detections-topic", default="/detections")
    parser.add_argument("--count", type=int, default=0, help="stop after this many of each (0: no limit)")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--idle", type=float, default=2.0)
    args = parser.parse_args()
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    rclpy.init()
    node = rclpy.create_node("bagtool_receiver")
    got: dict[str, list] = {"cloud": [], "dets": []}

    def on(kind: str):
        return lambda msg: got[kind].append((time.monotonic(), msg))

    node.create_subscription(PointCloud2, args.cloud_topic, on("cloud"), qos_profile_sensor_data)
    node.create_subscription(Detection3DArray, args.detections_topic, on("dets"), 10)
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and not stopped:
        rclpy.spin_once(node, timeout_sec=0.05)
        if args.count and min(len(v) for v in got.values()) >= args.count:
            break
        last = max((v[-1][0] for v in got.values() if v), default=None)
        if last is not None and time.monotonic() - last > args.idle:
            break
    node.destroy_node()
    rclpy.try_shutdown()
    if not got["cloud"] and not got["dets"]:
        print("received nothing", file=sys.stderr)
        return 1
    saved = {f"{kind}_times": np.array([t for t, _ in got[kind]]) for kind in got}
    saved.update({f"{kind}_stamps": np.array([_stamp(m) for _, m in got[kind]], dtype=np.int64) for kind in got})
    if got["cloud"]:
        cloud = got["cloud"][-1][1]
        saved.update(cloud_frame_id=cloud.header.frame_id,
                     points=pointcloud2_to_array(cloud, ("x", "y", "z", "intensity", "ring")))
    if got["dets"]:
        msg = got["dets"][-1][1]
        dets = detections_to_arrays(msg)
        saved.update(dets_frame_id=msg.header.frame_id, centers=dets.centers, sizes=dets.sizes,
                     quaternions=dets.quaternions, ids=np.array(dets.ids),
                     labels=np.array([d.results[0].hypothesis.class_id for d in msg.detections]))
    np.savez(args.out, **saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
