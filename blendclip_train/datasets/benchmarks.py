"""Evaluation sets in their published layouts: ``blendclip-evaluate --data FORMAT:PATH``.

==================  ==============================================================================
format              what is read
==================  ==============================================================================
``modelnet40``      a folder ``modelnet40_normal_resampled`` (or a file in it): the release's/ULIP's
                    ``modelnet40_test_8192pts_fps.dat`` (pickle ``[clouds (8192, 6), labels int32[1]]``)
                    when present, else the text format (``modelnet40_shape_names.txt``,
                    ``modelnet40_test.txt``, ``<class>/<id>.txt`` rows ``x,y,z,nx,ny,nz``), else
                    OpenShape's ``test_pc.npy`` + ``test_split.json``. Normals/colour dropped.
``scanobjectnn``    an ``.h5`` file (``data`` (N, 2048, 3), ``label`` (N,)), a folder holding the
                    ``h5_files`` tree (variant by ``--scanobjectnn-variant``, default OBJ_ONLY as the
                    release), or OpenShape's ``xyz_label.npy``.
``objaverse_lvis``  OpenShape's split (``lvis.json``: ``[{uid, category, data_path}]``) or ULIP's /
                    the release's (``lvis.json``: uid -> npy path, with ``objaverse_lvis_metadata.json``);
                    per-object ``.npy`` dicts with ``xyz`` (and ``rgb``).
``nuscenes``,       mined shard folders (``blendclip-mine``): ``labels``; ``meta.distance`` (m) when
``truckscenes``     present; unlabelled/void samples skipped.
``shards``          any shard folder (labels from the shards).
``mmdet3d``         an mmdet3d v1.1 info ``.pkl`` beside its ``.pcd.bin`` sweeps: one sample per
                    annotated box with >= 1 point (points in the box, sensor axes; ``ignore`` boxes
                    skipped); distance = the box centre's horizontal range from the ego origin.
``npz``             the project's object-set ``.npz`` (``blendclip-simulate objects``); a bare path
                    ending in ``.npz`` means this.
==================  ==============================================================================

The synthetic benchmarks are y-up and are rotated to z-up here (:data:`~.common.Y_UP_TO_Z_UP`).
Each set carries the release's protocol: its prompt set (64 ULIP templates for the synthetic
benchmarks, the single outdoor template for driving sets), its number of points, how clouds above
it are reduced (farthest point sampling, or a random subset for Objaverse-LVIS) and the order of
reduction and normalisation (centre on the mean, farthest point at radius 1): after sampling for
the synthetic benchmarks (ULIP's ``pc_normalize``), before it for LiDAR crops (the release's
crops); see :meth:`EvalSet.clouds`.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from blendclip_ros.errors import ConfigError, PointFileError
from blendclip_ros.geometry.preprocess import (
    RELEASE_CONVENTION,
    InputConvention,
    preprocess_crops,
)

from ..shards import ShardSet
from .common import Y_UP_TO_Z_UP, split_spec, y_up_to_z_up
from .synthetic import load_object_dict, resolve_data_path

EVAL_FORMATS = ("modelnet40", "scanobjectnn", "objaverse_lvis", "nuscenes", "truckscenes", "shards", "mmdet3d",
                "npz")
#: ScanObjectNN variants as the papers name them -> file under ``h5_files/``.
SCANOBJECTNN_VARIANTS = {
    "OBJ_ONLY": "main_split_nobg/test_objectdataset.h5",
    "OBJ_BG": "main_split/test_objectdataset.h5",
    "PB_T25": "main_split/test_objectdataset_augmented25_norot.h5",
    "PB_T25_R": "main_split/test_objectdataset_augmented25rot.h5",
    "PB_T50_R": "main_split/test_objectdataset_augmentedrot.h5",
    "PB_T50_RS": "main_split/test_objectdataset_augmentedrot_scale75.h5",
}
SCANOBJECTNN_CLASSES = ("bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
                        "pillow", "sink", "sofa", "toilet")
SKIPPED_LABELS = ("", "void", "ignore")


@dataclass
class EvalSet:
    """Labelled clouds of one benchmark plus the release's protocol for it.

    ``points``/``offsets`` hold the raw clouds (z-up xyz, as read); ``labels`` index
    ``class_names``; ``distance`` is metres from the sensor (NaN where unknown).
    """

    name: str
    class_names: list[str]
    labels: np.ndarray
    points: np.ndarray
    offsets: np.ndarray
    prompts: str
    num_points: int
    sampling: str = "fps"
    order: str = "sample_then_normalize"
    distance: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def point_counts(self) -> np.ndarray:
        """Points per object as read (before sampling)."""
        return np.diff(self.offsets)

    def clouds(self, seed: int = 0, num_points: int | None = None,
               convention: InputConvention = RELEASE_CONVENTION) -> list[np.ndarray]:
        """The encoder inputs: reduced to ``num_points`` (FPS start / random subset drawn with ``seed``)
        and normalised in this benchmark's order, otherwise as ``convention`` (a model family's) says."""
        index = [np.arange(a, b) for a, b in zip(self.offsets[:-1], self.offsets[1:])]
        count = num_points or self.num_points
        return preprocess_crops(self.points, index, max_points=count, method=self.sampling, seed=seed,
                                convention=convention.replace(num_points=count, order=self.order))


def parse_data_spec(spec: str | Path) -> tuple[str, Path]:
    """``FORMAT:PATH``; a bare path ending in ``.npz`` is ``npz:PATH``."""
    text = str(spec)
    if ":" not in text and text.endswith(".npz"):
        return "npz", Path(text)
    return split_spec(text, EVAL_FORMATS)


def load_eval_set(spec: str | Path, *, scanobjectnn_variant: str = "OBJ_ONLY") -> EvalSet:
    """Read one evaluation set named by ``FORMAT:PATH``."""
    fmt, path = parse_data_spec(spec)
    if not path.exists():
        raise PointFileError(f"{path}: no such file or folder")
    if fmt == "modelnet40":
        return _modelnet40(path)
    if fmt == "scanobjectnn":
        return _scanobjectnn(path, scanobjectnn_variant)
    if fmt == "objaverse_lvis":
        return _objaverse_lvis(path)
    if fmt == "mmdet3d":
        return _mmdet3d(path)
    if fmt == "npz":
        return _npz(path)
    return _shards(path, fmt)


def _build(name: str, clouds: list[np.ndarray], names: list[str], class_names: list[str] | None, *,
           prompts: str, num_points: int, sampling: str = "fps", order: str = "sample_then_normalize",
           distance: list[float] | None = None,
           skipped: Counter[str] | None = None, info: dict[str, Any] | None = None) -> EvalSet:
    """An :class:`EvalSet` from per-object clouds and class names (skipping empty clouds and void labels)."""
    skipped = skipped if skipped is not None else Counter()
    keep = []
    for i, (cloud, label) in enumerate(zip(clouds, names)):
        if label in SKIPPED_LABELS:
            skipped[f"label {label!r}" if label else "unlabelled"] += 1
        elif len(cloud) == 0:
            skipped["no points"] += 1
        else:
            keep.append(i)
    if not keep:
        raise PointFileError(f"{name}: no labelled objects with points")
    ordered = list(class_names) if class_names is not None else []
    ordered += sorted({names[i] for i in keep} - set(ordered))
    index = {n: k for k, n in enumerate(ordered)}
    kept = [np.asarray(clouds[i], dtype=np.float32)[:, :3] for i in keep]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in kept])]).astype(np.int64)
    dist = None if distance is None else np.asarray([distance[i] for i in keep], dtype=np.float64)
    return EvalSet(name=name, class_names=ordered, labels=np.array([index[names[i]] for i in keep], dtype=np.int64),
                   points=np.concatenate(kept), offsets=offsets, prompts=prompts, num_points=num_points,
                   sampling=sampling, order=order, distance=dist, skipped=dict(skipped), info=dict(info or {}))


def _lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise PointFileError(f"{path}: cannot read ({exc.strerror or exc})") from None


SYNTHETIC_INFO = {"source_up_axis": "y", "axis_conversion": Y_UP_TO_Z_UP}


# ------------------------------------------------------------------------------------------ ModelNet40


def _modelnet40(path: Path) -> EvalSet:
    root = path if path.is_dir() else path.parent
    names_file = root / "modelnet40_shape_names.txt"
    shape_names = _lines(names_file) if names_file.is_file() else None
    dat = path if path.is_file() and path.suffix == ".dat" else root / "modelnet40_test_8192pts_fps.dat"
    common = {"prompts": "modelnet40_64", "num_points": 8192, "info": SYNTHETIC_INFO}
    if dat.is_file():
        try:
            with dat.open("rb") as f:
                clouds, labels = pickle.load(f)
        except (OSError, pickle.UnpicklingError, ValueError, EOFError) as exc:
            raise PointFileError(f"{dat}: not ULIP's ModelNet40 pickle [clouds, labels] ({exc})") from None
        names = shape_names or _shipped_labels("modelnet40_64")
        return _build(f"modelnet40:{dat.name}", [y_up_to_z_up(np.asarray(c)[:, :3]) for c in clouds],
                      [names[int(np.asarray(label).reshape(-1)[0])] for label in labels], names, **common)
    if (root / "modelnet40_test.txt").is_file():
        if shape_names is None:
            raise PointFileError(f"{names_file}: missing (the text format needs the class list)")
        clouds, names = [], []
        for shape_id in _lines(root / "modelnet40_test.txt"):
            cls = shape_id.rsplit("_", 1)[0]
            file = root / cls / f"{shape_id}.txt"
            try:
                rows = np.array(file.read_text().replace(",", " ").split(), dtype=np.float32).reshape(-1, 6)
            except (OSError, ValueError) as exc:
                raise PointFileError(f"{file}: expected rows x,y,z,nx,ny,nz ({exc})") from None
            clouds.append(y_up_to_z_up(rows[:, :3]))
            names.append(cls)
        return _build("modelnet40:text", clouds, names, shape_names, **common)
    if (root / "test_pc.npy").is_file() and (root / "test_split.json").is_file():
        pcs = np.load(root / "test_pc.npy", allow_pickle=True)
        split = json.loads((root / "test_split.json").read_text())
        return _build("modelnet40:openshape", [y_up_to_z_up(np.asarray(p["xyz"])) for p in pcs],
                      [entry["category"] for entry in split], shape_names, **{**common, "num_points": 10000})
    raise PointFileError(f"{path}: no modelnet40_test_8192pts_fps.dat, modelnet40_test.txt or test_pc.npy")


def _shipped_labels(prompt_set: str) -> list[str]:
    from blendclip_ros.text.prompts import load_prompt_set

    return load_prompt_set(prompt_set).labels


# ---------------------------------------------------------------------------------------- ScanObjectNN


def _scanobjectnn(path: Path, variant: str) -> EvalSet:
    variant = variant.upper()
    if variant not in SCANOBJECTNN_VARIANTS:
        raise ConfigError(f"scanobjectnn variant: expected one of {', '.join(SCANOBJECTNN_VARIANTS)}, got {variant!r}")
    if path.is_dir():
        root = path / "h5_files" if (path / "h5_files").is_dir() else path
        candidates = [root / SCANOBJECTNN_VARIANTS[variant], path / "xyz_label.npy"]
        path = next((c for c in candidates if c.is_file()), candidates[0])
        if not path.is_file():
            raise PointFileError(f"{root}: no {SCANOBJECTNN_VARIANTS[variant]} (variant {variant}) nor xyz_label.npy")
    else:
        variant = next((v for v, rel in SCANOBJECTNN_VARIANTS.items()
                        if path.as_posix().endswith(rel)), None) or next(
            (v for v, rel in SCANOBJECTNN_VARIANTS.items() if path.name == Path(rel).name), "unknown")
    common = {"prompts": "scanobjectnn_64", "num_points": 2048}
    if path.suffix == ".npy":
        data = np.load(path, allow_pickle=True).item()
        clouds, labels = list(data["xyz"]), np.asarray(data["label"]).reshape(-1)
        name = "scanobjectnn:openshape"
    else:
        try:
            with h5py.File(path, "r") as f:
                clouds, labels = list(f["data"][()]), f["label"][()].reshape(-1)
        except (OSError, KeyError) as exc:
            raise PointFileError(f"{path}: not a ScanObjectNN h5 file with 'data' and 'label' ({exc})") from None
        name = f"scanobjectnn:{variant}"
    return _build(name, [y_up_to_z_up(np.asarray(c)[:, :3]) for c in clouds],
                  [SCANOBJECTNN_CLASSES[int(label)] for label in labels], list(SCANOBJECTNN_CLASSES),
                  info={**SYNTHETIC_INFO, "variant": variant, "file": path.name}, **common)


# -------------------------------------------------------------------------------------- Objaverse-LVIS


def _objaverse_lvis(path: Path) -> EvalSet:
    split_file = path / "lvis.json" if path.is_dir() else path
    try:
        split = json.loads(split_file.read_text())
    except (OSError, ValueError) as exc:
        raise PointFileError(f"{split_file}: cannot read the Objaverse-LVIS split ({exc})") from None
    base = split_file.parent
    class_names = None
    if isinstance(split, dict):  # ULIP / the release: uid -> npy path, classes in the metadata file
        meta_file = base / "objaverse_lvis_metadata.json"
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError) as exc:
            raise PointFileError(f"{meta_file}: needed beside a uid -> path lvis.json ({exc})") from None
        entries = [(uid, rel, meta["value_to_key_mapping"][uid]) for uid, rel in split.items()]
        class_names = list(meta.get("all_keys") or [])
    else:  # OpenShape: [{uid, category, data_path}], classes sorted
        entries = [(e["uid"], e["data_path"], e["category"]) for e in split]
    skipped: Counter[str] = Counter()
    clouds, names = [], []
    for _uid, rel, category in entries:
        file = resolve_data_path(rel, base)
        if file is None:
            skipped["missing object file"] += 1
            continue
        clouds.append(y_up_to_z_up(np.asarray(load_object_dict(file)["xyz"])[:, :3]))
        names.append(category)
    return _build("objaverse_lvis", clouds, names, class_names or None, prompts="objaverse_lvis_64",
                  num_points=8192, sampling="random", skipped=skipped, info=SYNTHETIC_INFO)


# ------------------------------------------------------------------------------- shards (mined sets)


def _shards(path: Path, fmt: str) -> EvalSet:
    data = ShardSet(path)
    clouds, names, distance = [], [], []
    for sample in data:
        clouds.append(sample.points[:, :3])
        names.append(sample.label)
        distance.append(float(sample.meta.get("distance", np.nan)))
    prompts = {"nuscenes": "nuscenes", "truckscenes": "truckscenes"}.get(fmt, "nuscenes")
    frames = sorted({str(r.attrs.get("frame", "")) for r in data.readers})
    return _build(f"{fmt}:{path.name}", clouds, names, _shipped_labels(prompts) if fmt != "shards" else None,
                  prompts=prompts, num_points=8192, order="normalize_then_sample", distance=distance,
                  info={"frame": frames})


# --------------------------------------------------------------------------------------------- mmdet3d


def _mmdet3d(path: Path) -> EvalSet:
    from blendclip_ros.data.mmdet3d_info import load_mmdet3d_frame
    from blendclip_ros.geometry.boxes import Boxes
    from blendclip_ros.geometry.crop import points_in_boxes

    try:
        with path.open("rb") as f:
            entries = pickle.load(f)["data_list"]
        lidar2ego = [np.asarray(e["lidar_points"].get("lidar2ego", np.eye(4)), dtype=np.float64) for e in entries]
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, EOFError) as exc:
        raise PointFileError(f"{path}: not an mmdet3d v1.1 info file ({exc})") from None
    clouds, names, distance = [], [], []
    for index, to_ego in enumerate(lidar2ego):
        frame = load_mmdet3d_frame(path, index)
        boxes = Boxes.from_mmdet3d(frame.boxes)
        centres = boxes.centers @ to_ego[:3, :3].T + to_ego[:3, 3]
        for idx, label, centre in zip(points_in_boxes(frame.points, boxes), frame.labels, centres):
            clouds.append(frame.points[idx, :3])
            names.append(label.replace("_", " "))
            distance.append(float(np.hypot(centre[0], centre[1])))
    return _build(f"mmdet3d:{path.name}", clouds, names, _shipped_labels("nuscenes"), prompts="nuscenes",
                  num_points=8192, order="normalize_then_sample", distance=distance,
                  info={"frame": "sensor axes", "frames": len(entries)})


# ------------------------------------------------------------------------------------ project object sets


def _npz(path: Path) -> EvalSet:
    from blendclip_sim.object_sets import load_object_set

    objects = load_object_set(path)
    clouds = [objects.points[a:b] for a, b in zip(objects.offsets[:-1], objects.offsets[1:])]
    return _build(f"npz:{path.name}", clouds, [objects.class_names[k] for k in objects.labels],
                  list(objects.class_names), prompts="nuscenes", num_points=8192, order="normalize_then_sample",
                  distance=[float(d) for d in objects.distance], info={"domain": objects.domain})
