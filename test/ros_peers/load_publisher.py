"""Publish one frame (cloud + detections, same stamp) at a fixed rate, stamped with the wall clock.

usage: python load_publisher.py (--info PKL | --synthetic POINTS BOXES) --rate HZ --duration S

Each publish sets both headers to ``time.time_ns()`` just before the cloud goes out, so a
receiver on the same host measures latency as its ``time.time_ns()`` minus the stamp.
Publish times follow one monotonic schedule (no drift). Waits until both topics have a
subscriber, then prints "started"; at the end prints a JSON summary (published frames,
worst lateness against the schedule).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection3DArray

from blendclip_ros.data.mmdet3d_info import load_mmdet3d_frame
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.ros.conversions import array_to_pointcloud2, arrays_to_detections


def synthetic_frame(n_points: int, n_boxes: int, seed: int = 0) -> tuple[np.ndarray, Boxes]:
    """A ground plane with ``n_boxes`` car-sized boxes that each hold a third of their share of points.

    Points are ``(n_points, 5)`` float32 (x, y, z, intensity, ring); boxes sit on the ground
    within 60 m and hold about ``n_points / (3 * n_boxes)`` points each (all above any
    min_points), so every box is encoded.
    """
    rng = np.random.default_rng(seed)
    centers = np.column_stack([rng.uniform(-60, 60, (n_boxes, 2)), np.full(n_boxes, 0.8)])
    sizes = np.column_stack([rng.uniform(3.5, 5.0, n_boxes), rng.uniform(1.6, 2.1, n_boxes),
                             rng.uniform(1.4, 1.8, n_boxes)])
    yaws = rng.uniform(-np.pi, np.pi, n_boxes)
    boxes = Boxes.from_yaw(centers, sizes, yaws)
    per_box = n_points // (3 * n_boxes)
    local = rng.uniform(-0.5, 0.5, (n_boxes, per_box, 3)) * sizes[:, None, :]
    cos, sin = np.cos(yaws)[:, None], np.sin(yaws)[:, None]
    inside = np.stack([cos * local[..., 0] - sin * local[..., 1] + centers[:, None, 0],
                       sin * local[..., 0] + cos * local[..., 1] + centers[:, None, 1],
                       local[..., 2] + centers[:, None, 2]], axis=-1).reshape(-1, 3)
    ground = np.column_stack([rng.uniform(-70, 70, (n_points - len(inside), 2)),
                              rng.normal(-0.9, 0.03, n_points - len(inside))])
    xyz = np.concatenate([inside, ground])
    extra = np.column_stack([rng.uniform(0, 255, len(xyz)), rng.integers(0, 32, len(xyz))])
    return np.column_stack([xyz, extra]).astype(np.float32), boxes


def main() -> int:
    parser = argparse.ArgumentParser()
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--info", help="mmdet3d info file of the real sweep")
    source.add_argument("--synthetic", nargs=2, type=int, metavar=("POINTS", "BOXES"))
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--cloud-topic", default="points")
    parser.add_argument("--detections-topic", default="detections")
    parser.add_argument("--wait-timeout", type=float, default=60.0)
    args = parser.parse_args()
    if args.info:
        frame = load_mmdet3d_frame(args.info)
        points, boxes = frame.points, Boxes.from_mmdet3d(frame.boxes)
    else:
        points, boxes = synthetic_frame(*args.synthetic)
    rclpy.init()
    node = rclpy.create_node("load_publisher")
    try:
        header = Header(frame_id="lidar_top")
        cloud = array_to_pointcloud2(points, header)
        detections = arrays_to_detections(header, boxes.centers, boxes.sizes, boxes.quaternions,
                                          [f"box{i}" for i in range(len(boxes))])
        cloud_pub = node.create_publisher(PointCloud2, args.cloud_topic, qos_profile_sensor_data)
        det_pub = node.create_publisher(Detection3DArray, args.detections_topic, 10)
        deadline = time.monotonic() + args.wait_timeout
        while min(cloud_pub.get_subscription_count(), det_pub.get_subscription_count()) < 1:
            if time.monotonic() > deadline:
                print("timeout waiting for subscribers", file=sys.stderr)
                return 1
            time.sleep(0.02)
        time.sleep(0.5)  # let the subscriber side finish matching both topics
        print("started", flush=True)
        period, start, published, worst = 1.0 / args.rate, time.monotonic(), 0, 0.0
        while (due := start + published * period) < start + args.duration:
            time.sleep(max(0.0, due - time.monotonic()))
            worst = max(worst, time.monotonic() - due)
            sec, nanosec = divmod(time.time_ns(), 1_000_000_000)
            for msg in (cloud, detections):
                msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
            cloud_pub.publish(cloud)
            det_pub.publish(detections)
            published += 1
        time.sleep(0.5)  # let reliable detections be delivered
        print(json.dumps({"published": published, "max_lateness_ms": round(worst * 1e3, 2)}), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
