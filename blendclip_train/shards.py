"""Triplet shards: the one on-disk format of training and evaluation data.

A dataset is a folder of self-describing HDF5 files (``*.h5``, read with plain ``h5py``), each
holding a few hundred to a few thousand (points, captions, images, metadata) samples:

=================  ===========================  ==============================================
dataset            shape / type                 meaning
=================  ===========================  ==============================================
``points``         ``(P, C)`` float32           all clouds back to back; ``C`` = 3 (xyz) or
                                                6 (xyz + rgb in 0..1)
``point_offsets``  ``(n + 1,)`` int64           sample ``i`` is ``points[o[i]:o[i + 1]]``
``keys``           ``(n,)`` str                 unique sample id (annotation token, object uid)
``labels``         ``(n,)`` str                 class name, ``""`` when unlabelled
``captions``       ``(T,)`` str                 all captions; ``caption_offsets (n + 1,)``
``images``         ``(M,)`` vlen uint8          encoded JPEG/PNG bytes; ``image_offsets (n + 1,)``
``meta``           ``(n,)`` str                 one JSON object per sample
=================  ===========================  ==============================================

File attributes: ``format`` (``blendclip-shard``), ``version``, ``domain`` (``synthetic`` or
``real``), ``num_samples``, ``point_channels``, ``up_axis`` (always ``z``: y-up sources are
rotated at conversion), ``frame`` (how points are expressed) and ``info`` (JSON provenance).

Frozen embeddings live beside the shards, one sidecar per shard and text/image tower:
``<folder>/embeddings/<key>/<shard name>`` with ``text`` ``(T, D)`` and ``image`` ``(M, D)`` rows
aligned with the shard's ``captions`` and ``images``, ``key`` = ``<tower>-<weights digest[:12]>``.
A zero-length image entry is a view published only as an embedding (its sidecar row holds it).

Why HDF5: random access to any sample by (shard, row) is what the curriculum sampler, exact
resume (a position is an index, not a stream offset) and multi-node reading (every rank opens
the same files on a shared file system) need; a shard is written once, atomically (temporary
file, fsync, rename), so a killed writer never leaves a half shard behind.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from blendclip_ros.errors import ConfigError, PointFileError

FORMAT = "blendclip-shard"
VERSION = 1
SUFFIX = ".h5"
EMBEDDINGS_DIR = "embeddings"
DOMAINS = ("synthetic", "real")
_STR = h5py.string_dtype("utf-8")
_BYTES = h5py.vlen_dtype(np.uint8)


@dataclass
class ShardSample:
    """One sample of a shard; embeddings are filled when read with an embedding key."""

    key: str
    points: np.ndarray
    label: str = ""
    captions: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    text_embeddings: np.ndarray | None = None  # (len(captions), D)
    image_embeddings: np.ndarray | None = None  # (len(images), D)


def write_shard(path: str | os.PathLike, samples: Iterable[ShardSample], *, domain: str,
                frame: str = "object", info: dict[str, Any] | None = None) -> Path:
    """Write ``samples`` to one shard file atomically; returns its path.

    All samples must have the same number of point channels (3 or 6). The file appears under
    its final name only when complete (written to ``<name>.tmp``, fsynced, renamed).
    """
    if domain not in DOMAINS:
        raise ConfigError(f"domain: expected one of {DOMAINS}, got {domain!r}")
    samples = list(samples)
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ConfigError(f"{path}: shard files end in {SUFFIX}")
    channels = {s.points.shape[1] if s.points.ndim == 2 else -1 for s in samples}
    if not channels <= {3, 6} or len(channels) > 1:
        raise ConfigError(f"{path}: every sample needs (N, 3) or (N, 6) points, all alike (got {sorted(channels)})")
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{path}: duplicate sample keys")
    n_channels = channels.pop() if channels else 3
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"format": FORMAT, "version": VERSION, "domain": domain, "num_samples": len(samples),
                            "point_channels": n_channels, "up_axis": "z", "frame": frame,
                            "info": json.dumps(info or {})})
            points = [np.asarray(s.points, dtype=np.float32).reshape(-1, n_channels) for s in samples]
            f["points"] = np.concatenate(points) if points else np.zeros((0, n_channels), np.float32)
            f["point_offsets"] = _offsets(len(p) for p in points)
            f.create_dataset("keys", data=keys, dtype=_STR)
            f.create_dataset("labels", data=[s.label for s in samples], dtype=_STR)
            f.create_dataset("captions", data=[c for s in samples for c in s.captions], dtype=_STR)
            f["caption_offsets"] = _offsets(len(s.captions) for s in samples)
            images = [np.frombuffer(b, dtype=np.uint8) for s in samples for b in s.images]
            f.create_dataset("images", shape=(len(images),), dtype=_BYTES)
            for i, image in enumerate(images):
                f["images"][i] = image
            f["image_offsets"] = _offsets(len(s.images) for s in samples)
            f.create_dataset("meta", data=[json.dumps(s.meta) for s in samples], dtype=_STR)
        _fsync_rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_embeddings(shard: str | os.PathLike, key: str, *, text: np.ndarray | None, image: np.ndarray | None,
                     attrs: dict[str, Any]) -> Path:
    """Write the frozen-embedding sidecar of ``shard`` under ``key`` atomically; returns its path.

    ``text`` rows align with the shard's captions and ``image`` rows with its images.
    """
    shard = Path(shard)
    reader = ShardReader(shard)
    out = embedding_path(shard, key)
    expected = {"text": reader.num_captions, "image": reader.num_images}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"format": FORMAT + "-embeddings", "version": VERSION, "key": key,
                            "shard": shard.name, **{k: json.dumps(v) for k, v in attrs.items()}})
            for name, rows in (("text", text), ("image", image)):
                if rows is None:
                    continue
                rows = np.asarray(rows, dtype=np.float32)
                if rows.ndim != 2 or len(rows) != expected[name]:
                    raise ConfigError(f"{out}: {name} embeddings must be ({expected[name]}, D), got {rows.shape}")
                f[name] = rows
        _fsync_rename(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def embedding_path(shard: str | os.PathLike, key: str) -> Path:
    """Where the embedding sidecar of ``shard`` for ``key`` lives."""
    shard = Path(shard)
    return shard.parent / EMBEDDINGS_DIR / key / shard.name


def list_shards(source: str | os.PathLike) -> list[Path]:
    """The shard files of a folder (sorted by name), or ``[source]`` for one file."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise PointFileError(f"{source}: no such shard file or folder")
    shards = sorted(p for p in source.glob(f"*{SUFFIX}") if p.is_file())
    if not shards:
        raise PointFileError(f"{source}: no {SUFFIX} shards in this folder")
    return shards


