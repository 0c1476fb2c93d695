"""Streaming training data: synthetic and real shard sets in one index space, read per access.

Nothing is held in RAM but per-sample offsets, labels and (without embedding sidecars) one caption
index per caption row; every access reads one sample from its shard. Randomness per access is the
release's (a random ``max_points`` subset of larger clouds, a random caption among several, a
random image view among several) but is derived from the access key, not from process-global
state: the sampler hands out :class:`Access` keys ``(index, seed, epoch, rank, iteration, slot)``
and the draws of a sample depend only on its key. A batch therefore comes out bit-identical
whichever DataLoader worker builds it and whether or not the run was resumed in between.

Indices address the pooled space of :class:`StreamingTriplets`: synthetic ``0 .. n_synthetic-1``,
real ``n_synthetic ..``. Clouds are xyz only, centred on their mean and scaled to radius 1 after
the subset (a no-op for shards converted by :mod:`~blendclip_train.npz_shards`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from blendclip_ros.errors import ConfigError

from .augment import AugmentConfig, augment_clouds
from .shards import ShardSet
from .triplets import REAL, SYNTHETIC


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (distinct tuples, independent streams)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class Access(NamedTuple):
    """Which sample to read and the key its per-access randomness is derived from."""

    index: int
    seed: int
    epoch: int
    rank: int
    iteration: int
    slot: int


@dataclass
class Item:
    """One training sample as read: normalised points and its targets."""

    points: np.ndarray  # (N, 3) float32
    text: int | np.ndarray  # caption index into StreamingTriplets.captions, or a sidecar embedding (D,)
    image: np.ndarray | None  # sidecar image embedding (D,) of one random view
    label: int  # into class_names, -1 when unlabelled
    domain: int  # SYNTHETIC or REAL
    key: Access


@dataclass
class Batch:
    """A collated, augmented batch; clouds are concatenated (``points.split(lengths)``)."""

    points: torch.Tensor  # (sum N_i, 3) float32
    lengths: torch.Tensor  # (B,) int64
    text_index: torch.Tensor | None  # (B,) int64 into the caption table, or
    text_embeddings: torch.Tensor | None  # (B, D) float32 from sidecars
    image_embeddings: torch.Tensor | None  # (B, D) float32, zeros where missing
    image_mask: torch.Tensor | None  # (B,) bool
    labels: torch.Tensor  # (B,) int64, -1 = unlabelled
    domains: torch.Tensor  # (B,) int64
    key: Access  # the first sample's key: (seed, epoch, rank, iteration) of the batch

    def __len__(self) -> int:
        return len(self.lengths)

    def clouds(self, device: torch.device | None = None) -> list[torch.Tensor]:
        """The clouds as a list of ``(N_i, 3)`` tensors on ``device``."""
        points = self.points if device is None else self.points.to(device, non_blocking=True)
        return list(points.split(self.lengths.tolist()))

    def pin_memory(self) -> Batch:
        """Page-locked copies (DataLoader ``pin_memory=True`` calls this)."""
        fields = {name: (value.pin_memory() if isinstance(value, torch.Tensor) else value)
                  for name, value in self.__dict__.items()}
        return Batch(**fields)


class StreamingTriplets(Dataset):
    """Synthetic and optional real shard sets as one dataset indexed by :class:`Access` keys.

    ``embeddings`` names the sidecar key of frozen text (and image) embeddings; without it the
    captions of every sample are read once into :attr:`captions` (a deduplicated table, plus
    ``"a point cloud of a {class}"`` for samples without a caption) so the trainer can encode
    them once. Samples without points are left out of the index space (:attr:`dropped_empty`).
    """

    def __init__(self, synthetic: Sequence[str | os.PathLike], real: Sequence[str | os.PathLike] = (), *,
                 embeddings: str | None = None, max_points: int = 8192) -> None:
        if not synthetic:
            raise ConfigError("synthetic: at least one synthetic shard file or folder is needed")
        self.embeddings = embeddings
        self.max_points = int(max_points)
        self.sets = [ShardSet(synthetic, embeddings)] + ([ShardSet(real, embeddings)] if real else [])
        labels = [s.labels() for s in self.sets]
        self.class_names: list[str] = []
        for names in labels:
            self.class_names += [n for n in dict.fromkeys(names) if n and n not in self.class_names]
        index_of = {n: i for i, n in enumerate(self.class_names)}
        self._rows: list[np.ndarray] = []  # per pool: ShardSet index of each non-empty sample
        self._labels: list[np.ndarray] = []
        self.dropped_empty = 0
        for shard_set, names in zip(self.sets, labels):
            rows = np.flatnonzero(shard_set.point_counts() > 0)
            self.dropped_empty += len(shard_set) - len(rows)
            self._rows.append(rows)
            self._labels.append(np.array([index_of.get(names[r], -1) for r in rows], dtype=np.int64))
        if len(self._rows[0]) == 0:
            raise ConfigError("synthetic: no samples with points")
        if len(self._rows) > 1 and len(self._rows[1]) == 0:
            raise ConfigError("real: no samples with points")
        self._caption_counts = [np.concatenate([np.diff(r.caption_offsets) for r in s.readers]) for s in self.sets]
        self._image_counts = [np.concatenate([np.diff(r.image_offsets) for r in s.readers]) for s in self.sets]
        self.captions: list[str] = []
        self.has_images = False  # whether any sample can have a sidecar image embedding
        if embeddings is None:
            self._build_caption_table(labels)
        else:
            self._check_embeddings()

    @property
    def num_synthetic(self) -> int:
        return len(self._rows[0])

    @property
    def num_real(self) -> int:
        return len(self._rows[1]) if len(self._rows) > 1 else 0

    @property
    def labels(self) -> np.ndarray:
        """Class index of every pooled sample (-1 = unlabelled)."""
        return np.concatenate(self._labels)

    @property
    def embed_dim(self) -> int | None:
        """Width of the sidecar text embeddings (None without ``embeddings``)."""
        return self._text_dim if self.embeddings is not None else None

    def __len__(self) -> int:
        return self.num_synthetic + self.num_real

    def __getitem__(self, access: Access) -> Item:  # type: ignore[override]
        index = int(access.index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        pool = SYNTHETIC if index < self.num_synthetic else REAL
        local = index - pool * self.num_synthetic
        row = int(self._rows[pool][local])
        reader, shard_row = self.sets[pool].locate(row)
        rng = np.random.default_rng([access.seed, access.epoch, access.rank, access.iteration, access.slot])
        points = np.asarray(reader.read_points(shard_row)[:, :3], dtype=np.float64)
        if len(points) > self.max_points:
            points = points[rng.choice(len(points), self.max_points, replace=False)]
        n_captions, n_images = int(self._caption_counts[pool][row]), int(self._image_counts[pool][row])
        caption = int(rng.integers(n_captions)) if n_captions else -1
        view = int(rng.integers(n_images)) if n_images else -1
        label = int(self._labels[pool][local])
        if self.embeddings is None:
            text: int | np.ndarray = int(self._caption_lookup[pool][row] if caption < 0
                                         else self._caption_table[pool][self._caption_starts[pool][row] + caption])
            image = None
        else:
            text = reader.read_embedding("text", shard_row, caption)
            image = reader.read_embedding("image", shard_row, view) if view >= 0 else None
        return Item(normalise(points), text, image, label, pool, access)

    def _build_caption_table(self, labels: list[list[str]]) -> None:
        """Deduplicate every caption into :attr:`captions`; empty ones become the class fallback."""
        table: dict[str, int] = {}
        self._caption_table, self._caption_lookup, self._caption_starts = [], [], []
        for pool, (shard_set, names) in enumerate(zip(self.sets, labels)):
            counts = self._caption_counts[pool]
            owner = np.repeat(np.arange(len(names)), counts)
            texts = [c.strip() or fallback_caption(names[owner[j]])
                     for j, c in enumerate(c for r in shard_set.readers for c in r.captions())]
            self._caption_table.append(np.array([table.setdefault(t, len(table)) for t in texts], np.int64))
            lookup = np.full(len(names), -1, np.int64)
            for row in np.flatnonzero(counts == 0):
                lookup[row] = table.setdefault(fallback_caption(names[row]), len(table))
            self._caption_lookup.append(lookup)
            self._caption_starts.append(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))
        self.captions = list(table)

    def _check_embeddings(self) -> None:
        widths = {tower: {r.embedding_towers().get(tower) for s in self.sets for r in s.readers}
                  for tower in ("text", "image")}
        if None in widths["text"] or len(widths["text"]) != 1:
            raise ConfigError(f"embeddings: every shard needs '{self.embeddings}' text embeddings of one width "
                              f"(found {sorted(map(str, widths['text']))})")
        self._text_dim = widths["text"].pop()
        images = widths["image"] - {None}
        if images and images != {self._text_dim}:
            raise ConfigError(f"embeddings: image width {sorted(images)} differs from the text width {self._text_dim}")
        self.has_images = bool(images)
        for pool, counts in enumerate(self._caption_counts):
            empty = int((counts[self._rows[pool]] == 0).sum())
            if empty:
                raise ConfigError(f"embeddings: {empty} {('synthetic', 'real')[pool]} samples have no caption, so "
                                  "no text embedding to train against")


def fallback_caption(label: str) -> str:
    """The caption of a sample that has none (as the object-set reader has always done)."""
    return f"a point cloud of a {label or 'object'}"


def normalise(points: np.ndarray) -> np.ndarray:
    """Centre on the mean and scale the farthest point to radius 1; float32."""
    centred = points - points.mean(0)
    radius = float(np.sqrt((centred ** 2).sum(1).max()))
    return (centred / radius if radius > 0 else centred).astype(np.float32)


class Collate:
    """Collates :class:`Item` lists into an augmented :class:`Batch` (runs in DataLoader workers).

    The augmentation draws come from a generator seeded with the batch's
    ``(seed, epoch, rank, iteration)``, so they do not depend on the worker.
    """

    def __init__(self, augment: AugmentConfig | None) -> None:
        self.augment = augment

    def __call__(self, items: Sequence[Item]) -> Batch:
        if not items:
            raise ConfigError("batch: cannot collate an empty batch")
        key = items[0].key
        clouds = [torch.from_numpy(item.points) for item in items]
        if self.augment is not None:
            generator = torch.Generator().manual_seed(derive_seed(key.seed, key.epoch, key.rank, key.iteration, 1))
            clouds = augment_clouds(clouds, self.augment, generator=generator)
        text_index = text_embeddings = image_embeddings = image_mask = None
        if isinstance(items[0].text, np.ndarray):
            text_embeddings = torch.from_numpy(np.stack([item.text for item in items]).astype(np.float32))
        else:
            text_index = torch.tensor([item.text for item in items], dtype=torch.long)
        present = [item.image is not None for item in items]
        if any(present):
            dim = next(item.image for item in items if item.image is not None).shape[0]
            image_embeddings = torch.from_numpy(np.stack([
                item.image if item.image is not None else np.zeros(dim, np.float32) for item in items
            ]).astype(np.float32))
            image_mask = torch.tensor(present)
        return Batch(points=torch.cat(clouds), lengths=torch.tensor([len(c) for c in clouds], dtype=torch.long),
                     text_index=text_index, text_embeddings=text_embeddings, image_embeddings=image_embeddings,
                     image_mask=image_mask, labels=torch.tensor([item.label for item in items], dtype=torch.long),
                     domains=torch.tensor([item.domain for item in items], dtype=torch.long), key=key)


class EvalTriplets(Dataset):
    """A validation shard set read for zero-shot scoring: labelled, non-empty samples, no augmentation.

    Clouds above ``max_points`` take a fixed random subset (seeded by the sample's position).
    Provides what the evaluation functions read: ``class_names``, ``labels`` and ``[i].points``.
    """

    def __init__(self, sources: Sequence[str | os.PathLike], max_points: int = 8192) -> None:
        self.set = ShardSet(sources)
        names = self.set.labels()
        self.class_names = [n for n in dict.fromkeys(names) if n]
        index_of = {n: i for i, n in enumerate(self.class_names)}
        self._rows = np.flatnonzero((self.set.point_counts() > 0) & np.array([bool(n) for n in names], dtype=bool))
        self.labels = np.array([index_of[names[r]] for r in self._rows], dtype=np.int64)
        self.max_points = int(max_points)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> Item:  # type: ignore[override]
        reader, row = self.set.locate(int(self._rows[i]))
        points = np.asarray(reader.read_points(row)[:, :3], dtype=np.float64)
        if len(points) > self.max_points:
            points = points[np.random.default_rng([0, int(i)]).choice(len(points), self.max_points, replace=False)]
        return Item(normalise(points), -1, None, int(self.labels[i]), REAL, Access(int(i), 0, 0, 0, 0, 0))
