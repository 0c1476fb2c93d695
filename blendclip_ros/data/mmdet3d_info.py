"""Read an mmdet3d v1.1 nuScenes info file (plain pickle + numpy, no mmdet3d needed)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PointFileError


@dataclass(frozen=True)
class LidarFrame:
    """One LiDAR keyframe with its annotated boxes, all in the LiDAR frame.

    ``boxes`` rows are ``[x, y, z_centre, l, w, h, yaw]`` (yaw counter-clockwise from +x),
    so the vision_msgs size of a box is ``[l, w, h]``.
    """

    token: str
    timestamp_us: int
    points: np.ndarray  # (N, D) float32: x, y, z, intensity, ring
    boxes: np.ndarray  # (M, 7) float64
    labels: list[str]  # class name per box ("ignore" for label -1)
    num_lidar_pts: np.ndarray  # (M,) int64, from the annotations
    lidar_path: Path


def load_mmdet3d_frame(info_path: Path | str, index: int = 0) -> LidarFrame:
    """Load frame ``index`` of an mmdet3d info pickle and its ``.pcd.bin`` beside it."""
    info_path = Path(info_path)
    try:
        with info_path.open("rb") as f:
            info = pickle.load(f)
        categories = {v: k for k, v in info["metainfo"]["categories"].items()}
        entry = info["data_list"][index]
    except (OSError, pickle.UnpicklingError, KeyError, IndexError, TypeError) as exc:
        raise PointFileError(f"{info_path}: not an mmdet3d v1.1 info file ({exc})") from exc
    lidar = entry["lidar_points"]
    lidar_path = info_path.parent / Path(lidar["lidar_path"]).name
    dims = int(lidar.get("num_pts_feats", 5))
    raw = np.fromfile(lidar_path, dtype=np.float32)
    if raw.size % dims:
        raise PointFileError(f"{lidar_path}: {raw.size} floats is not a multiple of {dims}")
    instances = entry["instances"]
    boxes = np.array([inst["bbox_3d"] for inst in instances], dtype=np.float64).reshape(-1, 7)
    labels = [categories.get(int(inst["bbox_label_3d"]), "ignore") for inst in instances]
    npts = np.array([int(inst["num_lidar_pts"]) for inst in instances], dtype=np.int64)
    return LidarFrame(
        token=str(entry.get("token", "")),
        timestamp_us=int(round(float(entry["timestamp"]) * 1e6)),
        points=raw.reshape(-1, dims),
        boxes=boxes,
        labels=labels,
        num_lidar_pts=npts,
        lidar_path=lidar_path,
    )
