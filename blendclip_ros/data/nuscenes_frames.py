"""Annotated LiDAR keyframes from nuScenes-format data or an mmdet3d info file, without ROS.

nuScenes datasets are read through the real ``nuscenes-devkit`` (tables, ``get_sample_data``
boxes in the LiDAR frame). Multi-sweep clouds follow the devkit's
``LidarPointCloud.from_file_multisweep`` (same sweeps, ego-motion compensation and close-point
removal) but keep the ``ring`` column the devkit drops and add a ``time`` column.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import ConfigError, PointFileError
from ..geometry.boxes import Boxes
from .mmdet3d_info import load_mmdet3d_frame

if TYPE_CHECKING:
    from nuscenes.nuscenes import NuScenes

KEYFRAME_FIELDS = ("x", "y", "z", "intensity", "ring")
SWEEP_FIELDS = (*KEYFRAME_FIELDS, "time")
LIDAR_CHANNEL = "LIDAR_TOP"
_LIDAR_COLUMNS = 5


@dataclass(frozen=True)
class AnnotatedCloud:
    """One LiDAR cloud and its annotated boxes, both in the LiDAR frame at ``stamp_ns``.

    ``points`` columns are named by ``field_names``: keyframes have x, y, z, intensity,
    ring; multi-sweep clouds add ``time`` = seconds the sweep is older than the keyframe.
    ``pose`` is the 4x4 global <- LiDAR transform at the stamp (None when the source has none);
    ``annotated`` is False for intermediate sweeps, which have no annotations.
    """

    stamp_ns: int
    points: np.ndarray  # (N, len(field_names)) float32
    field_names: tuple[str, ...]
    boxes: Boxes
    ids: list[str]
    labels: list[str]
    pose: np.ndarray | None = None
    annotated: bool = True

    def shifted(self, offset_ns: int) -> AnnotatedCloud:
        """The same cloud stamped ``offset_ns`` later."""
        return dataclasses.replace(self, stamp_ns=self.stamp_ns + offset_ns)


def read_lidar_bin(path: Path | str) -> np.ndarray:
    """A nuScenes ``.pcd.bin`` file as ``(N, 5)`` float32: x, y, z, intensity, ring."""
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except OSError as exc:
        raise PointFileError(f"{path}: cannot read LiDAR file ({exc.strerror or exc})") from exc
    if raw.size % _LIDAR_COLUMNS:
        raise PointFileError(f"{path}: {raw.size} floats is not a multiple of {_LIDAR_COLUMNS}")
    return raw.reshape(-1, _LIDAR_COLUMNS)


# ----------------------------------------------------------------------------- nuScenes


def open_nuscenes(dataroot: Path | str, version: str) -> NuScenes:
    """Load a nuScenes-format dataset with the devkit; PointFileError if it cannot."""
    from nuscenes.nuscenes import NuScenes

    if not (Path(dataroot) / version).is_dir():
        raise PointFileError(f"dataroot: no table folder {version!r} in {dataroot}")
    try:
        return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (OSError, ValueError, KeyError, IndexError, AssertionError) as exc:
        raise PointFileError(f"dataroot: {dataroot}/{version} is not a loadable nuScenes dataset "
                             f"({type(exc).__name__}: {exc})") from exc


def sample_tokens(nusc: NuScenes, scene: str | None = None) -> list[str]:
    """Sample tokens in time order: of scene ``scene`` (by name), or of every scene."""
    scenes = nusc.scene if scene is None else [s for s in nusc.scene if s["name"] == scene]
    if not scenes:
        names = ", ".join(sorted(s["name"] for s in nusc.scene))
        raise ConfigError(f"scene: no scene named {scene!r} (available: {names})")
    tokens = []
    for record in scenes:
        token = record["first_sample_token"]
        while token:
            tokens.append(token)
            token = nusc.get("sample", token)["next"]
    return sorted(tokens, key=lambda t: nusc.get("sample", t)["timestamp"])


def _pose(record: dict) -> np.ndarray:
    """4x4 transform from a record's ``translation`` and ``rotation`` (w, x, y, z)."""
    w, x, y, z = record["rotation"]
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_quat([x, y, z, w]).as_matrix()
    matrix[:3, 3] = record["translation"]
    return matrix


def _global_from_sensor(nusc: NuScenes, sample_data: dict) -> np.ndarray:
    ego = nusc.get("ego_pose", sample_data["ego_pose_token"])
    sensor = nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
    return _pose(ego) @ _pose(sensor)


def lidar_mount(nusc: NuScenes, sample_token: str) -> np.ndarray:
    """4x4 ego <- LIDAR_TOP of a sample (the calibrated sensor)."""
    record = nusc.get("sample_data", nusc.get("sample", sample_token)["data"][LIDAR_CHANNEL])
    return _pose(nusc.get("calibrated_sensor", record["calibrated_sensor_token"]))


