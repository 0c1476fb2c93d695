"""Publish the real nuScenes sweep (sensor-data QoS) and its boxes until stopped.

usage: python sweep_publisher.py INFO.pkl [--period S]
"""

from __future__ import annotations

import argparse

import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection3DArray

from blendclip_ros.data.mmdet3d_info import load_mmdet3d_frame
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.ros.conversions import array_to_pointcloud2, arrays_to_detections
from blendclip_ros.ros.spin import spin_until_shutdown


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("info")
    parser.add_argument("--period", type=float, default=0.2)
    args = parser.parse_args()
    frame = load_mmdet3d_frame(args.info)
    boxes = Boxes.from_mmdet3d(frame.boxes)
    rclpy.init()
    node = rclpy.create_node("sweep_publisher")
    header = Header(frame_id="lidar_top")
    header.stamp.sec, header.stamp.nanosec = divmod(frame.timestamp_us * 1000, 10**9)
    cloud = array_to_pointcloud2(frame.points, header)
    detections = arrays_to_detections(header, boxes.centers, boxes.sizes, boxes.quaternions,
                                      [f"box{i}" for i in range(len(boxes))])
    cloud_pub = node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
    det_pub = node.create_publisher(Detection3DArray, "detections", 10)

    def publish() -> None:
        cloud_pub.publish(cloud)
        det_pub.publish(detections)

    node.create_timer(args.period, publish)
    spin_until_shutdown(node)


if __name__ == "__main__":
    main()
