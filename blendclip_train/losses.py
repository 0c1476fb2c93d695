"""Symmetric InfoNCE between point embeddings and frozen text (and image) embeddings.

``L = 1/2 [CE(s P T^T) + CE(s T P^T)] + 1/2 [CE(s P I^T) + CE(s I P^T)]`` with diagonal targets,
L2-normalised rows and ``s = exp(logit_scale)`` (learnable, initialised to 1/0.07, clamped to
<= 100 after every optimiser step by :func:`clamp_logit_scale_`). The image term covers every
row that has an image embedding and is left out when fewer than two have one.

Under torchrun each rank scores its local rows against the embeddings of the whole global batch
(:class:`GlobalBatch`, all-gathered in rank order): row ``i`` of rank ``r`` has its positive at
column ``r B + i``, every other rank's rows are negatives, as the release does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blendclip_ros.errors import ConfigError

MAX_LOGIT_SCALE = 100.0


@dataclass
class ContrastiveLoss:
    """The loss and its parts (detached floats except ``total``)."""

    total: Tensor
    point_text: float
    point_image: float | None
    retrieval_accuracy: float  # point -> text top-1 within the batch (diagonal)


def symmetric_infonce(a: Tensor, b: Tensor, scale: Tensor | float) -> Tensor:
    """``(CE(s a b^T) + CE(s b a^T)) / 2`` for row-aligned ``(B, D)`` embeddings (normalised here)."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ConfigError(f"embeddings: expected two (B, D) tensors of one shape, got {tuple(a.shape)} "
                          f"and {tuple(b.shape)}")
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return _two_way(a, b, a, b, torch.arange(a.shape[0], device=a.device), scale)


@dataclass
class GlobalBatch:
    """Normalised embeddings of every rank's rows (rank order) and where this rank's rows start."""

    points: Tensor  # (W B, D)
    texts: Tensor  # (W B, D)
    images: Tensor | None  # (W B, D)
    image_mask: Tensor | None  # (W B,) bool
    offset: int  # first global row of this rank


def contrastive_loss(points: Tensor, texts: Tensor, logit_scale: Tensor, images: Tensor | None = None,
                     image_mask: Tensor | None = None, *,
                     gather: Callable[[Tensor, Tensor, Tensor | None, Tensor | None], GlobalBatch] | None = None
                     ) -> ContrastiveLoss:
    """Point-text (+ point-image) loss of this batch's rows; ``logit_scale`` is the log of ``s``.

    ``gather`` (distributed runs) maps the normalised local ``(points, texts, images, mask)`` to
    the :class:`GlobalBatch` whose rows serve as negatives; by default the batch is the whole batch.
    """
    if points.ndim != 2 or points.shape != texts.shape:
        raise ConfigError(f"embeddings: expected two (B, D) tensors of one shape, got {tuple(points.shape)} "
                          f"and {tuple(texts.shape)}")
    scale = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    points, texts = F.normalize(points, dim=-1), F.normalize(texts, dim=-1)
    mask = None
    if images is not None:
        images = F.normalize(images, dim=-1)
        mask = torch.ones(len(images), dtype=torch.bool, device=images.device) if image_mask is None \
            else image_mask.to(images.device)
    batch = GlobalBatch(points, texts, images, mask, 0) if gather is None else gather(points, texts, images, mask)
    rows = torch.arange(len(points), device=points.device)
    point_text = _two_way(points, texts, batch.points, batch.texts, batch.offset + rows, scale)
    total, point_image = point_text, None
    if images is not None and batch.images is not None and int(batch.image_mask.sum()) >= 2 and bool(mask.any()):
        column = torch.cumsum(batch.image_mask.long(), 0) - 1  # position among the global rows with an image
        targets = column[batch.offset + rows[mask]]
        image_term = _two_way(points[mask], images[mask], batch.points[batch.image_mask],
                              batch.images[batch.image_mask], targets, scale)
        total = total + image_term
        point_image = float(image_term.detach())
    with torch.no_grad():
        hits = (points @ batch.texts.T).argmax(1)
        accuracy = float((hits == batch.offset + rows).float().mean())
    return ContrastiveLoss(total, float(point_text.detach()), point_image, accuracy)


def _two_way(a: Tensor, b: Tensor, all_a: Tensor, all_b: Tensor, targets: Tensor, scale: Tensor) -> Tensor:
    """``(CE(s a all_b^T) + CE(s b all_a^T)) / 2`` with the positives of the local rows at ``targets``."""
    return (F.cross_entropy(scale * a @ all_b.T, targets) + F.cross_entropy(scale * b @ all_a.T, targets)) / 2


def clamp_logit_scale_(model: nn.Module, max_scale: float = MAX_LOGIT_SCALE) -> None:
    """Clamp ``model.logit_scale`` in place to ``[0, log(max_scale)]`` (call after each step)."""
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, math.log(max_scale))
