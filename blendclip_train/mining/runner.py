"""Dataset-scale mining: one shard per scene, parallel workers, array-job slices, resume after a kill.

A *work unit* is one scene (all its keyframes, in time order); its triplets go into one shard
``<out>/<scene>.h5`` written atomically, so a shard either exists complete or not at all. A rerun
of the same command skips the units whose shard exists, so after a SIGKILL at any moment the
folder ends with every triplet exactly once. ``--shard i/n`` takes units ``i, i + n, ...`` of the
name-sorted list, so the n slices of an array job partition the dataset. Memory is bounded by one
scene per worker. ``<out>/mining.json`` records the settings; a rerun with other settings into the
same folder is refused.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import multiprocessing
import re
import signal
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from blendclip_ros.errors import ConfigError
from blendclip_train.captioning import Captioner, TemplateCaptioner
from blendclip_train.shards import SUFFIX, ShardSample, write_shard

from .datasets import DatasetSpec
from .keyframes import KeyframeMiner, MinedBox, MiningConfig

MANIFEST = "mining.json"


@dataclass(frozen=True)
class WorkUnit:
    """One scene: the shard it becomes and its keyframe tokens in time order."""

    name: str
    sample_tokens: tuple[str, ...]

    @property
    def shard_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.name) + SUFFIX


def scene_units(db: Any, spec: DatasetSpec, split: str | None = None,
                scenes: Iterable[str] | None = None) -> list[WorkUnit]:
    """Work units of the named scenes, of a devkit split, or of every scene (name-sorted)."""
    names = None if scenes is None else set(scenes)
    records = db.scene
    if split is not None and split != "all":
        from importlib import import_module

        splits = import_module(f"{spec.package}.utils.splits").create_splits_scenes()
        if split not in splits:
            raise ConfigError(f"split: unknown {spec.name} split {split!r} (known: {sorted(splits)} or 'all')")
        records = [s for s in records if s["name"] in set(splits[split])]
    if names is not None:
        unknown = names - {s["name"] for s in db.scene}
        if unknown:
            raise ConfigError(f"scene: no scene named {min(unknown)!r}")
        records = [s for s in records if s["name"] in names]
    if not records:
        raise ConfigError(f"split: no scene of this dataset is in {split!r}; name the scenes instead")
    units = []
    for record in records:
        tokens, token = [], record["first_sample_token"]
        while token:
            tokens.append(token)
            token = db.get("sample", token)["next"]
        tokens.sort(key=lambda t: db.get("sample", t)["timestamp"])
        units.append(WorkUnit(record["name"], tuple(tokens)))
    units.sort(key=lambda u: u.name)
    if len({u.shard_name for u in units}) != len(units):
        raise ConfigError("scene names collide once made file-safe; name the scenes to mine")
    return units


def parse_slice(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ConfigError(f"shard: expected i/n with 0 <= i < n, got {text!r}")
    return int(match[1]), int(match[2])


def pair_images(mined: list[MinedBox], config: MiningConfig) -> list[list[tuple[str, bytes, str]]]:
    """Per triplet, its (camera, jpeg, sample token) images: the own keyframe's crops, or with
    instance pairing up to ``max_images`` crops of the same instance drawn deterministically from
    the whole unit (BlendCLIP pairs a cloud with a random crop of its instance)."""
    by_instance: dict[str, list] = {}
    for m in mined:
        by_instance.setdefault(m.instance, []).extend((c.camera, c.jpeg, c.sample_token) for c in m.crops)
    out = []
    for m in mined:
        pool = [(c.camera, c.jpeg, c.sample_token) for c in m.crops] if config.pairing == "keyframe" \
            else by_instance[m.instance]
        if len(pool) > config.max_images:
            rng = np.random.default_rng(int(hashlib.md5(m.key.encode()).hexdigest()[:15], 16))
            pool = [pool[i] for i in sorted(rng.choice(len(pool), config.max_images, replace=False))]
        out.append(pool)
    return out


def unit_samples(miner: KeyframeMiner, unit: WorkUnit, captioner: Captioner) -> list[ShardSample]:
    """Mine one unit into shard samples (captions align with images; one caption without images)."""
    mined = [m for token in unit.sample_tokens for m in miner.mine(token)]
    images = pair_images(mined, miner.config)
    texts = captioner.caption_many([jpeg for pool in images for _, jpeg, _ in pool],
                                   [m.label for m, pool in zip(mined, images) for _ in pool])
    samples, k = [], 0
    for m, pool in zip(mined, images):
        captions = texts[k:k + len(pool)] if pool else [captioner.fallback(m.label)]
        k += len(pool)
        meta = {**m.meta, "scene": unit.name, "cameras": [c for c, _, _ in pool],
                "image_samples": [s for _, _, s in pool], "own_crops": len(m.crops), "captioner": captioner.name}
        samples.append(ShardSample(m.key, m.points, m.label, captions, [j for _, j, _ in pool], meta))
    return samples


# ----------------------------------------------------------------------------- the parallel run
_STATE: dict[str, Any] = {}


def _work(unit: WorkUnit) -> dict[str, Any]:
    miner, out, info = _STATE["miner"], _STATE["out"], _STATE["info"]
    captioner = _STATE.setdefault("captioner", _STATE["captioner_factory"]())
    samples = unit_samples(miner, unit, captioner)
    write_shard(out / unit.shard_name, samples, domain="real", frame=miner.config.frame,
                info={**info, "unit": unit.name})
    return {"unit": unit.name, "triplets": len(samples), "images": sum(len(s.images) for s in samples),
            "keyframes": len(unit.sample_tokens), "annotations": sum(len(miner.db.get("sample", t)["anns"])
                                                                      for t in unit.sample_tokens)}


def run_mining(db: Any, spec: DatasetSpec, units: list[WorkUnit], out: Path, config: MiningConfig, *,
               workers: int = 1, shard: tuple[int, int] = (0, 1), captioner_factory=TemplateCaptioner,
               captioner_name: str = "template", source: dict[str, Any] | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Mine this slice's pending units into ``out``; returns counts (of this run and of the slice)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"dataset": spec.name, **(source or {}), "config": _plain(asdict(config)), "captioner": captioner_name}
    _check_manifest(out / MANIFEST, settings)
    index, count = shard
    mine = units[index::count]
    for unit in mine:  # a killed writer's leftovers (only this slice's: another slice may be writing)
        (out / (unit.shard_name + ".tmp")).unlink(missing_ok=True)
    pending = [u for u in mine if not (out / u.shard_name).exists()]
    _STATE.update(miner=KeyframeMiner(db, spec, config), out=out, info=settings, captioner_factory=captioner_factory)
    _STATE.pop("captioner", None)
    totals = {"units": len(mine), "skipped": len(mine) - len(pending), "mined_units": 0, "triplets": 0, "images": 0,
              "keyframes": 0, "annotations": 0}
    bar = tqdm(total=len(pending), desc=f"mine {spec.name}", unit="scene", disable=not progress)
    try:
        if workers <= 1 or len(pending) <= 1:
            _collect(map(_work, pending), totals, bar)
        else:
            with multiprocessing.get_context("fork").Pool(min(workers, len(pending)), _die_with_parent) as pool:
                _collect(pool.imap_unordered(_work, pending), totals, bar)
    finally:
        bar.close()
        _STATE.clear()
    return totals


def _collect(results: Iterable[dict[str, Any]], totals: dict[str, int], bar: tqdm) -> None:
    for result in results:
        totals["mined_units"] += 1
        for key in ("triplets", "images", "keyframes", "annotations"):
            totals[key] += result[key]
        bar.update(1)
        bar.set_postfix(triplets=totals["triplets"], images=totals["images"])


def _die_with_parent() -> None:
    """Workers get SIGKILL when the parent dies (Linux), so a killed run leaves no orphan writing shards."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_manifest(path: Path, settings: dict[str, Any]) -> None:
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if old is not None and old != settings:
            raise ConfigError(f"out: {path.parent} holds shards mined with other settings ({path.name}); "
                              "use a new folder")
        if old is not None:
            return
    tmp = path.with_name(f"{path.name}.{multiprocessing.current_process().pid}.tmp")
    tmp.write_text(json.dumps(settings, indent=1), encoding="utf-8")
    tmp.replace(path)
