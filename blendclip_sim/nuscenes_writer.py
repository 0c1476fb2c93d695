"""Write simulated scenes as a nuScenes-format dataset that the real ``nuscenes-devkit`` loads.

Layout (``root``): ``<version>/*.json`` (13 tables), ``samples/LIDAR_TOP/*.pcd.bin`` (keyframes) and
``sweeps/LIDAR_TOP/*.pcd.bin`` (intermediate sweeps), ``maps/<token>.png`` (drivable-area mask,
0.1 m/pixel). With ``cameras`` (e.g. :func:`~blendclip_sim.cameras.nuscenes_rig`), every keyframe also
gets one rendered JPEG per camera (``samples/CAM_*/``, calibrated sensors with intrinsics) and the
annotations' visibility tokens come from camera occlusion (visible pixels / unoccluded pixels over
the six images, "1" when never in view); without cameras they come from the LiDAR rays. Two
categories are not in nuScenes (``vehicle.other``, ``static_object.traffic_sign``, named as in
TruckScenes): pass ``colormap=sim_colormap()`` to ``NuScenes`` to render them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from blendclip_ros.errors import ConfigError

from .cameras import Camera, quaternion_wxyz, render_cameras
from .lidar import BeamPattern
from .scene import LIDAR_MOUNT, Frame, Scene, simulate_frame

CATEGORY = {
    "car": "vehicle.car", "truck": "vehicle.truck", "bus": "vehicle.bus.rigid", "trailer": "vehicle.trailer",
    "construction vehicle": "vehicle.construction", "other vehicle": "vehicle.other",
    "motorcycle": "vehicle.motorcycle", "bicycle": "vehicle.bicycle", "pedestrian": "human.pedestrian.adult",
    "animal": "animal", "traffic cone": "movable_object.trafficcone", "barrier": "movable_object.barrier",
    "traffic sign": "static_object.traffic_sign",
}
EXTRA_CATEGORIES = ("vehicle.bus.bendy", "human.pedestrian.child")
ATTRIBUTES = ("vehicle.moving", "vehicle.parked", "vehicle.stopped", "pedestrian.moving", "pedestrian.standing",
              "cycle.with_rider", "cycle.without_rider")
VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))
BASE_TIMESTAMP_US = 1_600_000_000_000_000
MAP_SIZE_M = 400.0
MAP_RESOLUTION = 0.1


def sim_colormap() -> dict[str, tuple[int, int, int]]:
    """The devkit colormap plus colours for the two TruckScenes-only categories."""
    from nuscenes.utils.color_map import get_colormap

    cmap = dict(get_colormap())
    cmap.update({"vehicle.other": (255, 140, 0), "static_object.traffic_sign": (0, 160, 255)})
    return cmap


def category_name(class_name: str, attributes: dict) -> str:
    """nuScenes category of a simulated object (bendy buses and children get their sub-category)."""
    if class_name == "bus" and attributes.get("style") == "articulated bus":
        return "vehicle.bus.bendy"
    if class_name == "pedestrian" and "child" in str(attributes.get("style", "")):
        return "human.pedestrian.child"
    return CATEGORY[class_name]


def visibility_token(fraction: float) -> str:
    """nuScenes visibility bin ("1" = 0-40 % ... "4" = 80-100 %) of a visible fraction."""
    return str(1 + int(np.searchsorted([0.4, 0.6, 0.8], fraction, side="right")))


def _tok(*parts) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _quat_wxyz(rotation: np.ndarray) -> list[float]:
    """wxyz quaternion of a rotation about z (the only rotations the simulator makes)."""
    yaw = float(np.arctan2(rotation[1, 0], rotation[0, 0]))
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def _yaw_quat(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def _link(records: list[dict]) -> None:
    for a, b in zip(records[:-1], records[1:]):
        a["next"], b["prev"] = b["token"], a["token"]


def _map_png(scene: Scene, path: Path) -> None:
    """Rasterise the carriageway and sidewalks (255) of a scene's road into a 0.1 m/pixel mask."""
    n = int(MAP_SIZE_M / MAP_RESOLUTION)
    img = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(img)
    road = scene.road
    s = np.arange(-100.0, scene.ego_speed * scene.duration + 150.0, 2.0)
    half = road.carriageway_half_width + road.sidewalk_width
    lx, ly, _ = road.pose(s, half)
    rx, ry, _ = road.pose(s[::-1], -half)
    xs, ys = np.concatenate([lx, rx]), np.concatenate([ly, ry])
    draw.polygon(list(zip(xs / MAP_RESOLUTION, n - ys / MAP_RESOLUTION)), fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def write_nuscenes(scenes: list[Scene], root: Path | str, version: str = "v1.0-sim", keyframe_hz: float = 2.0,
                   sweeps_per_keyframe: int = 0, pattern: BeamPattern | None = None,
                   cameras: tuple[Camera, ...] | None = None, jpeg_quality: int = 92, progress: bool = False) -> Path:
    """Simulate ``scenes`` and write them as a nuScenes dataset under ``root``; returns ``root``.

    Keyframes (samples) come at ``keyframe_hz``; ``sweeps_per_keyframe`` intermediate LiDAR sweeps are
    written between consecutive keyframes (9 gives nuScenes' 20 Hz at 2 Hz keyframes).
    """
    if keyframe_hz <= 0 or sweeps_per_keyframe < 0:
        raise ConfigError("keyframe_hz must be > 0 and sweeps_per_keyframe >= 0")
    root = Path(root)
    tables: dict[str, list[dict]] = {k: [] for k in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
        "scene", "sample", "sample_data", "sample_annotation", "map")}
    for name in list(CATEGORY.values()) + list(EXTRA_CATEGORIES):
        tables["category"].append({"token": _tok("category", name), "name": name, "description": f"simulated {name}"})
    for name in ATTRIBUTES:
        tables["attribute"].append({"token": _tok("attribute", name), "name": name, "description": name})
    for token, level in VISIBILITY:
        description = f"visibility of whole object is between {level[1:].replace('-', ' and ')} %"
        tables["visibility"].append({"token": token, "level": level, "description": description})
    sensor_token = _tok("sensor", "LIDAR_TOP")
    tables["sensor"].append({"token": sensor_token, "channel": "LIDAR_TOP", "modality": "lidar"})
    calib_token = _tok("calibrated_sensor", "LIDAR_TOP")
    tables["calibrated_sensor"].append({"token": calib_token, "sensor_token": sensor_token,
                                        "translation": [float(v) for v in LIDAR_MOUNT],
                                        "rotation": [1.0, 0.0, 0.0, 0.0],
                                        "camera_intrinsic": []})
    for cam in cameras or ():
        cam_sensor = _tok("sensor", cam.channel)
        tables["sensor"].append({"token": cam_sensor, "channel": cam.channel, "modality": "camera"})
        tables["calibrated_sensor"].append({"token": _tok("calibrated_sensor", cam.channel), "sensor_token": cam_sensor,
                                            "translation": [float(v) for v in cam.translation],
                                            "rotation": quaternion_wxyz(cam.rotation),
                                            "camera_intrinsic": cam.intrinsic.tolist()})
    step = 1.0 / (keyframe_hz * (sweeps_per_keyframe + 1))
    t0 = BASE_TIMESTAMP_US
    for scene in scenes:
        log_token, map_token = _tok("log", scene.name), _tok("map", scene.name)
        tables["log"].append({"token": log_token, "logfile": scene.name, "vehicle": "sim-ego",
                              "date_captured": "2026-01-01", "location": "sim-city"})
        map_file = f"maps/{map_token}.png"
        _map_png(scene, root / map_file)
        tables["map"].append({"token": map_token, "log_tokens": [log_token], "category": "semantic_prior",
                              "filename": map_file})
        times = np.arange(0.0, scene.duration - 1e-9, step)
        n_key = (len(times) - 1) // (sweeps_per_keyframe + 1) + 1
        times = times[: (n_key - 1) * (sweeps_per_keyframe + 1) + 1]  # end on a keyframe
        scene_token = _tok("scene", scene.name)
        samples, sds, per_instance = [], [], {}
        camera_sds: dict[str, list[dict]] = {cam.channel: [] for cam in cameras or ()}
        for i, t in enumerate(tqdm(times, desc=scene.name, disable=not progress, unit="sweep")):
            key = i % (sweeps_per_keyframe + 1) == 0
            frame = simulate_frame(scene, float(t), pattern, seed=i)
            stamp = t0 + int(round(t * 1e6))
            period = sweeps_per_keyframe + 1
            sample_token = _tok("sample", scene.name, i - i % period + (0 if key else period))
            sd = _write_sample_data(tables, root, scene, frame, i, stamp, key, sample_token, calib_token)
            sds.append(sd)
            if key:
                samples.append({"token": sample_token, "timestamp": stamp, "prev": "", "next": "",
                                "scene_token": scene_token})
                visible = None
                if cameras:
                    rendered = render_cameras(scene, float(t), cameras)
                    visible = dict(zip((a.token for a in scene.actors),
                                       np.nan_to_num(rendered.visible_fraction, nan=0.0).tolist()))
                    for cam in cameras:
                        camera_sds[cam.channel].append(_write_camera(root, scene, cam, rendered.images[cam.channel],
                                                                     stamp, sample_token, sd["ego_pose_token"],
                                                                     jpeg_quality))
                _annotate(tables, per_instance, frame, sample_token, visible)
        _link(samples)
        _link(sds)
        for records in camera_sds.values():
            _link(records)
            tables["sample_data"] += records
        tables["sample"] += samples
        tables["sample_data"] += sds
        for actor_token, anns in per_instance.items():
            _link(anns)
            tables["sample_annotation"] += anns
            actor = anns[0].pop("_actor")
            for a in anns[1:]:
                a.pop("_actor")
            category = category_name(actor.obj.class_name, actor.obj.attributes)
            tables["instance"].append({"token": actor_token, "category_token": _tok("category", category),
                                       "nbr_annotations": len(anns), "first_annotation_token": anns[0]["token"],
                                       "last_annotation_token": anns[-1]["token"]})
        tables["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(samples),
                                "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"],
                                "name": scene.name, "description": f"simulated street, seed {scene.seed}"})
        t0 += int(round(scene.duration * 1e6)) + 10_000_000
    out = root / version
    out.mkdir(parents=True, exist_ok=True)
    for name, records in tables.items():
        (out / f"{name}.json").write_text(json.dumps(records, indent=0))
    return root


