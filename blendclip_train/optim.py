"""AdamW with BlendCLIP's parameter groups and a per-iteration warm-up + cosine learning rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from blendclip_ros.errors import ConfigError


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights, and biases / norm parameters / 1-d tensors / logit scale."""
    decay, no_decay = [], []
    norm_types = (nn.LayerNorm, nn.BatchNorm1d, nn.GroupNorm)
    norm_params = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters()}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or name.endswith(".bias") or name == "logit_scale" or id(param) in norm_params:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1,
                    betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW(beta 0.9/0.98, eps 1e-8); weight decay on weights only."""
    if not lr > 0 or not weight_decay >= 0:
        raise ConfigError(f"lr/weight_decay: need lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


@dataclass(frozen=True)
class WarmupCosine:
    """Learning rate per iteration: linear ``start -> peak`` over ``warmup`` iterations, then a
    cosine from ``peak`` to ``floor`` at iteration ``total``."""

    peak: float
    total: int
    warmup: int
    start: float = 1e-6
    floor: float = 1e-5

    def __post_init__(self) -> None:
        if not 0 <= self.warmup < self.total:
            raise ConfigError(f"warmup: needs 0 <= warmup < total iterations, got {self.warmup} and {self.total}")
        if not 0 <= self.floor <= self.peak or not 0 <= self.start <= self.peak:
            raise ConfigError(f"lr: needs start, floor <= peak, got {self.start}, {self.floor}, {self.peak}")

    def __call__(self, iteration: int) -> float:
        if iteration < self.warmup:
            return self.start + (self.peak - self.start) * iteration / self.warmup
        progress = min(1.0, (iteration - self.warmup) / max(1, self.total - 1 - self.warmup))
        return self.floor + (self.peak - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        """Set every group's learning rate for ``iteration``; returns it."""
        lr = self(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
