"""Zero-shot evaluation: rank a prompt set's classes for every object of one or more sets.

:func:`evaluate_model` scores a loaded :class:`~.triplets.TripletDataset` (the trainer's
validation); :func:`evaluate_sets` / :func:`evaluate_checkpoint` score benchmark sets read with
:mod:`.datasets.benchmarks` into a full :class:`~.eval_report.EvalReport` (top-1/3/5, mean class
accuracy, per-class values, confusion matrix, point-count and distance breakdowns, optionally
averaged over K random farthest-point-sampling starts). Metrics live in :mod:`.metrics`; objects
of classes the prompt set lacks are skipped and counted.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from blendclip_ros.errors import ConfigError
from blendclip_ros.geometry.preprocess import RELEASE_CONVENTION
from blendclip_ros.model.pointbert import BlendClipPointModel
from blendclip_ros.text.bank import TextBank
from blendclip_ros.text.prompts import PromptSet

from .datasets.benchmarks import EvalSet, load_eval_set
from .eval_report import EvalReport, build_report
from .figures import save_figure
from .metrics import ZeroShotMetrics, class_mapping, zero_shot_metrics
from .triplets import REAL, TripletDataset

__all__ = ["ZeroShotMetrics", "class_mapping", "confusion_png", "encode_clouds", "encode_dataset",
           "evaluate_checkpoint", "evaluate_model", "evaluate_sets", "zero_shot_metrics"]


@torch.no_grad()
def encode_dataset(model: BlendClipPointModel, dataset: Dataset, *, batch_size: int = 256,
                   progress: bool = False) -> torch.Tensor:
    """``(M, D)`` normalised embeddings of every object (eval mode, deterministic FPS start)."""
    was_training = model.training
    model.eval()
    out = []
    device = model.device
    for start in tqdm(range(0, len(dataset), batch_size), disable=not progress, desc="encode", unit="batch"):
        clouds = [torch.from_numpy(dataset[i].points).to(device)
                  for i in range(start, min(start + batch_size, len(dataset)))]
        out.append(model.encode(clouds).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)


def _check_bank(model: BlendClipPointModel, bank: TextBank, prompt_set: PromptSet) -> None:
    if bank.dim != model.config.embed_dim:
        raise ConfigError(f"bank: {bank.dim}-d text embeddings but the model projects to {model.config.embed_dim}-d")
    if list(bank.labels) != prompt_set.labels:
        raise ConfigError("bank: its labels are not the prompt set's")


def evaluate_model(model: BlendClipPointModel, bank: TextBank, prompt_set: PromptSet,
                   data: Sequence[str | os.PathLike] | TripletDataset, *, max_points: int = 8192,
                   batch_size: int = 256, progress: bool = False) -> ZeroShotMetrics:
    """Zero-shot metrics of ``model`` on object sets (paths, or a loaded dataset) with ``bank``."""
    _check_bank(model, bank, prompt_set)
    dataset = data if isinstance(data, TripletDataset) else TripletDataset(data, REAL, max_points=max_points)
    mapping = class_mapping(dataset.class_names, prompt_set)
    targets = mapping[dataset.labels]
    kept = np.flatnonzero(targets >= 0)
    skipped_labels = dataset.labels[targets < 0]
    skipped = {dataset.class_names[c]: int((skipped_labels == c).sum()) for c in np.unique(skipped_labels)}
    if kept.size == 0:
        raise ConfigError(f"prompts: none of the object classes {dataset.class_names} is in the prompt set "
                          f"{prompt_set.name!r}")
    embeddings = encode_dataset(model, Subset(dataset, kept.tolist()), batch_size=batch_size, progress=progress)
    scores = embeddings @ bank.embeddings.to(embeddings.device, torch.float32).T
    return zero_shot_metrics(scores, torch.from_numpy(targets[kept]), bank.labels, skipped)


@torch.no_grad()
def encode_clouds(model: BlendClipPointModel, clouds: Sequence[np.ndarray], *, batch_size: int = 256,
                  generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """``(M, D)`` normalised embeddings of prepared clouds in eval mode.

    The encoder's farthest point sampling starts at point 0, or, with ``generator``, at random
    points drawn from it (the release's evaluation draws a random start every time).
    """
    was_training = model.training
    model.eval()
    device = model.device
    out = []
    for start in tqdm(range(0, len(clouds), batch_size), disable=not progress, desc="encode", unit="batch"):
        batch = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32)).to(device)
                 for c in clouds[start:start + batch_size]]
        out.append(_encode(model, batch, generator).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)


def _encode(model: BlendClipPointModel, clouds: list[torch.Tensor], generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return model.encode(clouds)
    return model.encode(clouds, generator=generator, random_start=True)


def evaluate_sets(model: BlendClipPointModel, bank: TextBank, prompt_set: PromptSet, sets: Sequence[EvalSet], *,
                  repeats: int = 1, batch_size: int = 256, progress: bool = False) -> EvalReport:
    """Zero-shot report of ``model`` on evaluation sets (pooled) with ``bank``.

    ``repeats = 1``: one deterministic pass (sampling seed 0, FPS from point 0). ``repeats = K > 1``:
    K passes, each with its own random farthest-point-sampling starts (seeds 1..K, for the
    reduction to the set's point count and for the encoder's patch centres); every metric is
    the mean over the passes (the confusion matrix sums them).
    """
    _check_bank(model, bank, prompt_set)
    if repeats < 1:
        raise ConfigError(f"repeats: expected a positive integer, got {repeats}")
    skipped: Counter[str] = Counter()
    keeps, targets = [], []
    for eval_set in sets:
        mapped = class_mapping(eval_set.class_names, prompt_set)[eval_set.labels]
        keeps.append(mapped >= 0)
        targets.append(mapped[mapped >= 0])
        skipped.update(eval_set.skipped)
        for c, n in zip(*np.unique(eval_set.labels[mapped < 0], return_counts=True)):
            skipped[eval_set.class_names[c]] += int(n)
    target = np.concatenate(targets)
    if target.size == 0:
        names = sorted({n for s in sets for n in s.class_names})
        raise ConfigError(f"prompts: none of the object classes {names} is in the prompt set {prompt_set.name!r}")
    counts = np.concatenate([s.point_counts[k] for s, k in zip(sets, keeps)])
    distance = np.concatenate([s.distance[k] if s.distance is not None else np.full(k.sum(), np.nan)
                               for s, k in zip(sets, keeps)])
    text = bank.embeddings.to(model.device, torch.float32)
    convention = getattr(model, "input_convention", RELEASE_CONVENTION)
    scores = []
    seeds = [0] if repeats == 1 else list(range(1, repeats + 1))
    for seed in tqdm(seeds, disable=not progress or repeats == 1, desc="repeats", unit="pass"):
        clouds = [c for s, k in zip(sets, keeps)
                  for c, keep in zip(s.clouds(seed, min(s.num_points, model.config.max_points), convention), k)
                  if keep]
        generator = None if repeats == 1 else torch.Generator().manual_seed(seed)
        scores.append((encode_clouds(model, clouds, batch_size=batch_size, generator=generator,
                                     progress=progress) @ text.T).cpu())
    return build_report(torch.stack(scores), torch.from_numpy(target), bank.labels, counts, distance,
                        dict(skipped), [s.name for s in sets], prompt_set.name)


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: Sequence[str | os.PathLike],
                        prompts: PromptSet | str | os.PathLike | None = None, *, device: str = "cpu",
                        batch_size: int = 256, max_points: int | None = None, repeats: int = 1,
                        cache_dir: str | os.PathLike | None = None, text_tower: dict[str, Any] | None = None,
                        scanobjectnn_variant: str = "OBJ_ONLY", bank: str | os.PathLike | None = None,
                        progress: bool = False) -> EvalReport:
    """Load a checkpoint, its text tower (or ``text_tower``) and the ``FORMAT:PATH`` sets, then
    :func:`evaluate_sets`. ``prompts`` defaults to the first set's benchmark prompt set (or to the
    prompt set ``bank`` was encoded from); ``max_points`` overrides the sets' point counts. With a
    prompt ``bank`` (``blendclip-prompts encode``) no text tower is built; a bank from another text
    space than the model's is refused."""
    from blendclip_ros.model.checkpoint import load_checkpoint
    from blendclip_ros.text.bank import (
        build_text_bank,
        check_bank_space,
        load_bank,
        read_bank_document,
    )
    from blendclip_ros.text.prompts import PromptClass, load_prompt_set
    from blendclip_ros.text.towers import make_text_tower, resolve_device

    sets = [load_eval_set(spec, scanobjectnn_variant=scanobjectnn_variant) for spec in data]
    if max_points is not None:
        sets = [dataclasses.replace(s, num_points=max_points) for s in sets]
    dev = resolve_device(device)
    loaded = load_checkpoint(checkpoint, device=dev)
    if bank is not None:
        if text_tower is not None:
            raise ConfigError("bank: a prompt bank replaces the text tower; pass one or the other")
        text_bank = load_bank(bank)
        check_bank_space(text_bank, loaded.text_space, loaded.model.config.embed_dim, f"checkpoint {checkpoint}")
        if prompts is None:
            document, _ = read_bank_document(bank)
            prompts = PromptSet(str(document.get("prompt_set", "bank")),
                                tuple(PromptClass(p[0], tuple(p[1:])) for p in document["phrases"]),
                                tuple(document["templates"]))
    prompts = sets[0].prompts if prompts is None else prompts
    prompt_set = prompts if isinstance(prompts, PromptSet) else load_prompt_set(prompts)
    if bank is None:
        spec = text_tower if text_tower is not None else loaded.text_tower
        if spec is None:
            raise ConfigError(f"text_tower: checkpoint {checkpoint} names no text tower; pass one or a --bank")
        text_bank = build_text_bank(make_text_tower(spec, dev), prompt_set, cache_dir)
    report = evaluate_sets(loaded.model, text_bank, prompt_set, sets, repeats=repeats, batch_size=batch_size,
                           progress=progress)
    report.sets = [{"name": s.name, "objects": len(s), "num_points": s.num_points, "sampling": s.sampling,
                    "skipped": s.skipped, **s.info} for s in sets]
    return report


def confusion_png(metrics: ZeroShotMetrics, path: str | os.PathLike, title: str = "") -> Path:
    """Row-normalised confusion matrix (true class per row) as a PNG with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, labels = metrics.confusion, list(metrics.labels)
    if len(labels) > 40:  # large vocabularies (Objaverse-LVIS): only classes that occur or are predicted
        used = np.flatnonzero((counts.sum(0) + counts.sum(1)) > 0)
        counts, labels = counts[np.ix_(used, used)], [labels[i] for i in used]
    matrix = counts.astype(np.float64)
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    readable = len(labels) <= 60
    size = 2.5 + 0.55 * len(labels) if readable else 16.0
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    if readable:
        ticks = np.arange(len(labels))
        ax.set_xticks(ticks, labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(ticks, labels, fontsize=8)
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=6,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("true class")
    ax.set_title(title or f"top-1 {100 * metrics.top1:.1f} %, mean class {100 * metrics.mean_class_top1:.1f} % "
                 f"(n = {metrics.count})", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return save_figure(fig, path, dpi=110)

