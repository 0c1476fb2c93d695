"""Mine real object triplets from a nuScenes-format dataset into the object-set ``.npz`` format.

For every LIDAR_TOP keyframe (read through the devkit by :mod:`blendclip_ros.data.nuscenes_frames`,
optionally with previous sweeps, ego-motion compensated), the points inside each annotated box
are kept (plain points-in-box, no enlargement) when there are at least ``min_points`` of them.

* **Classes**: nuScenes categories map to the 10 detection classes (the devkit's mapping, with
  spaces instead of underscores); void categories (animal, personal mobility, stroller,
  wheelchair, debris, pushable/pullable, bicycle rack, ambulance, police, and the simulator's
  other vehicle / traffic sign) are dropped.
* **Multi-sweep motion**: with ``sweeps > 1`` a box with a devkit velocity ``v`` crops the
  sweep ``dt`` seconds older at ``centre - v dt`` and moves those points by ``+v dt``
  (constant velocity, constant heading); a box without a velocity estimate takes keyframe points only.
* **Frame**: ``"box"`` (default) stores ``R^T (p - c)``, the box frame of the simulated object
  sets (x forward, z up, box centre at the origin); ``"centred"`` stores ``p - mean(p)`` in the
  LiDAR axes (z up, heading kept), as BlendCLIP's release saves its crops.
* **Captions**: from an optional mapping (sample-annotation or instance token -> text), else
  ``"a point cloud of a {class}"``.

``distance`` is the box centre's horizontal range from the LiDAR; ``occlusion`` is NaN (nuScenes
visibility is defined on camera images, not on the LiDAR footprint).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from tqdm import tqdm

from blendclip_ros.data.nuscenes_frames import LIDAR_CHANNEL, nuscenes_frame, sample_tokens
from blendclip_ros.errors import ConfigError
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.crop import points_in_boxes
from blendclip_sim.object_sets import ObjectSet

if TYPE_CHECKING:
    from nuscenes.nuscenes import NuScenes

#: The nuScenes detection classes in BlendCLIP's label order.
DETECTION_CLASSES = ("barrier", "bicycle", "bus", "car", "construction vehicle", "motorcycle", "pedestrian",
                     "traffic cone", "trailer", "truck")
#: nuScenes evaluation ranges (m) per detection class.
DETECTION_RANGE = {"car": 50.0, "truck": 50.0, "bus": 50.0, "trailer": 50.0, "construction vehicle": 50.0,
                   "pedestrian": 40.0, "motorcycle": 40.0, "bicycle": 40.0, "traffic cone": 30.0, "barrier": 30.0}
DEFAULT_CAPTION = "a point cloud of a {}"
Frame = Literal["box", "centred"]


@dataclass(frozen=True)
class MiningConfig:
    """How boxes become triplets."""

    sweeps: int = 1
    min_points: int = 1
    frame: Frame = "box"
    motion_compensation: bool = True
    eval_ranges: bool = False  # keep only boxes within the class's nuScenes evaluation range
    caption_template: str = DEFAULT_CAPTION
    split: str = "train"  # written into the set's info

    def __post_init__(self) -> None:
        if not isinstance(self.sweeps, int) or self.sweeps < 1:
            raise ConfigError(f"sweeps: expected an integer >= 1, got {self.sweeps!r}")
        if not isinstance(self.min_points, int) or self.min_points < 1:
            raise ConfigError(f"min_points: expected an integer >= 1, got {self.min_points!r}")
        if self.frame not in ("box", "centred"):
            raise ConfigError(f"frame: expected 'box' or 'centred', got {self.frame!r}")
        if self.caption_template.count("{}") != 1:
            raise ConfigError(f"caption_template: needs exactly one '{{}}', got {self.caption_template!r}")


def detection_class(category: str) -> str | None:
    """Detection class of a nuScenes category name, or None for void categories."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    name = category_to_detection_name(category)
    return None if name is None else name.replace("_", " ")


def scene_sample_tokens(nusc: NuScenes, split: str | None = None, scenes: Iterable[str] | None = None) -> list[str]:
    """Keyframe tokens of the named ``scenes``, of a devkit split (``train``, ``val``, ``mini_val``...),
    or of every scene when both are None."""
    names = None if scenes is None else list(scenes)
    if split is not None and split != "all":
        from nuscenes.utils.splits import create_splits_scenes

        splits = create_splits_scenes()
        if split not in splits:
            raise ConfigError(f"split: unknown devkit split {split!r} (known: {sorted(splits)} or 'all')")
        in_split = set(splits[split])
        names = [s["name"] for s in nusc.scene if s["name"] in in_split and (names is None or s["name"] in names)]
        if not names:
            raise ConfigError(f"split: no scene of this dataset is in the devkit split {split!r}; "
                              "name the scenes instead")
    if names is None:
        return sample_tokens(nusc)
    return [token for name in names for token in sample_tokens(nusc, name)]


