"""Synthetic training pools in their published layouts, converted into triplet shards.

=============  ===================================================================================
format         layout read (``PATH`` = the dataset root unless said otherwise)
=============  ===================================================================================
``ulip2``      ULIP-2 Objaverse triplets as the BlendCLIP release reads them:
               ``objaverse_pc_parallel/<uid>_*.npz`` (key ``point_cloud``; the public
               ``<uid>/<uid>_8192.npz`` with key ``arr_0`` also works),
               ``rendered_images_split_100/<uid>.hdf5`` (one uint8 dataset per view, HWC or
               CHW, grey/RGB/RGBA) and ``merged_data.json`` (``.../<uid>/<view>`` -> captions).
               Objects without rendered views have no captions either and are skipped.
``shapenet55`` ULIP ShapeNet-55 triplets: ``taxonomy.json``, ``train.txt`` + ``test.txt``
               (``<synset>-<model>.npy`` lines, both used as ULIP's ``whole``),
               ``shapenet_pc/<line>`` (8192 x 3) and ``rendered_images/<synset>-<model>/``
               ``<synset>-<model>_r_<deg:03d>[_depth0001].png`` (also flat in ``rendered_images/``).
               Captions are the synset name's comma-separated synonyms; the label is the first.
``openshape``  OpenShape per-object ``.npy`` dicts (``xyz``, ``rgb``, ``text``, ``blip_caption``,
               ``msft_caption``, ``retrieval_text`` and their ``*_feat`` embeddings, ``image_feat``,
               ``thumbnail_feat``), listed by a split JSON (``[{"id", "data_path", "dataset",
               "group"}]``; ``PATH`` = that file) or found under a folder (``PATH``).
=============  ===================================================================================

Points are rotated from y-up to z-up once, here (:data:`~.common.Y_UP_TO_Z_UP`), and the shard
``info`` says so; they are otherwise stored as published (not normalised, not sampled).
Rendered views are stored as image bytes (PNG files copied verbatim; raw pixels encoded as PNG).
OpenShape ships no pixels, only view embeddings: each view is a zero-length image entry and the
published ViT-bigG-14 embeddings go to the sidecar :data:`OPENSHAPE_EMBEDDINGS` (NaN rows where
an object lacks one).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from blendclip_ros.errors import ConfigError, PointFileError

from ..shards import SUFFIX, ShardSample, write_embeddings, write_shard
from .common import Y_UP_TO_Z_UP, encode_png, even_subset, y_up_to_z_up

FORMATS = ("ulip2", "shapenet55", "openshape")
OPENSHAPE_EMBEDDINGS = "open_clip-ViT-bigG-14-openshape"
SHAPENET_DEGREES = tuple(f"{d:03d}" for d in range(0, 360, 12))
SHAPENET_IMAGE_TYPES = ("", "_depth0001")


@dataclass
class Converted:
    """One object: its shard sample and, for OpenShape, published ``(text, image)`` embedding rows."""

    sample: ShardSample
    text_rows: np.ndarray | None = None
    image_rows: np.ndarray | None = None


@dataclass
class ConversionResult:
    """What a conversion wrote."""

    shards: list[Path]
    objects: int
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    sidecars: list[Path] = field(default_factory=list)


def convert(fmt: str, path: str | Path, out: str | Path, *, shard_size: int = 1000, limit: int | None = None,
            max_views: int | None = None, progress: bool = False) -> ConversionResult:
    """Convert the dataset ``path`` in layout ``fmt`` into shards ``<out>/<fmt>-NNNNNN.h5``.

    ``limit`` stops after that many objects; ``max_views`` keeps that many evenly spaced views
    per object. ``out`` must not hold shards already.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if shard_size < 1:
        raise ConfigError(f"shard_size: expected a positive integer, got {shard_size}")
    path, out = Path(path), Path(out)
    if not path.exists():
        raise PointFileError(f"{path}: no such file or folder")
    if out.is_dir() and any(out.glob(f"*{SUFFIX}")):
        raise ConfigError(f"out: {out} already holds shards; choose an empty folder")
    skipped: Counter[str] = Counter()
    reader = {"ulip2": _ulip2, "shapenet55": _shapenet55, "openshape": _openshape}[fmt]
    info = {"source_format": fmt, "source": str(path), "source_up_axis": "y", "axis_conversion": Y_UP_TO_Z_UP}
    start = time.perf_counter()
    result = ConversionResult([], 0)
    batch: list[Converted] = []
    items = tqdm(reader(path, max_views, skipped), disable=not progress, desc=f"convert {fmt}", unit="obj")
    for item in items:
        batch.append(item)
        result.objects += 1
        if len(batch) == shard_size:
            _flush(batch, out / f"{fmt}-{len(result.shards):06d}{SUFFIX}", info, result)
        if limit is not None and result.objects >= limit:
            break
    if batch:
        _flush(batch, out / f"{fmt}-{len(result.shards):06d}{SUFFIX}", info, result)
    result.skipped = dict(skipped)
    result.seconds = time.perf_counter() - start
    return result


