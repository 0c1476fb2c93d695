"""Procedural object library: a seeded, parametric triangle mesh per driving class.

A :class:`SimObject` mesh has x forward, z up and is centred on its box centre; ``size`` is the
box's full extents ``[l, w, h]`` (the vision_msgs size, nuScenes ``wlh`` reordered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from blendclip_ros.errors import ConfigError
from .mesh import Mesh, merge
from .road_users import (build_animal, build_barrier, build_bicycle, build_motorcycle, build_pedestrian,
                         build_traffic_cone, build_traffic_sign)
from .vehicles import (build_bus, build_car, build_construction_vehicle, build_other_vehicle, build_trailer,
                       build_truck)

Builder = Callable[[np.random.Generator], tuple[list[Mesh], dict]]

BUILDERS: dict[str, Builder] = {
    "car": build_car,
    "truck": build_truck,
    "bus": build_bus,
    "trailer": build_trailer,
    "construction vehicle": build_construction_vehicle,
    "other vehicle": build_other_vehicle,
    "motorcycle": build_motorcycle,
    "bicycle": build_bicycle,
    "pedestrian": build_pedestrian,
    "animal": build_animal,
    "traffic cone": build_traffic_cone,
    "barrier": build_barrier,
    "traffic sign": build_traffic_sign,
}
#: The 13 driving classes (nuScenes detection classes plus TruckScenes' animal, sign, other vehicle).
CLASS_NAMES: tuple[str, ...] = tuple(BUILDERS)

_CAPTIONS = {
    "car": "{colour} {style} car",
    "construction vehicle": "{colour} {style}, a construction vehicle",
    "motorcycle": "{colour} {style}, {state}",
    "bicycle": "{colour} {style}, {state}",
    "pedestrian": "{style} in {clothing} clothes",
    "traffic cone": "{colour} {style}",
    "traffic sign": "{colour} {style} on a pole",
}


@dataclass(frozen=True)
class SimObject:
    """One object instance: its class, mesh (box-centred), box size ``[l, w, h]`` and description."""

    class_name: str
    mesh: Mesh
    size: np.ndarray
    attributes: dict = field(default_factory=dict)
    caption: str = ""


def _article(text: str) -> str:
    return ("an " if text[0] in "aeiou" else "a ") + text


def caption_for(class_name: str, attributes: dict) -> str:
    """A caption derived from the shape parameters, e.g. "a point cloud of a red sedan car"."""
    text = _CAPTIONS.get(class_name, "{colour} {style}").format(**attributes)
    if class_name == "pedestrian" and attributes.get("carrying", "none") != "none":
        text += f" carrying {_article(attributes['carrying'])}"
    return "a point cloud of " + _article(text)


def object_seed(base_seed: int, class_name: str, index: int) -> int:
    """The seed of instance ``index`` of a class: stable across runs and platforms."""
    if class_name not in BUILDERS:
        raise ConfigError(f"class_name: unknown class {class_name!r}; expected one of {list(CLASS_NAMES)}")
    seq = np.random.SeedSequence([int(base_seed), CLASS_NAMES.index(class_name), int(index)])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def make_object(class_name: str, seed: int | np.random.Generator) -> SimObject:
    """Build one instance of ``class_name``; the same seed always gives the same mesh."""
    builder = BUILDERS.get(class_name)
    if builder is None:
        raise ConfigError(f"class_name: unknown class {class_name!r}; expected one of {list(CLASS_NAMES)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    parts, attributes = builder(rng)
    mesh = merge(parts)
    lo, hi = mesh.bounds
    mesh = mesh.transformed(None, -(lo + hi) / 2)
    return SimObject(class_name, mesh, hi - lo, attributes, caption_for(class_name, attributes))
