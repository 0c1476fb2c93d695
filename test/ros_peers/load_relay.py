"""A classifier stand-in that does no work: the transport baseline of the latency benchmark.

usage: python load_relay.py --node NAME [--ros-args ...]

Subscribes like the classifier (cloud with sensor-data QoS, detections reliable), pairs them
by exact stamp and republishes each paired detection array at once on ``/NAME/detections``.
Its latency is what DDS and rclpy (de)serialisation of the same messages cost in Python.
"""

from __future__ import annotations

import argparse
import sys
import time

import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from vision_msgs.msg import Detection3DArray

from blendclip_ros.ros.spin import spin_until_shutdown
from blendclip_ros.ros.stamp_sync import Stamped, StampSynchronizer


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--node", required=True)
    args, ros_args = parser.parse_known_args()
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = rclpy.create_node(args.node)
    sync: StampSynchronizer = StampSynchronizer()
    out = node.create_publisher(Detection3DArray, f"/{args.node}/detections", 10)

    def offer(pair) -> None:
        if pair is not None:
            out.publish(pair[1].msg)

    node.create_subscription(PointCloud2, "points", lambda m: offer(sync.add_cloud(
        Stamped(_stamp_ns(m.header), time.monotonic_ns(), m))), qos_profile_sensor_data)
    node.create_subscription(Detection3DArray, "detections", lambda m: offer(sync.add_detections(
        Stamped(_stamp_ns(m.header), time.monotonic_ns(), m))), 10)
    spin_until_shutdown(node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