def multisweep_points(nusc: NuScenes, keyframe_token: str, sweeps: int,
                      min_distance: float = 1.0) -> np.ndarray:
    """Up to ``sweeps`` LiDAR sweeps (the keyframe and its predecessors) in the keyframe's frame.

    Returns ``(N, 6)`` float32: x, y, z, intensity, ring, time lag (s, >= 0). Like the devkit,
    points within ``min_distance`` of the sensor in both x and y are dropped from every sweep.
    """
    reference = nusc.get("sample_data", keyframe_token)
    ref_from_global = np.linalg.inv(_global_from_sensor(nusc, reference))
    chunks, record = [], reference
    for _ in range(sweeps):
        points = read_lidar_bin(Path(nusc.dataroot) / record["filename"])
        points = points[~((np.abs(points[:, 0]) < min_distance) & (np.abs(points[:, 1]) < min_distance))]
        transform = ref_from_global @ _global_from_sensor(nusc, record)
        moved = np.empty((len(points), 6), dtype=np.float32)
        moved[:, :3] = points[:, :3].astype(np.float64) @ transform[:3, :3].T + transform[:3, 3]
        moved[:, 3:5] = points[:, 3:5]
        moved[:, 5] = 1e-6 * (reference["timestamp"] - record["timestamp"])
        chunks.append(moved)
        if not record["prev"]:
            break
        record = nusc.get("sample_data", record["prev"])
    return np.concatenate(chunks)


def nuscenes_frame(nusc: NuScenes, sample_token: str, sweeps: int = 1,
                   min_distance: float = 1.0) -> AnnotatedCloud:
    """The LIDAR_TOP keyframe of a sample with its boxes in the LiDAR frame.

    Boxes come from the devkit's ``get_sample_data``: size = ``[l, w, h]`` from ``wlh``,
    ``ids`` = instance tokens, ``labels`` = category names. With ``sweeps == 1`` the cloud is
    the keyframe file unchanged; with more, see :func:`multisweep_points`.
    """
    if sweeps < 1:
        raise ConfigError(f"sweeps: must be at least 1, got {sweeps}")
    sample = nusc.get("sample", sample_token)
    if LIDAR_CHANNEL not in sample["data"]:
        raise PointFileError(f"sample {sample_token}: has no {LIDAR_CHANNEL} keyframe")
    lidar_token = sample["data"][LIDAR_CHANNEL]
    lidar_path, boxes, _ = nusc.get_sample_data(lidar_token)
    if sweeps == 1:
        points, fields = read_lidar_bin(lidar_path), KEYFRAME_FIELDS
    else:
        points, fields = multisweep_points(nusc, lidar_token, sweeps, min_distance), SWEEP_FIELDS
    centers = np.array([box.center for box in boxes], dtype=np.float64).reshape(-1, 3)
    sizes = np.array([box.wlh[[1, 0, 2]] for box in boxes], dtype=np.float64).reshape(-1, 3)
    quaternions = np.array([box.orientation.q[[1, 2, 3, 0]] for box in boxes], dtype=np.float64).reshape(-1, 4)
    ids = [nusc.get("sample_annotation", box.token)["instance_token"] for box in boxes]
    record = nusc.get("sample_data", lidar_token)
    return AnnotatedCloud(int(record["timestamp"]) * 1000, points, fields, Boxes(centers, sizes, quaternions), ids,
                          [box.name for box in boxes], pose=_global_from_sensor(nusc, record))


def intermediate_sweeps(nusc: NuScenes, sample_token: str) -> list[AnnotatedCloud]:
    """The LIDAR_TOP sweeps between the previous keyframe and this sample's, oldest first, with poses."""
    record = nusc.get("sample_data", nusc.get("sample", sample_token)["data"][LIDAR_CHANNEL])
    out = []
    while record["prev"]:
        record = nusc.get("sample_data", record["prev"])
        if record["is_key_frame"]:
            break
        points = read_lidar_bin(Path(nusc.dataroot) / record["filename"])
        out.append(AnnotatedCloud(int(record["timestamp"]) * 1000, points, KEYFRAME_FIELDS, Boxes.empty(), [], [],
                                  pose=_global_from_sensor(nusc, record), annotated=False))
    return out[::-1]


def nuscenes_frames(nusc: NuScenes, tokens: list[str], sweeps: int = 1, min_distance: float = 1.0,
                    all_sweeps: bool = False) -> Iterator[AnnotatedCloud]:
    """:func:`nuscenes_frame` for each sample token, loaded lazily (``all_sweeps``: with the
    :func:`intermediate_sweeps` before each keyframe)."""
    for token in tokens:
        if all_sweeps:
            yield from intermediate_sweeps(nusc, token)
        yield nuscenes_frame(nusc, token, sweeps, min_distance)


# ----------------------------------------------------------------------------- mmdet3d


def mmdet3d_frame_count(info_path: Path | str) -> int:
    """Number of frames (``data_list`` entries) in an mmdet3d v1.1 info file."""
    try:
        with Path(info_path).open("rb") as f:
            return len(pickle.load(f)["data_list"])
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as exc:
        raise PointFileError(f"{info_path}: not an mmdet3d v1.1 info file ({exc})") from exc


def mmdet3d_frame(info_path: Path | str, index: int = 0) -> AnnotatedCloud:
    """Frame ``index`` of an mmdet3d info file; ids are ``"<sample token>_<box index>"``."""
    frame = load_mmdet3d_frame(info_path, index)
    if frame.points.shape[1] != _LIDAR_COLUMNS:
        raise PointFileError(f"{frame.lidar_path}: expected {_LIDAR_COLUMNS} columns "
                             f"(x, y, z, intensity, ring), got {frame.points.shape[1]}")
    return AnnotatedCloud(frame.timestamp_us * 1000, frame.points, KEYFRAME_FIELDS,
                          Boxes.from_mmdet3d(frame.boxes), [f"{frame.token}_{i}" for i in range(len(frame.boxes))],
                          list(frame.labels))


def mmdet3d_frames(info_path: Path | str) -> Iterator[AnnotatedCloud]:
    """Every frame of an mmdet3d info file, in file order, loaded lazily."""
    for index in range(mmdet3d_frame_count(info_path)):
        yield mmdet3d_frame(info_path, index)