class ShardReader:
    """Random access to one shard. The file is opened lazily per process (safe across fork)."""

    def __init__(self, path: str | os.PathLike, embeddings: str | None = None) -> None:
        self.path = Path(path)
        self.embeddings = embeddings
        self._file: h5py.File | None = None
        self._sidecar: h5py.File | None = None
        self._pid = -1
        f = self._open()
        if f.attrs.get("format") != FORMAT:
            raise PointFileError(f"{self.path}: not a {FORMAT} file (format attribute {f.attrs.get('format')!r})")
        self.attrs: dict[str, Any] = {k: _plain(v) for k, v in f.attrs.items()}
        self.attrs["info"] = json.loads(self.attrs.get("info") or "{}")
        self.point_offsets = f["point_offsets"][()]
        self.caption_offsets = f["caption_offsets"][()]
        self.image_offsets = f["image_offsets"][()]
        if embeddings is not None and not embedding_path(self.path, embeddings).is_file():
            raise PointFileError(f"{self.path}: no '{embeddings}' embeddings ({embedding_path(self.path, embeddings)})")

    def __len__(self) -> int:
        return len(self.point_offsets) - 1

    @property
    def domain(self) -> str:
        return str(self.attrs["domain"])

    @property
    def num_captions(self) -> int:
        return int(self.caption_offsets[-1])

    @property
    def num_images(self) -> int:
        return int(self.image_offsets[-1])

    def point_counts(self) -> np.ndarray:
        return np.diff(self.point_offsets)

    def labels(self) -> list[str]:
        return [_text(x) for x in self._open()["labels"][()]]

    def captions(self) -> list[str]:
        """Every caption of the shard, in row order (``caption_offsets`` slices it per sample)."""
        return [_text(x) for x in self._open()["captions"][()]]

    def keys(self) -> list[str]:
        return [_text(x) for x in self._open()["keys"][()]]

    def __getitem__(self, i: int) -> ShardSample:
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: sample {i} out of range 0..{len(self) - 1}")
        f = self._open()
        p0, p1 = self.point_offsets[i], self.point_offsets[i + 1]
        c0, c1 = self.caption_offsets[i], self.caption_offsets[i + 1]
        m0, m1 = self.image_offsets[i], self.image_offsets[i + 1]
        sample = ShardSample(
            key=_text(f["keys"][i]), points=f["points"][p0:p1], label=_text(f["labels"][i]),
            captions=[_text(c) for c in f["captions"][c0:c1]],
            images=[bytes(b) for b in f["images"][m0:m1]] if m1 > m0 else [],
            meta=json.loads(_text(f["meta"][i])))
        if self.embeddings is not None:
            side = self._sidecar
            if "text" in side:
                sample.text_embeddings = side["text"][c0:c1]
            if "image" in side:
                sample.image_embeddings = side["image"][m0:m1]
        return sample

    def read_points(self, i: int) -> np.ndarray:
        """The ``(N, C)`` points of sample ``i`` only (no captions, images or embeddings read)."""
        return self._open()["points"][self.point_offsets[i]:self.point_offsets[i + 1]]

    def read_caption(self, i: int, k: int) -> str:
        """Caption ``k`` of sample ``i``."""
        return _text(self._open()["captions"][self.caption_offsets[i] + k])

    def read_embedding(self, tower: str, i: int, k: int) -> np.ndarray | None:
        """Row ``k`` of sample ``i``'s ``tower`` (``text`` or ``image``) sidecar embeddings, None without one."""
        self._open()
        if self._sidecar is None or tower not in self._sidecar:
            return None
        offsets = self.caption_offsets if tower == "text" else self.image_offsets
        return self._sidecar[tower][offsets[i] + k]

    def embedding_towers(self) -> dict[str, int]:
        """Width of each tower (``text``, ``image``) present in this reader's sidecar."""
        self._open()
        return {} if self._sidecar is None else {name: int(self._sidecar[name].shape[1])
                                                 for name in ("text", "image") if name in self._sidecar}

    def _open(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            if self.embeddings is not None and embedding_path(self.path, self.embeddings).is_file():
                self._sidecar = h5py.File(embedding_path(self.path, self.embeddings), "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_sidecar": None, "_pid": -1}


class ShardSet(Sequence[ShardSample]):
    """Shards of one or more folders/files as one indexable dataset (index = shard order, then row)."""

    def __init__(self, sources: Sequence[str | os.PathLike] | str | os.PathLike,
                 embeddings: str | None = None) -> None:
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        paths = [p for source in sources for p in list_shards(source)]
        self.readers = [ShardReader(p, embeddings) for p in paths]
        self._starts = np.cumsum([0] + [len(r) for r in self.readers]).tolist()

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, index: int) -> tuple[ShardReader, int]:
        """The reader and row of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        k = bisect.bisect_right(self._starts, index) - 1
        return self.readers[k], index - self._starts[k]

    def __getitem__(self, index: int) -> ShardSample:  # type: ignore[override]
        reader, row = self.locate(int(index))
        return reader[row]

    def __iter__(self) -> Iterator[ShardSample]:
        for reader in self.readers:
            for row in range(len(reader)):
                yield reader[row]

    def labels(self) -> list[str]:
        return [label for r in self.readers for label in r.labels()]

    def point_counts(self) -> np.ndarray:
        return np.concatenate([r.point_counts() for r in self.readers]) if self.readers else np.zeros(0, np.int64)


def _offsets(lengths: Iterable[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(list(lengths), dtype=np.int64)]).astype(np.int64)


def _fsync_rename(tmp: Path, path: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return _text(value) if isinstance(value, bytes) else value