def _write_sample_data(tables: dict, root: Path, scene: Scene, frame: Frame, index: int, stamp: int, key: bool,
                       sample_token: str, calib_token: str) -> dict:
    ego_token = _tok("ego_pose", scene.name, index)
    tables["ego_pose"].append({"token": ego_token, "timestamp": stamp,
                               "translation": [float(v) for v in frame.ego_translation],
                               "rotation": _quat_wxyz(frame.ego_rotation)})
    folder = "samples" if key else "sweeps"
    filename = f"{folder}/LIDAR_TOP/{scene.name}__LIDAR_TOP__{stamp}.pcd.bin"
    (root / filename).parent.mkdir(parents=True, exist_ok=True)
    frame.points.astype(np.float32).tofile(root / filename)
    return {"token": _tok("sample_data", scene.name, index), "sample_token": sample_token, "ego_pose_token": ego_token,
            "calibrated_sensor_token": calib_token, "timestamp": stamp, "fileformat": "pcd", "is_key_frame": key,
            "height": 0, "width": 0, "filename": filename, "prev": "", "next": ""}


def _write_camera(root: Path, scene: Scene, cam: Camera, image: np.ndarray, stamp: int, sample_token: str,
                  ego_token: str, quality: int) -> dict:
    filename = f"samples/{cam.channel}/{scene.name}__{cam.channel}__{stamp}.jpg"
    (root / filename).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / filename, quality=quality)
    return {"token": _tok("sample_data", scene.name, cam.channel, stamp), "sample_token": sample_token,
            "ego_pose_token": ego_token, "calibrated_sensor_token": _tok("calibrated_sensor", cam.channel),
            "timestamp": stamp, "fileformat": "jpg", "is_key_frame": True, "height": cam.height, "width": cam.width,
            "filename": filename, "prev": "", "next": ""}


def _annotate(tables: dict, per_instance: dict, frame: Frame, sample_token: str,
              camera_visible: dict[str, float] | None = None) -> None:
    """Annotations of a keyframe; visibility from the cameras (actor token -> fraction) when given, else the LiDAR."""
    for ann in frame.annotations:
        actor = ann.actor
        attrs = [_tok("attribute", actor.attribute)] if actor.attribute else []
        per_instance.setdefault(actor.token, []).append({
            "token": _tok("sample_annotation", sample_token, actor.token), "sample_token": sample_token,
            "instance_token": actor.token, "visibility_token": visibility_token(
                ann.visible_fraction if camera_visible is None else camera_visible[actor.token]),
            "attribute_tokens": attrs, "translation": [float(v) for v in ann.centre],
            "size": [float(ann.size[1]), float(ann.size[0]), float(ann.size[2])],  # nuScenes wlh
            "rotation": _yaw_quat(ann.yaw), "prev": "", "next": "",
            "num_lidar_pts": ann.num_lidar_pts, "num_radar_pts": 0, "_actor": actor})
