"""Zero-shot evaluation: rank a prompt set's classes for every object of one or more object sets.

One sample = one object; scores are cosine similarities (the logit scale does not change the
ranking). Metrics follow BlendCLIP's protocol: overall top-1 / top-5 over samples, mean class
accuracy (per-class top-1 and top-5 averaged over the classes that have samples) and per-class
values, plus a confusion matrix (rows = true class, columns = top-1 prediction).

Object-set classes are matched to prompt classes by name or synonym (case-insensitive,
underscores read as spaces); objects of classes the prompt set lacks are skipped and counted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from blendclip_ros.errors import ConfigError
from .figures import save_figure
from blendclip_ros.model.pointbert import BlendClipPointModel
from blendclip_ros.text.bank import TextBank
from blendclip_ros.text.prompts import PromptSet
from .triplets import REAL, TripletDataset

TOP_K = 5


@dataclass
class ZeroShotMetrics:
    """Accuracies in [0, 1]; per-class entries are NaN for classes without samples."""

    labels: list[str]
    count: int
    top1: float
    top5: float
    mean_class_top1: float
    mean_class_top5: float
    per_class_count: list[int]
    per_class_top1: list[float]
    per_class_top5: list[float]
    confusion: np.ndarray  # (C, C) int64, rows true, columns predicted
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN becomes null)."""
        def clean(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        return {
            "count": self.count, "top1": clean(self.top1), "top5": clean(self.top5),
            "mean_class_top1": clean(self.mean_class_top1), "mean_class_top5": clean(self.mean_class_top5),
            "per_class": {name: {"count": n, "top1": clean(a), "top5": clean(b)} for name, n, a, b in zip(
                self.labels, self.per_class_count, self.per_class_top1, self.per_class_top5)},
            "confusion": {"labels": list(self.labels), "matrix": self.confusion.tolist()},
            "skipped": dict(self.skipped),
        }


def zero_shot_metrics(scores: torch.Tensor, targets: torch.Tensor, labels: Sequence[str],
                      skipped: dict[str, int] | None = None) -> ZeroShotMetrics:
    """Metrics of ``(N, C)`` class scores against ``(N,)`` true class indices into ``labels``."""
    scores, targets = torch.as_tensor(scores).float().cpu(), torch.as_tensor(targets).long().cpu()
    classes = len(labels)
    if scores.ndim != 2 or scores.shape[1] != classes or targets.shape != (scores.shape[0],):
        raise ConfigError(f"scores: expected ({len(targets)}, {classes}) for {classes} labels, "
                          f"got {tuple(scores.shape)}")
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise ConfigError(f"targets: class indices must be in 0..{classes - 1}")
    ranked = scores.topk(min(TOP_K, classes), dim=1).indices
    hit1 = (ranked[:, 0] == targets).double()
    hit5 = (ranked == targets[:, None]).any(1).double()
    counts = torch.bincount(targets, minlength=classes)
    per1 = torch.bincount(targets, hit1, minlength=classes) / counts
    per5 = torch.bincount(targets, hit5, minlength=classes) / counts
    present = counts > 0
    confusion = torch.bincount(targets * classes + ranked[:, 0], minlength=classes * classes)
    mean = (lambda v: float(v.mean()) if len(v) else math.nan)
    return ZeroShotMetrics(
        labels=list(labels), count=len(targets), top1=mean(hit1), top5=mean(hit5),
        mean_class_top1=mean(per1[present]), mean_class_top5=mean(per5[present]),
        per_class_count=counts.tolist(), per_class_top1=per1.tolist(), per_class_top5=per5.tolist(),
        confusion=confusion.reshape(classes, classes).numpy().astype(np.int64), skipped=dict(skipped or {}))


def class_mapping(names: Sequence[str], prompt_set: PromptSet) -> np.ndarray:
    """Prompt-class index of every object-set class name (-1 when the prompt set lacks it)."""
    def key(text: str) -> str:
        return " ".join(text.replace("_", " ").lower().split())

    index = {}
    for i, prompt_class in enumerate(prompt_set.classes):
        for phrase in prompt_class.phrases:
            index.setdefault(key(phrase), i)
    return np.array([index.get(key(n), -1) for n in names], dtype=np.int64)


@torch.no_grad()
def encode_dataset(model: BlendClipPointModel, dataset: Dataset, *, batch_size: int = 256,
                   progress: bool = False) -> torch.Tensor:
    """``(M, D)`` normalised embeddings of every object (eval mode, deterministic FPS start)."""
    was_training = model.training
    model.eval()
    out = []
    device = model.pc_projection.device
    for start in tqdm(range(0, len(dataset), batch_size), disable=not progress, desc="encode", unit="batch"):
        clouds = [torch.from_numpy(dataset[i].points).to(device)
                  for i in range(start, min(start + batch_size, len(dataset)))]
        out.append(model.encode(clouds).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)


def evaluate_model(model: BlendClipPointModel, bank: TextBank, prompt_set: PromptSet,
                   data: Sequence[str | os.PathLike] | TripletDataset, *, max_points: int = 8192,
                   batch_size: int = 256, progress: bool = False) -> ZeroShotMetrics:
    """Zero-shot metrics of ``model`` on object sets (paths, or a loaded dataset) with ``bank``."""
    if bank.dim != model.config.embed_dim:
        raise ConfigError(f"bank: {bank.dim}-d text embeddings but the model projects to {model.config.embed_dim}-d")
    if list(bank.labels) != prompt_set.labels:
        raise ConfigError("bank: its labels are not the prompt set's")
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


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: Sequence[str | os.PathLike],
                        prompts: PromptSet | str | os.PathLike, *, device: str = "cpu", batch_size: int = 256,
                        max_points: int = 8192, cache_dir: str | os.PathLike | None = None,
                        text_tower: dict[str, Any] | None = None, progress: bool = False) -> ZeroShotMetrics:
    """Load a checkpoint and its text tower (or ``text_tower``), then :func:`evaluate_model`."""
    from blendclip_ros.model.checkpoint import load_checkpoint
    from blendclip_ros.text.bank import build_text_bank
    from blendclip_ros.text.prompts import load_prompt_set
    from blendclip_ros.text.towers import make_text_tower, resolve_device

    dev = resolve_device(device)
    prompt_set = prompts if isinstance(prompts, PromptSet) else load_prompt_set(prompts)
    loaded = load_checkpoint(checkpoint, device=dev)
    spec = text_tower if text_tower is not None else loaded.text_tower
    if spec is None:
        raise ConfigError(f"text_tower: checkpoint {checkpoint} names no text tower; pass one")
    bank = build_text_bank(make_text_tower(spec, dev), prompt_set, cache_dir)
    return evaluate_model(loaded.model, bank, prompt_set, data, max_points=min(max_points,
                          loaded.model.config.max_points), batch_size=batch_size, progress=progress)


def confusion_png(metrics: ZeroShotMetrics, path: str | os.PathLike, title: str = "") -> Path:
    """Row-normalised confusion matrix (true class per row) as a PNG with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = metrics.confusion.astype(np.float64)
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = 2.5 + 0.55 * len(metrics.labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(metrics.labels))
    ax.set_xticks(ticks, metrics.labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, metrics.labels, fontsize=8)
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("true class")
    for (i, j), n in np.ndenumerate(metrics.confusion):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=6,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_title(title or f"top-1 {100 * metrics.top1:.1f} %, mean class {100 * metrics.mean_class_top1:.1f} % "
                 f"(n = {metrics.count})", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return save_figure(fig, path, dpi=110)

