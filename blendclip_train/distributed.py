"""The process group of a torchrun launch: rank, world size, device, and the collectives training uses.

Started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
variables), :meth:`Distributed.from_env` joins the default process group with NCCL on GPUs and
gloo on CPU; a plain ``python`` start (or ``WORLD_SIZE=1``) is a single process and every
collective is the identity. Nothing here is home-made: ``torch.distributed`` does the work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from blendclip_ros.text.towers import resolve_device

from .losses import GlobalBatch


@dataclass
class Distributed:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # this object initialised the process group (and destroys it)

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        """Join torchrun's process group if there is one; ``device`` is ``cpu``, ``cuda`` or ``cuda:N``."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=resolve_device(device))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        on_gpu = resolve_device(device).type == "cuda"
        if on_gpu:
            torch.cuda.set_device(local_rank)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if on_gpu else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), local_rank,
                   torch.device("cuda", local_rank) if on_gpu else torch.device("cpu"), owns)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """In-place sum (or ``max``) over ranks; returns ``tensor``."""
        if self.active:
            dist.all_reduce(tensor, dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return tensor

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
        if self.active:
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)

    def gather(self, tensor: Tensor, with_grad: bool = False) -> Tensor:
        """``(W B, ...)``: every rank's ``tensor`` in rank order.

        ``with_grad`` differentiates through every copy (``torch.distributed.nn.all_gather``);
        otherwise only this rank's own rows carry a gradient (the release's behaviour).
        """
        if not self.active:
            return tensor
        if with_grad:
            return torch.cat(dist.nn.functional.all_gather(tensor))
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.detach().contiguous())
        parts[self.rank] = tensor
        return torch.cat(parts)

    def global_batch(self, with_grad: bool = False):
        """A ``gather`` callable for :func:`~blendclip_train.losses.contrastive_loss` (every rank must pass
        images, or none)."""
        def gather(points: Tensor, texts: Tensor, images: Tensor | None, mask: Tensor | None) -> GlobalBatch:
            return GlobalBatch(self.gather(points, with_grad), self.gather(texts),
                               None if images is None else self.gather(images),
                               None if mask is None else self.gather(mask.to(torch.uint8)).bool(),
                               self.rank * len(points))
        return gather

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
