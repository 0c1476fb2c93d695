"""Symmetric InfoNCE between point embeddings and frozen text (and image) embeddings.

``L = 1/2 [CE(s P T^T) + CE(s T P^T)] + 1/2 [CE(s P I^T) + CE(s I P^T)]`` with diagonal targets,
L2-normalised rows and ``s = exp(logit_scale)`` (learnable, initialised to 1/0.07, clamped to
<= 100 after every optimiser step by :func:`clamp_logit_scale_`). The image term only covers
the rows that have an image embedding and is left out when fewer than two have one.
"""

from __future__ import annotations

import math
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
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def contrastive_loss(points: Tensor, texts: Tensor, logit_scale: Tensor, images: Tensor | None = None,
                     image_mask: Tensor | None = None) -> ContrastiveLoss:
    """Point-text (+ point-image) loss for one batch; ``logit_scale`` is the log of ``s``."""
    scale = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    point_text = symmetric_infonce(points, texts, scale)
    total, point_image = point_text, None
    if images is not None:
        mask = torch.ones(len(images), dtype=torch.bool, device=images.device) if image_mask is None \
            else image_mask.to(images.device)
        if int(mask.sum()) >= 2:
            image_term = symmetric_infonce(points[mask], images[mask], scale)
            total = total + image_term
            point_image = float(image_term.detach())
    with torch.no_grad():
        hits = (F.normalize(points, dim=-1) @ F.normalize(texts, dim=-1).T).argmax(1)
        accuracy = float((hits == torch.arange(len(hits), device=hits.device)).float().mean())
    return ContrastiveLoss(total, float(point_text.detach()), point_image, accuracy)


def clamp_logit_scale_(model: nn.Module, max_scale: float = MAX_LOGIT_SCALE) -> None:
    """Clamp ``model.logit_scale`` in place to ``[0, log(max_scale)]`` (call after each step)."""
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, math.log(max_scale))
