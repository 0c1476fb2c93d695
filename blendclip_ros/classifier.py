"""Zero-shot classification: cosine similarity x logit scale -> softmax over a prompt set."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import ConfigError
from .text.bank import TextBank


@dataclass(frozen=True)
class Prediction:
    """One object's result. ``score`` is the top-1 probability (0.0 when not encoded)."""

    label: str
    score: float
    top_k: list[tuple[str, float]]
    is_unknown: bool


class ZeroShotClassifier:
    """Ranks a text bank's classes for point embeddings.

    ``logit_scale`` is the multiplier ``s`` (``exp`` of a CLIP model's learnt log scale, e.g.
    14.3 at init, <= 100 trained). A row is ``unknown_label`` when its object has fewer than
    ``min_points`` points (not encoded: empty ``top_k``, score 0) or its top-1 probability is
    below ``score_threshold`` (its ``top_k`` is kept).
    """

    def __init__(self, bank: TextBank, logit_scale: float, top_k: int = 3, score_threshold: float = 0.0,
                 min_points: int = 1, unknown_label: str = "unknown") -> None:
        scale = float(logit_scale)
        if not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"logit_scale: must be a positive finite multiplier, got {logit_scale!r}")
        if int(top_k) < 1:
            raise ConfigError(f"top_k: must be >= 1, got {top_k!r}")
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ConfigError(f"score_threshold: must be in [0, 1], got {score_threshold!r}")
        if int(min_points) < 1:
            raise ConfigError(f"min_points: must be >= 1, got {min_points!r}")
        self.logit_scale = scale
        self.top_k = int(top_k)
        self.score_threshold = float(score_threshold)
        self.min_points = int(min_points)
        self.unknown_label = unknown_label
        self._bank = bank

    @property
    def bank(self) -> TextBank:
        return self._bank

    @property
    def labels(self) -> tuple[str, ...]:
        return self._bank.labels

    def set_bank(self, bank: TextBank) -> None:
        """Swap the prompt set atomically (a classify in flight keeps the bank it started with)."""
        if bank.dim != self._bank.dim:
            raise ConfigError(f"bank: new bank is {bank.dim}-d, the model's text space is {self._bank.dim}-d")
        self._bank = bank

    def probabilities(self, embeddings: torch.Tensor, bank: TextBank | None = None) -> torch.Tensor:
        """``(B, C)`` softmax of ``logit_scale * cos(embedding, class)``."""
        bank = self._bank if bank is None else bank
        if embeddings.ndim != 2 or embeddings.shape[1] != bank.dim:
            raise ConfigError(f"embeddings: expected shape (B, {bank.dim}), got {tuple(embeddings.shape)}")
        text = bank.embeddings.to(device=embeddings.device, dtype=torch.float32)
        return torch.softmax(self.logit_scale * (embeddings.float() @ text.T), dim=1)

    def classify(self, embeddings: torch.Tensor, num_points: torch.Tensor | list[int]) -> list[Prediction]:
        """One prediction per row; rows with fewer than ``min_points`` points are not read."""
        bank = self._bank
        counts = torch.as_tensor(num_points, dtype=torch.int64).reshape(-1).cpu()
        if embeddings.ndim != 2 or embeddings.shape[0] != counts.shape[0]:
            raise ConfigError(f"num_points: {counts.shape[0]} counts for embeddings of shape "
                              f"{tuple(embeddings.shape)}")
        encoded = counts >= self.min_points
        rows = torch.nonzero(encoded).reshape(-1)
        predictions = [Prediction(self.unknown_label, 0.0, [], True)] * counts.shape[0]
        if rows.numel() == 0:
            return predictions
        probs = self.probabilities(embeddings[rows.to(embeddings.device)], bank)
        k = min(self.top_k, probs.shape[1])
        top_p, top_i = (t.cpu().tolist() for t in torch.topk(probs, k, dim=1))
        labels = bank.labels
        for row, ps, ids in zip(rows.tolist(), top_p, top_i):
            ranked = [(labels[i], p) for i, p in zip(ids, ps)]
            unknown = ps[0] < self.score_threshold
            predictions[row] = Prediction(self.unknown_label if unknown else ranked[0][0], ps[0], ranked, unknown)
        return predictions
