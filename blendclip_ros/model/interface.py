"""What every point model offers the pipeline, the CLI, the node and evaluation.

A point model (BlendCLIP/ULIP-2 PointBERT, OpenShape point-patch transformer, Uni3D) is an
``nn.Module`` with ``config.embed_dim``, ``config.max_points``, ``config.in_channels``, a
``logit_scale`` parameter (log of the CLIP multiplier), ``device`` and
``encode(clouds, normalize=True, *, generator=None, random_start=False)`` taking preprocessed
``(N_i, in_channels)`` clouds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from blendclip_ros.errors import ConfigError


@runtime_checkable
class PointModel(Protocol):
    """The encoder interface shared by every model family."""

    logit_scale: Tensor

    @property
    def device(self) -> torch.device: ...

    def encode(self, clouds: Sequence[Tensor], normalize: bool = True, *,
               generator: torch.Generator | None = None, random_start: bool = False) -> Tensor: ...


def encode_random_starts(model: PointModel, clouds: Sequence[Tensor], repeats: int, *,
                         seed: int = 0, normalize: bool = True) -> Tensor:
    """``(repeats, B, D)`` embeddings, run ``k`` starting grouping FPS at random points drawn from
    a generator seeded ``seed + k`` (the release seeds run ``k`` of ``--test_repeat`` so).

    The release reports the mean of the per-run accuracies; ``mean(0)`` of the normalised
    embeddings is the cheaper ensemble.
    """
    if int(repeats) < 1:
        raise ConfigError(f"repeats: expected a positive integer, got {repeats!r}")
    runs = []
    for k in range(int(repeats)):
        generator = torch.Generator().manual_seed(int(seed) + k)
        runs.append(model.encode(clouds, normalize, generator=generator, random_start=True))
    return torch.stack(runs)
