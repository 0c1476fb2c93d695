"""Mine the annotated boxes of devkit keyframes (nuScenes, TruckScenes): points, camera crops, metadata.

Everything is read through the dataset's own devkit: tables, ``box_velocity``, its
``LidarPointCloud`` reader, ``transform_matrix``, ``get_sample_data`` (boxes in a camera's
frame) and, for evaluation sets, its ``add_center_dist`` + ``filter_eval_boxes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from blendclip_ros.errors import ConfigError

from .crops import CropRules, crop_rects, jpeg_crop
from .datasets import DatasetSpec
from .fusion import GlobalBoxes, Sweep, fuse_box_points

Frame = Literal["box", "centred"]
VOID = "void"


@dataclass(frozen=True)
class MiningConfig:
    """How annotated boxes become triplets (see docs/mining.md)."""

    sweeps: int = 10  # keyframe + 9 previous (nuScenes); TruckScenes fuses its LiDARs at the keyframe only
    min_points: int = 1
    frame: Frame = "box"
    eval_set: bool = False  # devkit filter_eval_boxes: class ranges from the ego, 0-point boxes, bike racks
    keep_void: bool = False  # keep void categories, labelled "void" (the release's training mining does)
    crops: CropRules | None = None  # None = no image crops
    pairing: Literal["instance", "keyframe"] = "instance"
    max_images: int = 8  # per triplet, drawn from the instance's crops (deterministically)

    def __post_init__(self) -> None:
        if not isinstance(self.sweeps, int) or self.sweeps < 1:
            raise ConfigError(f"sweeps: expected an integer >= 1, got {self.sweeps!r}")
        if not isinstance(self.min_points, int) or self.min_points < 1:
            raise ConfigError(f"min_points: expected an integer >= 1, got {self.min_points!r}")
        if self.frame not in ("box", "centred"):
            raise ConfigError(f"frame: expected 'box' or 'centred', got {self.frame!r}")
        if self.pairing not in ("instance", "keyframe"):
            raise ConfigError(f"pairing: expected 'instance' or 'keyframe', got {self.pairing!r}")
        if self.max_images < 1:
            raise ConfigError(f"max_images: expected >= 1, got {self.max_images}")


@dataclass
class Crop:
    """One JPEG crop of an annotation in one camera."""

    camera: str
    sample_token: str
    annotation_token: str
    jpeg: bytes


@dataclass
class MinedBox:
    """One kept annotation: points in the requested frame, its own crops and metadata."""

    key: str
    label: str
    instance: str
    points: np.ndarray
    meta: dict[str, Any]
    crops: list[Crop] = field(default_factory=list)


class KeyframeMiner:
    """Mines keyframes of one opened devkit database."""

    def __init__(self, db: Any, spec: DatasetSpec, config: MiningConfig) -> None:
        self.db, self.spec, self.config = db, spec, config
        self._lidar_cls = import_module(f"{spec.package}.utils.data_classes").LidarPointCloud
        geometry = import_module(f"{spec.package}.utils.geometry_utils")
        self._transform_matrix = geometry.transform_matrix
        self._box_visibility = geometry.BoxVisibility
        self._ranges = spec.class_ranges() if config.eval_set else None

    # ------------------------------------------------------------------ points
    def _global_from_sensor(self, sample_data: dict) -> np.ndarray:
        from pyquaternion import Quaternion

        sensor = self.db.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
        ego = self.db.get("ego_pose", sample_data["ego_pose_token"])
        return (self._transform_matrix(ego["translation"], Quaternion(ego["rotation"]))
                @ self._transform_matrix(sensor["translation"], Quaternion(sensor["rotation"])))

    def _global_points(self, sample_data: dict) -> np.ndarray:
        cloud = self._lidar_cls.from_file(str(Path(self.db.dataroot) / sample_data["filename"]))
        transform = self._global_from_sensor(sample_data)
        return cloud.points[:3].T.astype(np.float64) @ transform[:3, :3].T + transform[:3, 3]

    def sweeps(self, sample: dict) -> list[Sweep]:
        """The keyframe (all LiDARs fused) and, with motion compensation, up to ``sweeps - 1`` older sweeps."""
        key = [self.db.get("sample_data", sample["data"][ch]) for ch in self.spec.lidars if ch in sample["data"]]
        if not key:
            raise ConfigError(f"sample {sample['token']}: has none of the LiDARs {self.spec.lidars}")
        out = [Sweep(np.concatenate([self._global_points(sd) for sd in key]), int(key[0]["timestamp"]))]
        if self.spec.motion_compensation:
            record = key[0]
            while len(out) < self.config.sweeps and record["prev"]:
                record = self.db.get("sample_data", record["prev"])
                out.append(Sweep(self._global_points(record), int(record["timestamp"])))
        return out

    # ------------------------------------------------------------------ boxes
    def _selected(self, sample: dict) -> list[tuple[dict, str]]:
        """(annotation, label) of the boxes to mine, in the sample's annotation order."""
        chosen = []
        for token in sample["anns"]:
            ann = self.db.get("sample_annotation", token)
            label = self.spec.detection_class(ann["category_name"])
            if label is None and (self.config.keep_void and not self.config.eval_set):
                label = VOID
            if label is not None:
                chosen.append((ann, label))
        if self._ranges is None or not chosen:
            return chosen
        return self._eval_filter(sample, chosen)

    def _eval_filter(self, sample: dict, chosen: list[tuple[dict, str]]) -> list[tuple[dict, str]]:
        """The devkit's own add_center_dist + filter_eval_boxes on this sample's boxes."""
        loaders = import_module(f"{self.spec.package}.eval.common.loaders")
        eval_boxes = import_module(f"{self.spec.package}.eval.common.data_classes").EvalBoxes()
        box_cls = import_module(f"{self.spec.package}.eval.detection.data_classes").DetectionBox
        boxes = []
        for ann, label in chosen:
            box = box_cls(sample_token=sample["token"], translation=ann["translation"], size=ann["size"],
                          rotation=ann["rotation"], velocity=self.db.box_velocity(ann["token"])[:2],
                          num_pts=ann["num_lidar_pts"] + ann["num_radar_pts"],
                          detection_name=label.replace(" ", "_"), detection_score=-1.0)
            box.annotation = (ann, label)
            boxes.append(box)
        eval_boxes.add_boxes(sample["token"], boxes)
        loaders.add_center_dist(self.db, eval_boxes)
        max_dist = {k.replace(" ", "_"): v for k, v in self._ranges.items()}
        kept = loaders.filter_eval_boxes(self.db, eval_boxes, max_dist, verbose=False)
        return [box.annotation for box in kept[sample["token"]]]

    def _global_boxes(self, anns: list[dict]) -> GlobalBoxes:
        prev = [self.db.get("sample_annotation", a["prev"]) if a["prev"] else None for a in anns]
        return GlobalBoxes(
            centres=np.array([a["translation"] for a in anns], dtype=np.float64).reshape(-1, 3),
            sizes=np.array([a["size"] for a in anns], dtype=np.float64).reshape(-1, 3)[:, [1, 0, 2]],
            quats=np.array([a["rotation"] for a in anns], dtype=np.float64).reshape(-1, 4),
            velocity=np.array([self.db.box_velocity(a["token"]) for a in anns], dtype=np.float64).reshape(-1, 3),
            prev_quats=np.array([p["rotation"] if p else [1, 0, 0, 0] for p in prev], dtype=np.float64).reshape(-1, 4),
            prev_velocity=np.array([self.db.box_velocity(p["token"]) if p else [np.nan] * 3 for p in prev],
                                   dtype=np.float64).reshape(-1, 3),
            prev_time_us=np.array([self.db.get("sample", p["sample_token"])["timestamp"] if p else -1 for p in prev],
                                  dtype=np.int64))

    # ------------------------------------------------------------------ one keyframe
    def mine(self, sample_token: str) -> list[MinedBox]:
        """Every kept box of one keyframe, in the sample's annotation order."""
        sample = self.db.get("sample", sample_token)
        chosen = self._selected(sample)
        if not chosen:
            return []
        anns = [a for a, _ in chosen]
        boxes = self._global_boxes(anns)
        sweeps = self.sweeps(sample)
        points, used = fuse_box_points(sweeps, boxes, self.spec.motion_compensation and self.config.sweeps > 1)
        ego = self.db.get("ego_pose", self.db.get("sample_data", sample["data"][self.spec.lidars[0]])["ego_pose_token"])
        distance = np.linalg.norm(boxes.centres[:, :2] - np.asarray(ego["translation"])[:2], axis=1)
        rotations = boxes.boxes().rotation_matrices
        mined = []
        for b, ((ann, label), pts) in enumerate(zip(chosen, points)):
            if len(pts) < self.config.min_points:
                continue
            local = (pts - boxes.centres[b]) @ rotations[b] if self.config.frame == "box" else pts - pts.mean(axis=0)
            meta = {"category": ann["category_name"], "label": label, "sample_token": sample_token,
                    "annotation_token": ann["token"], "instance_token": ann["instance_token"],
                    "scene_token": sample["scene_token"], "timestamp_us": int(sample["timestamp"]),
                    "visibility": ann.get("visibility_token", ""), "distance": round(float(distance[b]), 3),
                    "num_points": len(pts), "num_lidar_pts": int(ann["num_lidar_pts"]),
                    "sweeps": int(used[b]), "size_lwh": [round(float(v), 4) for v in boxes.sizes[b]],
                    "dataset": self.spec.name, "frame": self.config.frame}
            mined.append(MinedBox(ann["token"], label, ann["instance_token"], local.astype(np.float32), meta))
        if self.config.crops is not None and mined:
            self._add_crops(sample, mined)
        return mined

    def _add_crops(self, sample: dict, mined: list[MinedBox]) -> None:
        rules = self.config.crops
        eligible = {m.key: m for m in mined if m.meta["visibility"] in rules.visibilities}
        if not eligible:
            return
        cameras = sorted(ch for ch in sample["data"] if ch.startswith(self.spec.camera_prefix)
                         and (rules.cameras is None or ch in rules.cameras))
        for channel in cameras:
            path, boxes, intrinsic = self.db.get_sample_data(
                sample["data"][channel], box_vis_level=self._box_visibility.NONE, selected_anntokens=list(eligible))
            if not boxes:
                continue
            record = self.db.get("sample_data", sample["data"][channel])
            corners = np.stack([box.corners().T for box in boxes])
            rects, keep = crop_rects(corners, intrinsic, (record["width"], record["height"]), rules.min_size)
            if not keep.any():
                continue
            with Image.open(path) as image:
                image.load()
                for i in np.flatnonzero(keep):
                    eligible[boxes[i].token].crops.append(Crop(channel, sample["token"], boxes[i].token,
                                                               jpeg_crop(image, rects[i], rules.jpeg_quality)))
