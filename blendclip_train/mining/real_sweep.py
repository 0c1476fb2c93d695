"""Mine the one real nuScenes frame of an mmdet3d v1.1 info file (no devkit tables) into a shard.

The frame has a keyframe sweep, boxes in the LiDAR frame, and six cameras with ``lidar2cam`` and
``cam2img``, but no sweeps, ego poses of other sweeps, instance tokens or visibility tokens, so:

* points: the keyframe only (``sweeps`` = 1), plain points-in-box;
* evaluation ranges: measured from the ego origin (``lidar2ego``), as the devkit does; the
  0-point rule uses the info file's ``num_lidar_pts``; bike racks are not annotated there;
* **visibility replacement**: a box counts as "visibility 4" in a camera when at most 20 % of its
  projected rectangle is covered by the rectangles of nearer annotated boxes (z-buffer of the
  projected boxes, :func:`~blendclip_train.mining.crops.covered_fraction`); the other crop rules
  (fully inside the image, at least ``min_size`` px) are the same;
* pairing: each triplet gets its own crops (one frame: no other keyframes of the instance).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from blendclip_ros.data.mmdet3d_info import load_mmdet3d_frame
from blendclip_ros.errors import PointFileError
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.crop import points_in_boxes
from blendclip_train.captioning import Captioner
from blendclip_train.shards import write_shard

from .crops import box_corners, covered_fraction, crop_rects, jpeg_crop
from .datasets import NUSCENES
from .keyframes import MiningConfig

VISIBLE_FRACTION = 0.8  # nuScenes visibility token 4 = 80-100 % visible


def _info(info_path: Path) -> dict[str, Any]:
    try:
        with info_path.open("rb") as f:
            return pickle.load(f)["data_list"][0]
    except (OSError, pickle.UnpicklingError, KeyError, IndexError, TypeError) as exc:
        raise PointFileError(f"{info_path}: not an mmdet3d v1.1 info file ({exc})") from exc


def camera_crops(entry: dict[str, Any], folder: Path, boxes: Boxes, min_size: int,
                 quality: int = 90) -> tuple[list[list[tuple[str, bytes]]], np.ndarray]:
    """Per box, its (camera, JPEG) crops, and per box the best estimated visible fraction over cameras."""
    crops: list[list[tuple[str, bytes]]] = [[] for _ in range(len(boxes))]
    best = np.zeros(len(boxes))
    corners = box_corners(boxes.centers, boxes.sizes, boxes.rotation_matrices)
    for channel in sorted(entry["images"]):
        cam = entry["images"][channel]
        lidar2cam = np.asarray(cam["lidar2cam"], dtype=np.float64)
        in_cam = corners @ lidar2cam[:3, :3].T + lidar2cam[:3, 3]
        path = folder / Path(cam["img_path"]).name
        with Image.open(path) as image:
            image.load()
            size = image.size
            rects, keep = crop_rects(in_cam, cam["cam2img"], size, min_size)
            front = (in_cam[..., 2] > 0.1).all(axis=1)
            rough, _ = crop_rects(in_cam, cam["cam2img"], size, 0)  # every box in front paints its rectangle
            depth = np.where(front, in_cam[..., 2].min(axis=1), np.inf)
            order = np.flatnonzero(front)
            visible = np.zeros(len(boxes))
            visible[order] = 1.0 - covered_fraction(rough[order], depth[order], size)
            best = np.maximum(best, np.where(keep, visible, 0.0))
            for b in np.flatnonzero(keep & (visible >= VISIBLE_FRACTION)):
                crops[b].append((channel, jpeg_crop(image, rects[b], quality)))
    return crops, best


def mine_info_file(info_path: Path | str, out: Path | str, config: MiningConfig, captioner: Captioner) -> dict:
    """Mine the frame into ``<out>/<token>.h5``; returns counts, crops per class and camera."""
    info_path, out = Path(info_path), Path(out)
    frame = load_mmdet3d_frame(info_path)
    entry = _info(info_path)
    labels = [None if name == "ignore" else name.replace("_", " ") for name in frame.labels]
    boxes = Boxes.from_mmdet3d(frame.boxes)
    lidar2ego = np.asarray(entry["lidar_points"].get("lidar2ego", np.eye(4)), dtype=np.float64)
    centres_ego = boxes.centers @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
    distance = np.linalg.norm(centres_ego[:, :2], axis=1)
    keep = np.array([label is not None for label in labels])
    if config.eval_set:
        ranges = NUSCENES.class_ranges()
        keep &= np.array([lab is not None and d < ranges[lab] for lab, d in zip(labels, distance)])
        keep &= frame.num_lidar_pts > 0
    xyz = frame.points[:, :3].astype(np.float64)
    inside = points_in_boxes(xyz, boxes)
    crops, visible = camera_crops(entry, info_path.parent, boxes, config.crops.min_size) if config.crops \
        else ([[] for _ in range(len(boxes))], np.full(len(boxes), np.nan))
    from blendclip_train.shards import ShardSample

    samples, per_class, per_camera = [], {}, {}
    rotations = boxes.rotation_matrices
    for b in np.flatnonzero(keep):
        pts = xyz[inside[b]]
        if len(pts) < config.min_points:
            continue
        local = (pts - boxes.centers[b]) @ rotations[b] if config.frame == "box" else pts - pts.mean(axis=0)
        own = crops[b][:config.max_images]
        texts = captioner.caption_many([j for _, j in own], [labels[b]] * len(own)) if own else \
            [captioner.fallback(labels[b])]
        for channel, _ in own:
            per_class[labels[b]] = per_class.get(labels[b], 0) + 1
            per_camera[channel] = per_camera.get(channel, 0) + 1
        meta = {"category": labels[b], "label": labels[b], "sample_token": frame.token,
                "annotation_token": f"{frame.token}_{b}", "instance_token": "", "scene": info_path.stem,
                "timestamp_us": frame.timestamp_us, "visibility": "",
                "visible_fraction_est": None if np.isnan(visible[b]) else round(float(visible[b]), 3),
                "distance": round(float(distance[b]), 3), "num_points": len(pts),
                "num_lidar_pts": int(frame.num_lidar_pts[b]), "sweeps": 1,
                "size_lwh": [round(float(v), 4) for v in boxes.sizes[b]], "dataset": "mmdet3d",
                "frame": config.frame, "cameras": [c for c, _ in own], "own_crops": len(crops[b]),
                "captioner": captioner.name}
        samples.append(ShardSample(f"{frame.token}_{b}", local.astype(np.float32), labels[b], texts,
                                   [j for _, j in own], meta))
    write_shard(out / f"{frame.token}.h5", samples, domain="real", frame=config.frame,
                info={"dataset": "mmdet3d", "source": info_path.name})
    return {"triplets": len(samples), "images": sum(len(s.images) for s in samples), "boxes": len(boxes),
            "crops_per_class": per_class, "crops_per_camera": per_camera}
