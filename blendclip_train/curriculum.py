"""The BlendCLIP curriculum: a batch sampler that mixes synthetic and real triplets on a schedule.

Epoch 0 is synthetic only; from epoch 1 the real share ramps linearly,
``r(e) = r_max * min(1, (e - 1) / (E - 1))``, and stays constant within an epoch. Every batch of
``B`` holds ``round(r * B)`` real samples and the rest synthetic, both drawn with replacement,
then shuffled. Under torchrun every rank draws its own batches of ``B`` (the global batch is
``B x world size``) from a generator seeded with ``(seed, epoch, rank)`` through a
``numpy.random.SeedSequence``: no two (epoch, rank) pairs share a stream (the release adds the
three, so its epoch ``e`` on rank ``r + 1`` repeats epoch ``e + 1`` on rank ``r``).
``static=True`` uses ``r_max`` from epoch 0 (the constant-ratio ablation).

Batches are lists of :class:`~blendclip_train.data.Access` keys; their ``index`` addresses the
pooled space of :class:`~blendclip_train.data.StreamingTriplets` (synthetic
``0 .. n_synthetic-1``, real ``n_synthetic ..``). ``start_iteration`` skips the first batches of
an epoch without changing the rest (exact resume).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

from blendclip_ros.errors import ConfigError

from .data import Access, derive_seed


def real_share(epoch: int, epochs: int, r_max: float, static: bool = False) -> float:
    """Fraction of real samples per batch in ``epoch`` (0-based) of ``epochs``."""
    if epochs < 1 or not 0 <= epoch < epochs:
        raise ConfigError(f"epoch: {epoch} is outside 0..{epochs - 1}")
    if static:
        return float(r_max)
    if epoch == 0 or epochs < 2:
        return 0.0
    return float(r_max) * min(1.0, (epoch - 1) / (epochs - 1))


def real_per_batch(epoch: int, epochs: int, r_max: float, batch_size: int, static: bool = False) -> int:
    """``round(r(epoch) * batch_size)`` real samples in each batch of the epoch."""
    return int(round(real_share(epoch, epochs, r_max, static) * batch_size))


def mean_real_share(epochs: int, r_max: float, batch_size: int, static: bool = False) -> float:
    """Average real fraction per batch over the whole run (after rounding)."""
    return sum(real_per_batch(e, epochs, r_max, batch_size, static) for e in range(epochs)) / (epochs * batch_size)


@dataclass
class CurriculumBatchSampler(Sampler[list[Access]]):
    """Yields this rank's ``iterations`` batches of the epoch; call :meth:`set_epoch` first."""

    num_synthetic: int
    num_real: int
    batch_size: int
    iterations: int
    epochs: int
    r_max: float = 0.3
    static: bool = False
    seed: int = 0
    epoch: int = 0
    rank: int = 0
    start_iteration: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "iterations", "epochs", "num_synthetic"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if not 0.0 <= self.r_max <= 1.0:
            raise ConfigError(f"r_max: must be in [0, 1], got {self.r_max!r}")
        if self.num_real < 0:
            raise ConfigError(f"num_real: must be >= 0, got {self.num_real!r}")
        if self.r_max > 0 and self.num_real == 0:
            raise ConfigError("r_max: > 0 needs real samples (num_real is 0)")
        if self.seed < 0 or self.rank < 0:
            raise ConfigError(f"seed/rank: must be >= 0, got {self.seed}, {self.rank}")
        self.set_epoch(self.epoch, self.start_iteration)

    def set_epoch(self, epoch: int, start_iteration: int = 0) -> None:
        """Select the epoch (and the first batch to yield, for a resumed run)."""
        real_share(epoch, self.epochs, self.r_max, self.static)  # validates the range
        if not 0 <= start_iteration <= self.iterations:
            raise ConfigError(f"start_iteration: {start_iteration} is outside 0..{self.iterations}")
        self.epoch, self.start_iteration = int(epoch), int(start_iteration)

    @property
    def real_per_batch(self) -> int:
        """Real samples in each batch of the current epoch."""
        return real_per_batch(self.epoch, self.epochs, self.r_max, self.batch_size, self.static)

    def __len__(self) -> int:
        return self.iterations - self.start_iteration

    def __iter__(self) -> Iterator[list[Access]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.rank))
        real = self.real_per_batch
        shape = (self.iterations, self.batch_size)
        synthetic = torch.randint(self.num_synthetic, shape, generator=generator)
        if real:
            drawn = torch.randint(self.num_real, (self.iterations, real), generator=generator) + self.num_synthetic
            synthetic[:, :real] = drawn
        order = torch.rand(shape, generator=generator).argsort(1)
        batches = torch.gather(synthetic, 1, order).tolist()
        for iteration in range(self.start_iteration, self.iterations):
            yield [Access(index, self.seed, self.epoch, self.rank, iteration, slot)
                   for slot, index in enumerate(batches[iteration])]