def _flush(batch: list[Converted], path: Path, info: dict[str, Any], result: ConversionResult) -> None:
    shard = write_shard(path, [c.sample for c in batch], domain="synthetic", frame="object", info=info)
    result.shards.append(shard)
    if any(c.text_rows is not None or c.image_rows is not None for c in batch):
        dim = next(r.shape[1] for c in batch for r in (c.text_rows, c.image_rows) if r is not None and r.size)
        text = _rows([(c.text_rows, len(c.sample.captions)) for c in batch], dim)
        image = _rows([(c.image_rows, len(c.sample.images)) for c in batch], dim)
        result.sidecars.append(write_embeddings(shard, OPENSHAPE_EMBEDDINGS, text=text, image=image, attrs={
            "tower": "open_clip:ViT-bigG-14:laion2b_s39b_b160k", "source": "published with the OpenShape data",
            "text_version": "original"}))
    batch.clear()


def _rows(parts: list[tuple[np.ndarray | None, int]], dim: int) -> np.ndarray:
    """Stack per-object rows, NaN rows where an object has none."""
    blocks = [rows if rows is not None else np.full((n, dim), np.nan, np.float32) for rows, n in parts]
    return np.concatenate(blocks).astype(np.float32) if blocks else np.zeros((0, dim), np.float32)


def _points(array: Any, source: Path, rgb: Any = None) -> np.ndarray:
    """z-up float32 ``(N, 3)`` or, with colour, ``(N, 6)`` (rgb in 0..1) from a y-up source."""
    xyz = np.asarray(array, dtype=np.float32)
    if xyz.ndim != 2 or xyz.shape[1] < 3 or len(xyz) == 0:
        raise PointFileError(f"{source}: expected (N, >=3) points with N >= 1, got shape {xyz.shape}")
    if rgb is None and xyz.shape[1] >= 6:
        rgb = xyz[:, 3:6]
    xyz = xyz[:, :3]
    if not np.isfinite(xyz).all():
        raise PointFileError(f"{source}: points contain NaN or infinite coordinates")
    out = y_up_to_z_up(xyz)
    if rgb is None:
        return out
    rgb = np.asarray(rgb, dtype=np.float32).reshape(len(xyz), 3)
    if rgb.max(initial=0.0) > 1.0:
        rgb = rgb / 255.0
    return np.concatenate([out, rgb], axis=1)


# --------------------------------------------------------------------------------------------- ULIP-2


def _ulip2(root: Path, max_views: int | None, skipped: Counter[str]) -> Iterator[Converted]:
    captions = _ulip2_captions(root / "merged_data.json")
    flat = root / "objaverse_pc_parallel"
    files = sorted(flat.glob("*.npz")) if flat.is_dir() else sorted(root.glob("*/*_8192.npz"))
    if not files:
        raise PointFileError(f"{root}: no objaverse_pc_parallel/*.npz (nor <uid>/<uid>_8192.npz) point files")
    views_dir = root / "rendered_images_split_100"
    for file in files:
        uid = file.name.split("_")[0]
        views_file = views_dir / f"{uid}.hdf5"
        if not views_file.is_file():
            skipped["no rendered views"] += 1
            continue
        points = _points(_load_array(file, ("point_cloud", "arr_0")), file)
        with h5py.File(views_file, "r") as f:
            names = sorted(f.keys())
            names = [names[i] for i in even_subset(len(names), max_views)]
            images = [encode_png(f[name][()]) for name in names]
        views = [name.removesuffix(".png") for name in names]
        texts, caption_view = [], []
        for v, view in enumerate(views):
            found = captions.get((uid, view), [])
            if not found:
                skipped["views without captions"] += 1
            texts += found
            caption_view += [v] * len(found)
        if not texts:
            skipped["no captions"] += 1
            continue
        yield Converted(ShardSample(key=uid, points=points, captions=texts, images=images,
                                    meta={"uid": uid, "views": views, "caption_view": caption_view}))


