"""The two object sets of the experiment: synthetic CAD clouds and simulated LiDAR crops.

Both are built from the same seeded instances (``object_seed(seed, class, k)``); instances
``0..n_train-1`` of every class are the training split and the rest the held-out test split, in
both domains. One ``.npz`` per (domain, split); the format is documented in docs/simulation.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from blendclip_ros.errors import ConfigError, PointFileError
from .lidar import BeamPattern, Instance, LidarSimulator, hdl32e
from .mesh import rot_z
from .objects import CLASS_NAMES, SimObject, make_object, object_seed
from .scene import LIDAR_MOUNT, points_in_box_mask
from .surface import sample_surface

FORMAT_VERSION = 1
#: nuScenes/TruckScenes-style evaluation ranges (m): LiDAR samples are placed within these.
CLASS_RANGE = {"car": 50.0, "truck": 50.0, "bus": 50.0, "trailer": 50.0, "construction vehicle": 50.0,
               "other vehicle": 50.0, "pedestrian": 40.0, "motorcycle": 40.0, "bicycle": 40.0, "animal": 40.0,
               "traffic cone": 30.0, "barrier": 30.0, "traffic sign": 30.0}
OCCLUDERS = ("car", "pedestrian", "traffic cone", "barrier", "bicycle", "truck")
_ARRAYS = ("points", "offsets", "labels", "instance_ids", "num_points", "distance", "occlusion", "box_size",
           "captions", "image_paths", "class_names")


@dataclass(frozen=True)
class ObjectSet:
    """Objects of one domain and split; object i's points are ``points[offsets[i]:offsets[i + 1]]``.

    Points are xyz float32 in the object's box frame (box centre at the origin, x forward, z up).
    ``distance`` is the sensor range in metres (NaN for CAD), ``occlusion`` the hidden fraction of
    the object's LiDAR footprint (0 for CAD), ``image_paths`` the (optional, here empty) image slot.
    """

    domain: str
    split: str
    class_names: tuple[str, ...]
    points: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    instance_ids: np.ndarray
    num_points: np.ndarray
    distance: np.ndarray
    occlusion: np.ndarray
    box_size: np.ndarray
    captions: np.ndarray
    image_paths: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def cloud(self, i: int) -> np.ndarray:
        return self.points[self.offsets[i]:self.offsets[i + 1]]

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        info = json.dumps({"format_version": FORMAT_VERSION, "domain": self.domain, "split": self.split})
        with path.open("wb") as f:
            np.savez(f, info=np.array(info), **{k: np.asarray(getattr(self, k)) for k in _ARRAYS})
        return path


def load_object_set(path: Path | str) -> ObjectSet:
    """Read a set written by :meth:`ObjectSet.save`, checking its layout."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
            arrays = {k: z[k] for k in _ARRAYS}
    except (OSError, KeyError, ValueError) as exc:
        raise PointFileError(f"{path}: not an object-set .npz ({exc})") from exc
    if info.get("format_version") != FORMAT_VERSION:
        raise PointFileError(f"{path}: format_version {info.get('format_version')} != {FORMAT_VERSION}")
    n = len(arrays["labels"])
    off = arrays["offsets"]
    if off.shape != (n + 1,) or off[0] != 0 or off[-1] != len(arrays["points"]) or np.any(np.diff(off) < 0):
        raise PointFileError(f"{path}: offsets do not partition the points")
    return ObjectSet(info["domain"], info["split"], tuple(str(c) for c in arrays.pop("class_names")), **arrays)


def _instances(seed: int, n_per_class: int, classes: tuple[str, ...]):
    for c, name in enumerate(classes):
        for k in range(n_per_class):
            yield c, k, make_object(name, object_seed(seed, name, k))


def _assemble(domain: str, split: str, classes: tuple[str, ...], rows: list[dict]) -> ObjectSet:
    clouds = [r["points"] for r in rows]
    sizes = np.array([len(p) for p in clouds], dtype=np.int64)
    return ObjectSet(
        domain, split, classes,
        points=np.concatenate(clouds).astype(np.float32) if clouds else np.zeros((0, 3), np.float32),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        labels=np.array([r["label"] for r in rows], dtype=np.int64),
        instance_ids=np.array([r["instance_id"] for r in rows], dtype=np.int64),
        num_points=sizes,
        distance=np.array([r["distance"] for r in rows], dtype=np.float32),
        occlusion=np.array([r["occlusion"] for r in rows], dtype=np.float32),
        box_size=np.array([r["size"] for r in rows], dtype=np.float32).reshape(-1, 3),
        captions=np.array([r["caption"] for r in rows], dtype=str),
        image_paths=np.array(["" for _ in rows], dtype=str),
    )


