"""BlendCLIP training augmentation, z-up: scale, translate, small rotation, full yaw, point drop-out.

Applied in this order to normalised clouds of any sizes (the release's order and ranges, with the
full random rotation about **z** instead of y: every cloud here is z-up, REP-103). All random
draws are made per cloud in one call each; the clouds are then transformed together by one
batched affine map over the zero-padded batch (no per-point or per-cloud Python arithmetic
beyond slicing the result).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from blendclip_ros.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the training augmentation (defaults: BlendCLIP's released values)."""

    scale_low: float = 0.8
    scale_high: float = 1.25
    translate: float = 0.1  # U(-t, t) per axis
    tilt_sigma: float = 0.06  # small rotation about every axis, radians
    tilt_clip: float = 0.18
    full_yaw: bool = True  # U(0, 2 pi) about z
    dropout_max: float = 0.875  # drop-out ratio ~ U(0, dropout_max)

    def __post_init__(self) -> None:
        if not 0 < self.scale_low <= self.scale_high:
            raise ConfigError(f"scale_low/scale_high: need 0 < low <= high, got {self.scale_low}, {self.scale_high}")
        for name in ("translate", "tilt_sigma", "tilt_clip"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.dropout_max < 1:
            raise ConfigError(f"dropout_max: must be in [0, 1), got {self.dropout_max!r}")


def rotation_matrices(angles: Tensor) -> Tensor:
    """``(B, 3, 3)`` matrices ``Rz(c) @ Ry(b) @ Rx(a)`` for angles ``(B, 3)`` = (a, b, c) radians."""
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def matrix(rows: list[list[Tensor]]) -> Tensor:
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    rx = matrix([[one, zero, zero], [zero, cos[:, 0], -sin[:, 0]], [zero, sin[:, 0], cos[:, 0]]])
    ry = matrix([[cos[:, 1], zero, sin[:, 1]], [zero, one, zero], [-sin[:, 1], zero, cos[:, 1]]])
    rz = matrix([[cos[:, 2], -sin[:, 2], zero], [sin[:, 2], cos[:, 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def augment_clouds(clouds: Sequence[Tensor], config: AugmentConfig = AugmentConfig(), *,
                   generator: torch.Generator | None = None) -> list[Tensor]:
    """Augmented copies of ``(N_i, 3)`` clouds (same sizes, dtype and device).

    Per cloud: ``p -> Ryaw Rtilt (s p + t)``; then each point is dropped with the cloud's
    ratio ``U(0, dropout_max)`` and replaced by a copy of the cloud's first point, so the
    count is kept. ``generator`` (a CPU generator) makes the draws reproducible.
    """
    if not clouds:
        return []
    device, dtype = clouds[0].device, clouds[0].dtype
    batch = len(clouds)

    def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
        return torch.rand(*shape, generator=generator, dtype=torch.float64) * (high - low) + low

    scale = uniform(batch, 1, low=config.scale_low, high=config.scale_high)
    shift = uniform(batch, 3, low=-config.translate, high=config.translate)
    tilt = (torch.randn(batch, 3, generator=generator, dtype=torch.float64) * config.tilt_sigma
            ).clamp(-config.tilt_clip, config.tilt_clip)
    yaw = uniform(batch, high=2 * math.pi) if config.full_yaw else torch.zeros(batch, dtype=torch.float64)
    rotation = rotation_matrices(torch.stack([torch.zeros_like(yaw), torch.zeros_like(yaw), yaw], 1)) \
        @ rotation_matrices(tilt)
    ratio = uniform(batch, high=config.dropout_max)
    # R (s p + t) = (s R) p + R t, one batched affine map over the zero-padded clouds
    linear = (rotation * scale[:, :, None]).transpose(1, 2).to(device, dtype)
    offset = (rotation @ shift[:, :, None]).transpose(1, 2).to(device, dtype)
    padded = pad_sequence(list(clouds), batch_first=True)
    moved = torch.baddbmm(offset, padded, linear)
    keep = torch.rand(padded.shape[:2], generator=generator) >= ratio[:, None]
    moved = torch.where(keep.to(device)[:, :, None], moved, moved[:, :1])
    return [moved[i, :len(cloud)] for i, cloud in enumerate(clouds)]
