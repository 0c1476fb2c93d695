"""Real triplet mining (nuScenes, TruckScenes, an mmdet3d info frame) into triplet shards.

``datasets`` (devkit specs), ``fusion`` (multi-sweep points with object-motion compensation),
``crops`` (camera crop rules), ``keyframes`` (one devkit keyframe), ``real_sweep`` (an mmdet3d
info file frame), ``runner`` (scene units, workers, slices, resume). See docs/mining.md.
"""

from .crops import CropRules
from .datasets import NUSCENES, TRUCKSCENES, DatasetSpec, dataset_spec
from .keyframes import KeyframeMiner, MinedBox, MiningConfig
from .runner import WorkUnit, parse_slice, run_mining, scene_units

__all__ = [
           "NUSCENES",
           "TRUCKSCENES",
           "CropRules",
           "DatasetSpec",
           "KeyframeMiner",
           "MinedBox",
           "MiningConfig",
           "WorkUnit",
           "dataset_spec",
           "parse_slice",
           "run_mining",
           "scene_units",
]
