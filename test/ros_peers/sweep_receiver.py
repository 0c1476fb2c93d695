"""Receive one cloud and one detection array and save them as arrays, then exit.

usage: python sweep_receiver.py OUT.npz [--timeout S]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from vision_msgs.msg import Detection3DArray

from blendclip_ros.ros.conversions import detections_to_arrays, pointcloud2_to_array


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("sweep_receiver")
    received: dict[str, object] = {}
    node.create_subscription(PointCloud2, "points", lambda m: received.setdefault("cloud", m),
                             qos_profile_sensor_data)
    node.create_subscription(Detection3DArray, "detections", lambda m: received.setdefault("dets", m), 10)
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    while len(received) < 2 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    if len(received) < 2:
        print(f"timeout: received only {sorted(received)}", file=sys.stderr)
        return 1
    cloud, dets = received["cloud"], detections_to_arrays(received["dets"])
    np.savez(args.out, points=pointcloud2_to_array(cloud, ("x", "y", "z", "intensity", "ring")),
             centers=dets.centers, sizes=dets.sizes, quaternions=dets.quaternions, ids=np.array(dets.ids),
             frame_id=np.array([cloud.header.frame_id, dets.header.frame_id]),
             stamps=np.array([[cloud.header.stamp.sec, cloud.header.stamp.nanosec],
                              [dets.header.stamp.sec, dets.header.stamp.nanosec]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