def _ulip2_captions(path: Path) -> dict[tuple[str, str], list[str]]:
    """``merged_data.json`` as ``(uid, view) -> captions`` (the key's last two path parts)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise PointFileError(f"{path}: cannot read the ULIP-2 captions ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise PointFileError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PointFileError(f"{path}: expected an object of image path -> captions")
    out = {}
    for key, value in data.items():
        parts = str(key).rstrip("/").split("/")
        if len(parts) >= 2:
            texts = [value] if isinstance(value, str) else [str(v) for v in value]
            out[(parts[-2], parts[-1].removesuffix(".png"))] = [t.strip() for t in texts if str(t).strip()]
    return out


# ----------------------------------------------------------------------------------------- ShapeNet-55


def _shapenet55(root: Path, max_views: int | None, skipped: Counter[str]) -> Iterator[Converted]:
    try:
        taxonomy = {entry["synsetId"]: entry["name"] for entry in json.loads((root / "taxonomy.json").read_text())}
    except OSError as exc:
        raise PointFileError(f"{root / 'taxonomy.json'}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise PointFileError(f"{root / 'taxonomy.json'}: not a ShapeNet taxonomy list ({exc})") from None
    lines = []
    for split in ("test.txt", "train.txt"):
        if (root / split).is_file():
            lines += [line.strip() for line in (root / split).read_text().splitlines() if line.strip()]
    if not lines:
        raise PointFileError(f"{root}: no train.txt / test.txt object lists")
    images_dir = root / "rendered_images"
    names = [f"{d}{t}" for d in SHAPENET_DEGREES for t in SHAPENET_IMAGE_TYPES]
    names = [names[i] for i in even_subset(len(names), max_views)]
    for line in lines:
        synset = line.split("-")[0]
        model = line[len(synset) + 1:].split(".")[0]
        if synset not in taxonomy:
            raise PointFileError(f"{root}: synset {synset} of {line} is not in taxonomy.json")
        points = _points(_load_array(root / "shapenet_pc" / line), root / "shapenet_pc" / line)
        stem = f"{synset}-{model}"
        folder = images_dir / stem if (images_dir / stem).is_dir() else images_dir
        images = [p.read_bytes() for p in (folder / f"{stem}_r_{name}.png" for name in names) if p.is_file()]
        if not images:
            skipped["no rendered views (kept)"] += 1
        synonyms = [s.strip() for s in taxonomy[synset].split(",") if s.strip()]
        yield Converted(ShardSample(key=stem, points=points, label=synonyms[0] if synonyms else "",
                                    captions=synonyms, images=images,
                                    meta={"synset": synset, "model": model}))


# ------------------------------------------------------------------------------------------- OpenShape


def _openshape(path: Path, max_views: int | None, skipped: Counter[str]) -> Iterator[Converted]:
    if path.is_file():
        try:
            split = json.loads(path.read_text())
        except ValueError as exc:
            raise PointFileError(f"{path}: not a JSON split list ({exc})") from None
        if not isinstance(split, list):
            raise PointFileError(f"{path}: expected a list of {{id, data_path, ...}} entries")
        entries = [(e, resolve_data_path(e["data_path"], path.parent)) for e in split]
    else:
        entries = [({"id": p.stem}, p) for p in sorted(path.rglob("*.npy"))]
        if not entries:
            raise PointFileError(f"{path}: no .npy object files under this folder")
    for entry, file in entries:
        if file is None:
            skipped["missing object file"] += 1
            continue
        data = load_object_dict(file)
        points = _points(data["xyz"], file, data.get("rgb"))
        candidates = [(t, _at(data.get("text_feat"), i), "text") for i, t in enumerate(data.get("text") or [])]
        candidates += [(data.get(f"{k}_caption"), data.get(f"{k}_caption_feat"), f"{k}_caption")
                       for k in ("blip", "msft")]
        candidates += [(t, _at(data.get("retrieval_text_feat"), i), "retrieval_text")
                       for i, t in enumerate(data.get("retrieval_text") or [])]
        kept = [(t.strip(), _feature(f), s) for t, f, s in candidates if isinstance(t, str) and t.strip()]
        texts, feats, sources = [t for t, _, _ in kept], [f for _, f, _ in kept], [s for _, _, s in kept]
        views = [np.asarray(v, dtype=np.float32).reshape(-1) for v in np.asarray(data.get("image_feat", []))]
        views = [views[i] for i in even_subset(len(views), max_views)]
        if data.get("thumbnail_feat") is not None:
            views.append(np.asarray(data["thumbnail_feat"], dtype=np.float32).reshape(-1))
        dims = {len(f) for f in feats if f is not None} | {len(v) for v in views}
        if len(dims) > 1:
            raise PointFileError(f"{file}: embeddings of different sizes {sorted(dims)}")
        dim = dims.pop() if dims else 0
        text_rows = np.stack([f if f is not None else np.full(dim, np.nan, np.float32) for f in feats]) \
            if feats and dim else None
        uid = str(entry.get("id", entry.get("uid", file.stem)))
        yield Converted(ShardSample(key=uid, points=points, captions=texts, images=[b""] * len(views),
                                    meta={"id": uid, "dataset": entry.get("dataset", ""),
                                          "group": entry.get("group", ""), "caption_source": sources}),
                        text_rows, np.stack(views) if views else None)


def _load_array(file: Path, keys: tuple[str, ...] = ()) -> np.ndarray:
    """A plain ``.npy`` array, or the first of ``keys`` found in an ``.npz``."""
    try:
        data = np.load(file)
    except (OSError, ValueError, EOFError) as exc:
        raise PointFileError(f"{file}: cannot read points ({exc})") from None
    if isinstance(data, np.ndarray):
        return data
    with data:
        key = next((k for k in keys if k in data.files), None)
        if key is None:
            raise PointFileError(f"{file}: none of the arrays {list(keys)} (has {sorted(data.files)})")
        return data[key]


def _at(values: Any, i: int) -> Any:
    return values[i] if values is not None and i < len(values) else None


def _feature(value: Any) -> np.ndarray | None:
    """One embedding row out of OpenShape's ``{"original": ..., "prompt_avg": ...}`` (or a bare array)."""
    if isinstance(value, dict):
        value = value.get("original")
    return None if value is None else np.asarray(value, dtype=np.float32).reshape(-1)


def load_object_dict(file: Path) -> dict[str, Any]:
    """An OpenShape per-object ``.npy`` dict (``xyz`` at least)."""
    try:
        data = np.load(file, allow_pickle=True)
    except (OSError, ValueError) as exc:
        raise PointFileError(f"{file}: cannot read ({exc})") from None
    data = data.item() if isinstance(data, np.ndarray) and data.dtype == object and data.shape == () else data
    if not isinstance(data, dict) or "xyz" not in data:
        raise PointFileError(f"{file}: expected an OpenShape object dict with 'xyz'")
    return data


def resolve_data_path(data_path: str, base: Path) -> Path | None:
    """A split's ``data_path`` on this machine: as given, else under ``base`` with ever fewer leading parts.

    Published splits hold the authors' absolute paths (``/mnt/data/.../Objaverse/000-0/uid.npy``)
    or paths relative to their working directory; the trailing parts match a local copy.
    """
    candidate = Path(data_path)
    if candidate.is_file():
        return candidate
    parts = [p for p in candidate.parts if p not in ("/", "")]
    for start in range(len(parts)):
        trial = base.joinpath(*parts[start:])
        if trial.is_file():
            return trial
    return None
