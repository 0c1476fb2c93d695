"""Zero-shot metrics: top-1/3/5, mean class accuracy, per-class values and the confusion matrix.

One sample = one object; scores are cosine similarities (the logit scale does not change the
ranking). Overall accuracies are over samples; mean class accuracy averages the per-class values
over the classes that have samples; the confusion matrix has true classes as rows and top-1
predictions as columns. Object-set classes are matched to prompt classes by name or synonym
(case-insensitive, underscores read as spaces).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from blendclip_ros.errors import ConfigError
from blendclip_ros.text.prompts import PromptSet

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
    top3: float = math.nan
    mean_class_top3: float = math.nan
    per_class_top3: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN becomes null)."""
        def clean(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        return {
            "count": self.count, "top1": clean(self.top1), "top3": clean(self.top3), "top5": clean(self.top5),
            "mean_class_top1": clean(self.mean_class_top1), "mean_class_top3": clean(self.mean_class_top3),
            "mean_class_top5": clean(self.mean_class_top5),
            "per_class": {name: {"count": n, "top1": clean(a), "top3": clean(c), "top5": clean(b)}
                          for name, n, a, c, b in zip(self.labels, self.per_class_count, self.per_class_top1,
                                                      self.per_class_top3, self.per_class_top5)},
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
    hit3 = (ranked[:, :3] == targets[:, None]).any(1).double()
    hit5 = (ranked == targets[:, None]).any(1).double()
    counts = torch.bincount(targets, minlength=classes)
    per1, per3, per5 = (torch.bincount(targets, hit, minlength=classes) / counts for hit in (hit1, hit3, hit5))
    present = counts > 0
    confusion = torch.bincount(targets * classes + ranked[:, 0], minlength=classes * classes)

    def mean(v: torch.Tensor) -> float:
        return float(v.mean()) if len(v) else math.nan

    return ZeroShotMetrics(
        labels=list(labels), count=len(targets), top1=mean(hit1), top5=mean(hit5),
        mean_class_top1=mean(per1[present]), mean_class_top5=mean(per5[present]),
        per_class_count=counts.tolist(), per_class_top1=per1.tolist(), per_class_top5=per5.tolist(),
        confusion=confusion.reshape(classes, classes).numpy().astype(np.int64), skipped=dict(skipped or {}),
        top3=mean(hit3), mean_class_top3=mean(per3[present]), per_class_top3=per3.tolist())


def class_mapping(names: Sequence[str], prompt_set: PromptSet) -> np.ndarray:
    """Prompt-class index of every object-set class name (-1 when the prompt set lacks it)."""
    def key(text: str) -> str:
        return " ".join(text.replace("_", " ").lower().split())

    index = {}
    for i, prompt_class in enumerate(prompt_set.classes):
        for phrase in prompt_class.phrases:
            index.setdefault(key(phrase), i)
    return np.array([index.get(key(n), -1) for n in names], dtype=np.int64)
