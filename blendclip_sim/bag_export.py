"""Simulated frames as a rosbag2: PointCloud2 on ``/lidar/points`` and ground-truth Detection3DArray.

Boxes are in the cloud's frame (``lidar_top``) with the same stamp; each detection has one hypothesis
(class name, score 1.0) and ``id`` = the actor's instance token. Only boxes with at least
``min_points`` LiDAR points are written (a detector cannot see the others). With ``poses``, the
ego poses too: ``/odom`` (nav_msgs/Odometry of ``lidar_top`` in ``odom``), ``/tf`` (odom ->
base_link) and ``/tf_static`` (base_link -> lidar_top), for multi-sweep accumulation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blendclip_ros.bags.writer import BagWriter
from .nuscenes_writer import BASE_TIMESTAMP_US
from .scene import LIDAR_MOUNT, Frame, generate_scene, simulate

CLOUD_TOPIC = "/lidar/points"
DETECTIONS_TOPIC = "/detections"
FRAME_ID = "lidar_top"
ODOM_TOPIC = "/odom"
FIXED_FRAME = "odom"
DEMO_SEED = 2026
DEMO_DURATION = 3.0
DEMO_RATE_HZ = 2.0


def frame_boxes(frame: Frame, min_points: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """Centres (M, 3), sizes (M, 3), xyzw quaternions (M, 4) in the sensor frame, ids and labels."""
    sensor_t = frame.ego_rotation @ LIDAR_MOUNT + frame.ego_translation
    ego_yaw = float(np.arctan2(frame.ego_rotation[1, 0], frame.ego_rotation[0, 0]))
    anns = [a for a in frame.annotations if a.num_lidar_pts >= min_points]
    centres = np.array([(a.centre - sensor_t) @ frame.ego_rotation for a in anns]).reshape(-1, 3)
    sizes = np.array([a.size for a in anns], dtype=np.float64).reshape(-1, 3)
    yaw = np.array([a.yaw - ego_yaw for a in anns])
    quats = np.stack([np.zeros_like(yaw), np.zeros_like(yaw), np.sin(yaw / 2), np.cos(yaw / 2)], axis=1)
    return centres, sizes, quats.reshape(-1, 4), [a.actor.token for a in anns], [a.actor.obj.class_name for a in anns]


def ego_matrix(frame: Frame, mount: np.ndarray | None = None) -> np.ndarray:
    """4x4 world <- ego (or <- sensor, with the sensor's ``mount`` position in the ego frame)."""
    matrix = np.eye(4)
    matrix[:3, :3] = frame.ego_rotation
    matrix[:3, 3] = frame.ego_translation + (0.0 if mount is None else frame.ego_rotation @ mount)
    return matrix


def write_frames_bag(frames: list[Frame], path: Path | str, storage: str = "mcap",
                     start_ns: int = BASE_TIMESTAMP_US * 1000, min_points: int = 1, poses: bool = False) -> Path:
    """Write frames (cloud + ground-truth detections per frame, ``poses`` optional) to a new bag ``path``."""
    path = Path(path)
    mount = np.eye(4)
    mount[:3, 3] = LIDAR_MOUNT
    with BagWriter(path, storage=storage) as writer:
        for index, frame in enumerate(frames):
            stamp = start_ns + int(round(frame.time * 1e9))
            if poses:
                if index == 0:
                    writer.write_transforms("/tf_static", stamp, [("base_link", FRAME_ID, mount)])
                writer.write_transforms("/tf", stamp, [(FIXED_FRAME, "base_link", ego_matrix(frame))])
                writer.write_odometry(ODOM_TOPIC, stamp, FIXED_FRAME, FRAME_ID, ego_matrix(frame, LIDAR_MOUNT))
            writer.write_cloud(CLOUD_TOPIC, stamp, FRAME_ID, frame.points)
            centres, sizes, quats, ids, labels = frame_boxes(frame, min_points)
            writer.write_detections(DETECTIONS_TOPIC, stamp, FRAME_ID, centres, sizes, quats, ids, labels)
    return path


def write_demo_bag(path: Path | str, seed: int = DEMO_SEED, duration: float = DEMO_DURATION,
                   rate_hz: float = DEMO_RATE_HZ, progress: bool = False) -> Path:
    """The bundled demo: a street scene, bit-for-bit reproducible from ``seed``."""
    scene = generate_scene(seed, duration=duration, name=f"demo-{seed}")
    return write_frames_bag(simulate(scene, rate_hz, progress=progress), path)