def mine_object_set(nusc: NuScenes, tokens: list[str], config: MiningConfig = MiningConfig(), *,
                    captions: Mapping[str, str] | None = None, progress: bool = False) -> ObjectSet:
    """Mine the boxes of the keyframes ``tokens`` into a ``lidar`` object set."""
    captions = captions or {}
    rows: dict[str, list] = {k: [] for k in ("points", "label", "instance", "distance", "size", "caption")}
    instance_numbers: dict[str, int] = {}
    for token in tqdm(tokens, desc="mine", unit="sample", disable=not progress):
        for row in _mine_sample(nusc, token, config, captions):
            for key, value in row.items():
                rows[key].append(value)
    labels = np.array(rows["label"], dtype=np.int64)
    per_class_count = np.zeros(len(DETECTION_CLASSES), dtype=np.int64)
    instance_ids = np.empty(len(labels), dtype=np.int64)
    for i, (label, instance) in enumerate(zip(labels, rows["instance"])):
        if instance not in instance_numbers:
            instance_numbers[instance] = int(label) * 1_000_000 + int(per_class_count[label])
            per_class_count[label] += 1
        instance_ids[i] = instance_numbers[instance]
    sizes = np.array([len(p) for p in rows["points"]], dtype=np.int64)
    return ObjectSet(
        "lidar", config.split, DETECTION_CLASSES,
        points=np.concatenate(rows["points"]).astype(np.float32) if rows["points"] else np.zeros((0, 3), np.float32),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        labels=labels, instance_ids=instance_ids, num_points=sizes,
        distance=np.array(rows["distance"], dtype=np.float32),
        occlusion=np.full(len(labels), np.nan, dtype=np.float32),
        box_size=np.array(rows["size"], dtype=np.float32).reshape(-1, 3),
        captions=np.array(rows["caption"], dtype=str),
        image_paths=np.array([""] * len(labels), dtype=str))


def _mine_sample(nusc: NuScenes, token: str, config: MiningConfig, captions: Mapping[str, str]) -> list[dict]:
    frame = nuscenes_frame(nusc, token, config.sweeps)
    classes = [detection_class(name) for name in frame.labels]
    keep = np.array([c is not None for c in classes], dtype=bool)
    boxes = frame.boxes
    distance = np.linalg.norm(boxes.centers[:, :2], axis=1)
    if config.eval_ranges:
        keep &= np.array([c is not None and d <= DETECTION_RANGE[c] for c, d in zip(classes, distance)])
    if not keep.any():
        return []
    chosen = np.flatnonzero(keep)
    boxes = boxes.subset(chosen)
    ann_of = {nusc.get("sample_annotation", a)["instance_token"]: a for a in nusc.get("sample", token)["anns"]}
    ann_tokens = [ann_of[frame.ids[i]] for i in chosen]
    xyz = frame.points[:, :3].astype(np.float64)
    if config.sweeps > 1 and config.motion_compensation:
        crops = _motion_compensated_crops(nusc, token, xyz, frame.points[:, 5], boxes, ann_tokens)
    else:
        crops = [xyz[i] for i in points_in_boxes(xyz, boxes)]
    rows = []
    for j, (i, crop) in enumerate(zip(chosen, crops)):
        if len(crop) < config.min_points:
            continue
        if config.frame == "box":
            local = (crop - boxes.centers[j]) @ boxes.rotation_matrices[j]
        else:
            local = crop - crop.mean(axis=0)
        name = classes[i]
        text = captions.get(ann_tokens[j]) or captions.get(frame.ids[i]) or config.caption_template.format(name)
        rows.append({"points": local.astype(np.float32), "label": DETECTION_CLASSES.index(name),
                     "instance": frame.ids[i], "distance": float(distance[i]), "size": boxes.sizes[j],
                     "caption": text})
    return rows


def _motion_compensated_crops(nusc: NuScenes, token: str, xyz: np.ndarray, lag: np.ndarray, boxes: Boxes,
                              ann_tokens: list[str]) -> list[np.ndarray]:
    """Per box, keyframe points in the box plus older-sweep points in the box moved back by ``v dt``."""
    sample_data = nusc.get("sample_data", nusc.get("sample", token)["data"][LIDAR_CHANNEL])
    rotation = (_rotation(nusc.get("ego_pose", sample_data["ego_pose_token"]))
                @ _rotation(nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])))
    velocity = np.array([nusc.box_velocity(a) for a in ann_tokens], dtype=np.float64).reshape(-1, 3) @ rotation
    crops: list[list[np.ndarray]] = [[] for _ in range(len(boxes))]
    for dt in np.unique(lag):
        rows = np.flatnonzero(lag == dt)
        shift = velocity * float(dt)
        centres = boxes.centers - np.nan_to_num(shift, nan=0.0)
        if dt > 0:  # boxes without a velocity take no points from older sweeps
            centres = np.where(np.isfinite(shift).all(1, keepdims=True), centres, np.nan)
        moved = Boxes(centres, boxes.sizes, boxes.quaternions)
        for b, index in enumerate(points_in_boxes(xyz[rows], moved)):
            if len(index):
                crops[b].append(xyz[rows[index]] + (shift[b] if dt > 0 else 0.0))
    return [np.concatenate(c) if c else np.zeros((0, 3)) for c in crops]


def _rotation(record: dict) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    w, x, y, z = record["rotation"]
    return Rotation.from_quat([x, y, z, w]).as_matrix()
