"""Write simulated scenes as a MAN TruckScenes-format dataset that the real ``truckscenes-devkit`` loads.

The ego is a truck with six LiDARs (TruckScenes' channels: ``LIDAR_LEFT``, ``LIDAR_RIGHT``,
``LIDAR_TOP_FRONT``, ``LIDAR_TOP_LEFT``, ``LIDAR_TOP_RIGHT``, ``LIDAR_REAR``; mounts in
:data:`TRUCK_LIDARS`), each a 32-beam spinning sensor. Keyframes only (TruckScenes' 2 Hz
samples): per keyframe and LiDAR one ``.pcd`` file (fields x, y, z, intensity, timestamp, read by
the devkit's ``LidarPointCloud``) under ``samples/<channel>/``. Tables (``<version>/*.json``): the
devkit's 14 (attribute, calibrated_sensor, category, ego_motion_cabin, ego_motion_chassis,
ego_pose, instance, sample, sample_annotation, sample_data, scene, sensor, visibility,
weather_annotation). ``num_lidar_pts`` counts the points of all six LiDARs in a box; visibility
is the LiDAR-visible fraction over the six sensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from blendclip_ros.errors import ConfigError
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.crop import points_in_boxes

from .lidar import BeamPattern, LidarSimulator
from .mesh import rot_z
from .nuscenes_writer import (
    ATTRIBUTES,
    BASE_TIMESTAMP_US,
    CATEGORY,
    EXTRA_CATEGORIES,
    VISIBILITY,
    _link,
    _tok,
    _yaw_quat,
    category_name,
    visibility_token,
)
from .scene import ANNOTATION_RANGE, Scene

#: channel -> (x, y, z mount on the truck's ego frame, yaw in degrees)
TRUCK_LIDARS = {
    "LIDAR_LEFT": ((2.3, 1.3, 1.1), 90.0), "LIDAR_RIGHT": ((2.3, -1.3, 1.1), -90.0),
    "LIDAR_TOP_FRONT": ((2.6, 0.0, 3.7), 0.0), "LIDAR_TOP_LEFT": ((1.8, 1.2, 3.7), 60.0),
    "LIDAR_TOP_RIGHT": ((1.8, -1.2, 3.7), -60.0), "LIDAR_REAR": ((-11.5, 0.0, 1.3), 180.0),
}


def truck_lidar() -> BeamPattern:
    """A 32-beam sensor, -25..+15 deg, 720 azimuth steps, 150 m (coarser than TruckScenes', to stay fast)."""
    return BeamPattern("truck32", tuple(np.round(np.linspace(-25.0, 15.0, 32), 3)), 720, 10.0, max_range=150.0)


def write_truckscenes(scenes: list[Scene], root: Path | str, version: str = "v1.0-sim", keyframe_hz: float = 2.0,
                      pattern: BeamPattern | None = None) -> Path:
    """Simulate ``scenes`` from the truck's six LiDARs and write them as TruckScenes tables and files."""
    if keyframe_hz <= 0:
        raise ConfigError(f"keyframe_hz: must be > 0, got {keyframe_hz}")
    import pypcd4

    root = Path(root)
    sim = LidarSimulator(pattern or truck_lidar())
    tables: dict[str, list[dict]] = {k: [] for k in (
        "attribute", "calibrated_sensor", "category", "ego_motion_cabin", "ego_motion_chassis", "ego_pose", "instance",
        "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility", "weather_annotation")}
    for name in list(CATEGORY.values()) + list(EXTRA_CATEGORIES):
        tables["category"].append({"token": _tok("category", name), "name": name, "description": f"simulated {name}"})
    for name in ATTRIBUTES:
        tables["attribute"].append({"token": _tok("attribute", name), "name": name, "description": name})
    for token, level in VISIBILITY:
        tables["visibility"].append({"token": token, "level": level, "description": level})
    for channel, (mount, yaw) in TRUCK_LIDARS.items():
        tables["sensor"].append({"token": _tok("sensor", channel), "channel": channel, "modality": "lidar"})
        tables["calibrated_sensor"].append({"token": _tok("calibrated_sensor", channel),
                                            "sensor_token": _tok("sensor", channel), "translation": list(mount),
                                            "rotation": _yaw_quat(np.radians(yaw)), "camera_intrinsic": []})
    t0 = BASE_TIMESTAMP_US
    for scene in scenes:
        scene_token = _tok("scene", scene.name)
        samples, per_instance, per_channel = [], {}, {ch: [] for ch in TRUCK_LIDARS}
        for i, t in enumerate(np.arange(0.0, scene.duration - 1e-9, 1.0 / keyframe_hz)):
            stamp = t0 + round(t * 1e6)
            sample_token = _tok("sample", scene.name, i)
            ego_r, ego_t = scene.ego_pose(float(t))
            ego_token = _tok("ego_pose", scene.name, i)
            yaw = float(np.arctan2(ego_r[1, 0], ego_r[0, 0]))
            tables["ego_pose"].append({"token": ego_token, "timestamp": stamp, "translation": [float(v) for v in ego_t],
                                       "rotation": _yaw_quat(yaw)})
            for table in ("ego_motion_cabin", "ego_motion_chassis"):
                tables[table].append({"token": _tok(table, scene.name, i), "timestamp": stamp, "vx": scene.ego_speed,
                                      "vy": 0.0, "vz": 0.0, "ax": 0.0, "ay": 0.0, "az": 0.0, "yaw": yaw, "pitch": 0.0,
                                      "roll": 0.0, "yaw_rate": 0.0, "pitch_rate": 0.0, "roll_rate": 0.0})
            samples.append({"token": sample_token, "timestamp": stamp, "scene_token": scene_token, "prev": "",
                            "next": ""})
            placed = [(j, *a.pose(scene.road, float(t))) for j, a in enumerate(scene.actors)]
            near = [(j, c, y) for j, c, y in placed if np.linalg.norm(c[:2] - ego_t[:2]) < ANNOTATION_RANGE + 80]
            instances = [scene.instances[j].placed(rot_z(y), c) for j, c, y in near]
            own, visible, clouds = np.zeros(len(near)), np.zeros(len(near)), []
            for k, (channel, (mount, mount_yaw)) in enumerate(TRUCK_LIDARS.items()):
                rotation = ego_r @ rot_z(np.radians(mount_yaw))
                origin = ego_r @ np.asarray(mount) + ego_t
                sweep = sim.scan(instances + scene.statics, rotation, origin,
                                 seed=np.random.default_rng([scene.seed, i, k]))
                own += sweep.own_hits[:len(near)]
                visible += sweep.visible_hits[:len(near)]
                clouds.append(sweep.points[:, :3].astype(np.float64) @ rotation.T + origin)
                filename = f"samples/{channel}/{scene.name}__{channel}__{stamp}.pcd"
                (root / filename).parent.mkdir(parents=True, exist_ok=True)
                columns = [sweep.points[:, c].astype(np.float32) for c in range(4)]
                pypcd4.PointCloud.from_points(columns + [np.full(len(sweep.points), stamp, dtype=np.uint64)],
                                              ("x", "y", "z", "intensity", "timestamp"),
                                              (np.float32, np.float32, np.float32, np.float32, np.uint64)
                                              ).save(root / filename)
                per_channel[channel].append({
                    "token": _tok("sample_data", scene.name, channel, i), "sample_token": sample_token,
                    "ego_pose_token": ego_token, "calibrated_sensor_token": _tok("calibrated_sensor", channel),
                    "timestamp": stamp, "fileformat": "pcd", "is_key_frame": True, "height": 0, "width": 0,
                    "filename": filename, "prev": "", "next": ""})
            fused = np.concatenate(clouds)
            annotated = [(n, j, c, y) for n, (j, c, y) in enumerate(near)
                         if np.linalg.norm(c[:2] - ego_t[:2]) <= ANNOTATION_RANGE * 1.5]
            sizes = np.array([scene.actors[j].obj.size for _, j, _, _ in annotated]).reshape(-1, 3)
            boxes = Boxes.from_yaw(np.array([c for _, _, c, _ in annotated]).reshape(-1, 3), sizes,
                                   np.array([y for _, _, _, y in annotated]))
            counts = [len(ix) for ix in points_in_boxes(fused, boxes)]
            for (n, j, c, y), count in zip(annotated, counts):
                actor = scene.actors[j]
                fraction = visible[n] / own[n] if own[n] else 0.0
                per_instance.setdefault(actor.token, (actor, []))[1].append({
                    "token": _tok("sample_annotation", sample_token, actor.token), "sample_token": sample_token,
                    "instance_token": actor.token, "visibility_token": visibility_token(min(fraction, 1.0)),
                    "attribute_tokens": [_tok("attribute", actor.attribute)] if actor.attribute else [],
                    "translation": [float(v) for v in c], "size": [float(actor.obj.size[k]) for k in (1, 0, 2)],
                    "rotation": _yaw_quat(y), "prev": "", "next": "", "num_lidar_pts": int(count),
                    "num_radar_pts": 0})
        _link(samples)
        tables["sample"] += samples
        for records in per_channel.values():
            _link(records)
            tables["sample_data"] += records
        for actor_token, (actor, anns) in per_instance.items():
            _link(anns)
            tables["sample_annotation"] += anns
            tables["instance"].append({"token": actor_token, "category_token": _tok(
                "category", category_name(actor.obj.class_name, actor.obj.attributes)), "nbr_annotations": len(anns),
                "first_annotation_token": anns[0]["token"], "last_annotation_token": anns[-1]["token"]})
        tables["scene"].append({"token": scene_token, "log_token": _tok("log", scene.name), "nbr_samples": len(samples),
                                "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"],
                                "name": scene.name, "description": "weather.clear;area.city;daytime.noon"})
        t0 += round(scene.duration * 1e6) + 10_000_000
    out = root / version
    out.mkdir(parents=True, exist_ok=True)
    for name, records in tables.items():
        (out / f"{name}.json").write_text(json.dumps(records, indent=0))
    return root
