"""Object triplets (points, caption, optional image embedding) over one or more object-set files.

Every cloud is normalised once at load time (centre on the mean, farthest point at radius 1;
clouds above ``max_points`` reduced by farthest point sampling with a fixed seed), so an item
costs a slice. Labels are re-indexed into one class list: the union of the files' class
names, in order of first appearance. Empty captions become "a point cloud of a {class}".
Captions are deduplicated into :attr:`TripletDataset.captions` so their frozen text embeddings
can be computed once (``caption_index`` per item).

This is the in-memory reader of whole object sets (evaluation reads it); training streams shards
instead (:mod:`blendclip_train.data`, ``.npz`` files converted once by :mod:`blendclip_train.npz_shards`).

An object-set ``.npz`` may carry an optional ``image_embeddings`` array ``(M, D)`` float32
(rows of NaN = no image for that object); it feeds the point-image loss term.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from blendclip_ros.errors import ConfigError, PointFileError
from blendclip_ros.geometry.preprocess import preprocess_crops
from blendclip_sim.object_sets import ObjectSet, load_object_set

SYNTHETIC, REAL = 0, 1
DOMAIN_NAMES = ("synthetic", "real")
IMAGE_KEY = "image_embeddings"


@dataclass(frozen=True)
class Triplet:
    """One training object: normalised ``(N, 3)`` points, its caption and where it came from."""

    points: np.ndarray
    caption: str
    caption_index: int
    image_embedding: np.ndarray | None
    label: int
    domain: int


class TripletDataset(Dataset):
    """Triplets from object-set files, all tagged with one ``domain`` (SYNTHETIC or REAL).

    ``class_names`` fixes the label order (every file's classes must be in it); by default it is
    the union of the files' class names in order of appearance. Objects with no points are
    dropped (:attr:`dropped_empty` counts them).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], domain: int, *,
                 class_names: Sequence[str] | None = None, max_points: int = 8192, seed: int = 0) -> None:
        if domain not in (SYNTHETIC, REAL):
            raise ConfigError(f"domain: expected {SYNTHETIC} (synthetic) or {REAL} (real), got {domain!r}")
        if not paths:
            raise ConfigError("paths: at least one object-set file is needed")
        self.paths = [Path(p) for p in paths]
        self.domain = domain
        sets = [load_object_set(p) for p in self.paths]
        self.class_names = _class_union(sets, class_names)
        index_of = {name: i for i, name in enumerate(self.class_names)}
        clouds: list[np.ndarray] = []
        labels, captions, images = [], [], []
        self.dropped_empty = 0
        for path, objects in zip(self.paths, sets):
            remap = np.array([index_of[name] for name in objects.class_names], dtype=np.int64)
            keep = np.flatnonzero(np.diff(objects.offsets) > 0)
            self.dropped_empty += len(objects) - len(keep)
            clouds += preprocess_crops(objects.points, [np.arange(objects.offsets[i], objects.offsets[i + 1])
                                                        for i in keep], max_points=max_points, seed=seed)
            labels.append(remap[objects.labels[keep]])
            captions += [str(c).strip() or f"a point cloud of a {objects.class_names[label]}"
                         for c, label in zip(objects.captions[keep], objects.labels[keep])]
            images.append(_image_embeddings(path, len(objects))[keep] if _has_images(path) else None)
        self._points = np.concatenate(clouds) if clouds else np.zeros((0, 3), np.float32)
        self._offsets = np.concatenate([[0], np.cumsum([len(c) for c in clouds])]).astype(np.int64)
        self.labels = np.concatenate(labels)
        table, caption_index = np.unique(np.array(captions, dtype=str), return_inverse=True)
        self.captions = [str(c) for c in table]
        self.caption_index = caption_index.astype(np.int64).reshape(-1)
        self.image_embeddings = _stack_images(images, [len(part) for part in labels])
        if len(self.labels) == 0:
            raise ConfigError(f"paths: no objects with points in {[str(p) for p in self.paths]}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Triplet:
        index = int(index)
        image = None
        if self.image_embeddings is not None and np.isfinite(self.image_embeddings[index]).all():
            image = self.image_embeddings[index]
        return Triplet(self._points[self._offsets[index]:self._offsets[index + 1]],
                       self.captions[self.caption_index[index]], int(self.caption_index[index]), image,
                       int(self.labels[index]), self.domain)

    @property
    def num_points(self) -> np.ndarray:
        """Points per object after the cap."""
        return np.diff(self._offsets)


def _class_union(sets: list[ObjectSet], given: Sequence[str] | None) -> list[str]:
    if given is not None:
        names = [str(n) for n in given]
        for objects in sets:
            missing = sorted(set(objects.class_names) - set(names))
            if missing:
                raise ConfigError(f"class_names: {missing} of a {objects.domain}/{objects.split} set are not listed")
        return names
    names: list[str] = []
    for objects in sets:
        names += [n for n in objects.class_names if n not in names]
    return names


def _has_images(path: Path) -> bool:
    with np.load(path, allow_pickle=False) as z:
        return IMAGE_KEY in z.files


def _image_embeddings(path: Path, count: int) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        images = np.asarray(z[IMAGE_KEY], dtype=np.float32)
    if images.ndim != 2 or images.shape[0] != count:
        raise PointFileError(f"{path}: {IMAGE_KEY} has shape {images.shape}, expected ({count}, D)")
    return images


def _stack_images(images: list[np.ndarray | None], counts: list[int]) -> np.ndarray | None:
    """One ``(M, D)`` array with NaN rows for files without images, or None if no file has any."""
    dims = {i.shape[1] for i in images if i is not None}
    if not dims:
        return None
    if len(dims) > 1:
        raise PointFileError(f"{IMAGE_KEY}: files disagree on the embedding width {sorted(dims)}")
    dim = dims.pop()
    return np.concatenate([i if i is not None else np.full((n, dim), np.nan, np.float32)
                           for i, n in zip(images, counts)])