def lidar_view(obj: SimObject, distance: float, azimuth: float, yaw: float, rng: np.random.Generator,
               pattern: BeamPattern, occluders: list[tuple[SimObject, np.ndarray, float]] = (),
               mount_height: float = float(LIDAR_MOUNT[2])) -> tuple[np.ndarray, float]:
    """Scan one object (plus optional occluders: object, centre, yaw) and crop it by its box.

    The sensor sits ``mount_height`` metres above the ground (default: nuScenes LIDAR_TOP).
    Returns the points in the box frame (N, 3) and the occluded fraction of its footprint.
    Only the azimuth columns around the object are cast.
    """
    sensor = np.array([0.0, 0.0, mount_height])
    centre = np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), obj.size[2] / 2])
    target = Instance.from_mesh(obj.mesh, 0).placed(rot_z(yaw), centre)
    others = [Instance.from_mesh(o.mesh, 1 + i).placed(rot_z(oy), oc) for i, (o, oc, oy) in enumerate(occluders)]
    half = np.arcsin(min(1.0, np.linalg.norm(obj.size[:2]) / 2 / distance)) + np.radians(1.0)
    sweep = LidarSimulator(pattern).scan([target] + others, np.eye(3), sensor, seed=rng,
                                         azimuth_range=(azimuth - half, 2 * half))
    pts = sweep.points
    inside = points_in_box_mask(pts, centre - sensor, obj.size, yaw)
    local = (pts[inside, :3].astype(np.float64) - (centre - sensor)) @ rot_z(yaw)
    own = int(sweep.own_hits[0])
    return local.astype(np.float32), (1.0 - sweep.visible_hits[0] / own) if own else 1.0


def _occluders(rng: np.random.Generator, distance: float, azimuth: float, seed: int) -> list:
    if distance < 8.0 or rng.random() >= 0.35:
        return []
    name = str(rng.choice(OCCLUDERS))
    occ = make_object(name, object_seed(seed + 7_919, name, int(rng.integers(1 << 30))))
    d = rng.uniform(4.0, distance - 3.5)
    a = azimuth + rng.uniform(-1.0, 1.0) * np.arctan2(1.5, distance)
    return [(occ, np.array([d * np.cos(a), d * np.sin(a), occ.size[2] / 2]), float(rng.uniform(-np.pi, np.pi)))]


def build_object_sets(seed: int = 0, n_per_class: int = 100, test_fraction: float = 0.2, cad_points: int = 2048,
                      lidar_views: int = 1, classes: tuple[str, ...] = CLASS_NAMES, normal_noise: float = 0.0,
                      pattern: BeamPattern | None = None, min_points: int = 1,
                      mount_height: float = float(LIDAR_MOUNT[2]), lidar_splits: tuple[str, ...] = ("train", "test"),
                      progress: bool = False) -> dict[tuple[str, str], ObjectSet]:
    """Build the CAD and LiDAR sets; keys are (domain, split) with domain "cad"/"lidar", split "train"/"test".

    LiDAR views are placed uniformly in range up to the class's evaluation range, at a random
    azimuth and heading, a third of them behind a random occluder; views with fewer than
    ``min_points`` points are skipped (BlendCLIP keeps boxes with >= 1 point). ``pattern`` and
    ``mount_height`` choose the sensor; LiDAR views are cast only for the splits in
    ``lidar_splits`` (the other LiDAR sets are empty). Each instance draws from its own
    generator, so a split's views do not depend on which other splits are cast.
    """
    if n_per_class < 2 or not 0 < test_fraction < 1:
        raise ConfigError("n_per_class must be >= 2 and test_fraction in (0, 1)")
    if cad_points < 1 or lidar_views < 0:
        raise ConfigError("cad_points must be >= 1 and lidar_views >= 0")
    if not 0 < mount_height < 10 or not set(lidar_splits) <= {"train", "test"}:
        raise ConfigError("mount_height must be in (0, 10) m and lidar_splits a subset of ('train', 'test')")
    unknown = [c for c in classes if c not in CLASS_NAMES]
    if unknown:
        raise ConfigError(f"classes: unknown {unknown}")
    pattern = pattern or hdl32e()
    n_test = max(1, int(round(n_per_class * test_fraction)))
    rows = {(d, s): [] for d in ("cad", "lidar") for s in ("train", "test")}
    total = len(classes) * n_per_class
    for c, k, obj in tqdm(_instances(seed, n_per_class, classes), total=total, disable=not progress, unit="object"):
        split = "test" if k >= n_per_class - n_test else "train"
        rng = np.random.default_rng([seed, c, k, 1])
        base = {"label": c, "instance_id": c * 1_000_000 + k, "size": obj.size, "caption": obj.caption}
        pts, _ = sample_surface(obj.mesh, cad_points, rng, normal_noise)
        rows[("cad", split)].append({**base, "points": pts, "distance": np.nan, "occlusion": 0.0})
        for _ in range(lidar_views if split in lidar_splits else 0):
            distance = float(rng.uniform(3.0 + obj.size[:2].max() / 2, CLASS_RANGE[classes[c]]))
            azimuth = float(rng.uniform(-np.pi, np.pi))
            occ = _occluders(rng, distance, azimuth, seed)
            pts, occlusion = lidar_view(obj, distance, azimuth, float(rng.uniform(-np.pi, np.pi)), rng, pattern, occ,
                                        mount_height)
            if len(pts) >= min_points:
                rows[("lidar", split)].append({**base, "points": pts, "distance": distance, "occlusion": occlusion})
    return {key: _assemble(key[0], key[1], tuple(classes), r) for key, r in rows.items()}


def write_object_sets(out_dir: Path | str, **kwargs) -> dict[tuple[str, str], Path]:
    """Build the sets and write ``<out_dir>/<domain>_<split>.npz``; returns the paths."""
    out_dir = Path(out_dir)
    return {key: s.save(out_dir / f"{key[0]}_{key[1]}.npz") for key, s in build_object_sets(**kwargs).items()}
