"""What differs between the nuScenes and TruckScenes devkits as the miner uses them.

Both devkits share the table API (``get``, ``sample['data']``, ``get_sample_data``,
``box_velocity``) and the evaluation loaders (``add_center_dist``, ``filter_eval_boxes``); a
:class:`DatasetSpec` names the modules, LiDAR channels, class mapping and evaluation config.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from blendclip_ros.errors import ConfigError, PointFileError


@dataclass(frozen=True)
class DatasetSpec:
    """One devkit: its package, LiDARs fused at a keyframe, camera prefix, classes and ranges."""

    name: str
    package: str  # devkit import name
    db_class: str  # "nuscenes.nuscenes.NuScenes"
    lidars: tuple[str, ...]  # fused at the keyframe (global frame); the first gives the ego pose
    camera_prefix: str
    classes: tuple[str, ...]  # label order used by BlendCLIP (spaces, not underscores)
    eval_config: str  # devkit detection config with the class ranges
    motion_compensation: bool  # previous sweeps with object-motion compensation (nuScenes only)

    def detection_class(self, category: str) -> str | None:
        """Detection class (spaces) of a category name, None for void categories."""
        name = _category_mapper(self.package)(category)
        return None if name is None else name.replace("_", " ")

    def class_ranges(self) -> dict[str, float]:
        """Evaluation range (m) per class, from the devkit's detection config."""
        factory = import_module(f"{self.package}.eval.common.config").config_factory
        return {k.replace("_", " "): float(v) for k, v in factory(self.eval_config).class_range.items()}

    def open(self, dataroot: Path | str, version: str) -> Any:
        """Load the tables with the devkit; PointFileError if they cannot be loaded."""
        if not (Path(dataroot) / version).is_dir():
            raise PointFileError(f"dataroot: no table folder {version!r} in {dataroot}")
        module, _, cls = self.db_class.rpartition(".")
        try:
            with warnings.catch_warnings():  # truckscenes warns when its optional plotting extras are absent
                warnings.filterwarnings("ignore", message="The visualization dependencies")
                return getattr(import_module(module), cls)(version=version, dataroot=str(dataroot), verbose=False)
        except (OSError, ValueError, KeyError, IndexError, AssertionError) as exc:
            raise PointFileError(f"dataroot: {dataroot}/{version} is not a loadable {self.name} dataset "
                                 f"({type(exc).__name__}: {exc})") from exc


def _category_mapper(package: str) -> Callable[[str], str | None]:
    return import_module(f"{package}.eval.detection.utils").category_to_detection_name


NUSCENES = DatasetSpec(
    "nuscenes", "nuscenes", "nuscenes.nuscenes.NuScenes", ("LIDAR_TOP",), "CAM_",
    ("barrier", "bicycle", "bus", "car", "construction vehicle", "motorcycle", "pedestrian", "traffic cone",
     "trailer", "truck"),
    "detection_cvpr_2019", True)
TRUCKSCENES = DatasetSpec(
    "truckscenes", "truckscenes", "truckscenes.truckscenes.TruckScenes",
    ("LIDAR_LEFT", "LIDAR_RIGHT", "LIDAR_TOP_FRONT", "LIDAR_TOP_LEFT", "LIDAR_TOP_RIGHT", "LIDAR_REAR"), "CAMERA_",
    ("animal", "pedestrian", "barrier", "traffic cone", "traffic sign", "bicycle", "bus", "car", "other vehicle",
     "motorcycle", "trailer", "truck"),
    "detection_cvpr_2024", False)
SPECS = {s.name: s for s in (NUSCENES, TRUCKSCENES)}


def dataset_spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise ConfigError(f"dataset: expected one of {sorted(SPECS)}, got {name!r}")
    return SPECS[name]
