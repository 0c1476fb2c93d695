"""OpenShape's point-patch transformer ("PointBERT" in its model names), for inference.

Parameter names follow the published files once their prefix is removed (``ppat.*``, ``proj.*``):
set abstraction ``sa.mlp_convs.{i}`` / ``sa.mlp_bns.{i}`` (1x1 Conv2d + BatchNorm2d + ReLU),
``lift.0`` (Conv1d) and ``lift.2`` (LayerNorm), ``cls_token`` (a bare vector), and
``transformer.layers.{i}.0`` (pre-norm attention: ``norm``, ``fn.to_qkv`` without bias,
``fn.to_out.0``) and ``.1`` (pre-norm feed-forward: ``norm``, ``fn.net.0``, ``fn.net.3``).

A cloud is ``(N, 6)`` = xyz + rgb. FPS picks ``patches`` centres, a ball query of ``radius``
keeps the ``samples`` lowest-index points inside (padding with the first), each neighbour is
``[xyz - centre, xyz, rgb]``; patch features are lifted with their centre, a CLS token is
prepended, there is no positional embedding, and the output is the CLS token (projected).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blendclip_ros.errors import ConfigError
from blendclip_ros.geometry.preprocess import InputConvention
from blendclip_ros.model.config import DictConfig
from blendclip_ros.model.pointbert import as_cloud_list
from blendclip_ros.model.sampling import (
    bucket_by_size,
    farthest_point_sample,
    pad_clouds,
)

#: Upper bound on (clouds x centres x points) distance elements per ball-query block.
BALL_BLOCK_ELEMENTS = 1 << 24
#: Upper bound on activation elements per set-abstraction chunk.
SA_BLOCK_ELEMENTS = 1 << 25
DIM_HEAD = 64


@dataclass(frozen=True)
class PPATConfig(DictConfig):
    """Architecture of one OpenShape point-patch transformer.

    ``projected``: a ``Linear(dim, embed_dim)`` follows (bigG, L/14); without one (B/32) the
    CLS feature is the embedding and ``embed_dim`` equals ``dim``.
    """

    dim: int = 512
    depth: int = 12
    heads: int = 8
    mlp_dim: int = 1536
    sa_dim: int = 256
    patches: int = 384
    radius: float = 0.2
    samples: int = 64
    in_channels: int = 6
    embed_dim: int = 1280
    projected: bool = True
    max_points: int = 10000

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "heads", "mlp_dim", "sa_dim", "patches", "samples", "in_channels",
                     "embed_dim", "max_points"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
        if not float(self.radius) > 0:
            raise ConfigError(f"radius: expected a positive number, got {self.radius!r}")
        if not self.projected and self.embed_dim != self.dim:
            raise ConfigError(f"embed_dim: {self.embed_dim} != dim {self.dim} without a projection")


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * heads * DIM_HEAD, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * DIM_HEAD, dim))

    def forward(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        q, k, v = (self.to_qkv(x).reshape(batch, length, 3, self.heads, DIM_HEAD)
                   .permute(2, 0, 3, 1, 4).unbind(0))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(batch, length, -1))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _SetAbstraction(nn.Module):
    def __init__(self, in_channels: int, sa_dim: int) -> None:
        super().__init__()
        widths = [in_channels + 3, 64, 64, sa_dim]
        self.mlp_convs = nn.ModuleList(nn.Conv2d(a, b, 1) for a, b in zip(widths, widths[1:]))
        self.mlp_bns = nn.ModuleList(nn.BatchNorm2d(b) for b in widths[1:])

    def forward(self, grouped: Tensor) -> Tensor:
        """``(G, S, C)`` grouped features -> ``(G, sa_dim)``: shared MLP, then max over samples."""
        x = grouped
        for conv, norm in zip(self.mlp_convs, self.mlp_bns):
            x = F.linear(x, conv.weight.flatten(1), conv.bias)
            x = F.batch_norm(x.flatten(0, 1), norm.running_mean, norm.running_var, norm.weight, norm.bias,
                             False, 0.0, norm.eps).reshape(x.shape)
            x = F.relu(x)
        return x.amax(1)


class PointPatchTransformer(nn.Module):
    """OpenShape's PPAT: one ``dim`` CLS feature per ``(N, 6)`` cloud."""

    def __init__(self, config: PPATConfig) -> None:
        super().__init__()
        self.config = config
        self.sa = _SetAbstraction(config.in_channels, config.sa_dim)
        self.lift = nn.Sequential(nn.Conv1d(config.sa_dim + 3, config.dim, 1), nn.Identity(),
                                  nn.LayerNorm(config.dim))
        self.cls_token = nn.Parameter(torch.randn(config.dim))
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList(
            nn.ModuleList([_PreNorm(config.dim, _Attention(config.dim, config.heads)),
                           _PreNorm(config.dim, _FeedForward(config.dim, config.mlp_dim))])
            for _ in range(config.depth))

    def forward(self, clouds: list[Tensor], random_start: bool,
                generator: torch.Generator | None) -> Tensor:
        config = self.config
        lengths = torch.tensor([c.shape[0] for c in clouds], dtype=torch.long)
        out = self.cls_token.new_empty(len(clouds), config.dim)
        for members in bucket_by_size(lengths):
            points, member_lengths = pad_clouds([clouds[i] for i in members.tolist()])
            member_lengths = member_lengths.to(points.device)
            counts = torch.full_like(member_lengths, config.patches)
            centre_idx = farthest_point_sample(points, member_lengths, counts, random_start=random_start,
                                               generator=generator)
            centres = points[..., :3].gather(1, centre_idx[..., None].expand(-1, -1, 3))
            idx = ball_query(points, member_lengths, centres, config.radius, config.samples)
            features = self._patch_features(points, centres, idx)
            out[members.to(out.device)] = self._transform(centres, features)
        return out

    def _patch_features(self, points: Tensor, centres: Tensor, idx: Tensor) -> Tensor:
        """``(B, S, sa_dim)`` set-abstraction features, computed in bounded chunks of clouds."""
        batch, patches, samples = idx.shape
        per_cloud = patches * samples * max(64, self.config.sa_dim)
        step = max(1, SA_BLOCK_ELEMENTS // per_cloud)
        parts = []
        for start in range(0, batch, step):
            stop = min(batch, start + step)
            chunk_idx = idx[start:stop]
            neighbours = points[start:stop].gather(
                1, chunk_idx.reshape(stop - start, -1, 1).expand(-1, -1, points.shape[-1]))
            neighbours = neighbours.reshape(stop - start, patches, samples, -1)
            relative = neighbours[..., :3] - centres[start:stop, :, None, :]
            grouped = torch.cat([relative, neighbours], -1).flatten(0, 1)
            parts.append(self.sa(grouped).reshape(stop - start, patches, -1))
        return torch.cat(parts)

    def _transform(self, centres: Tensor, features: Tensor) -> Tensor:
        conv, _, norm = self.lift
        x = norm(F.linear(torch.cat([centres, features], -1), conv.weight.flatten(1), conv.bias))
        x = torch.cat([self.cls_token.expand(x.shape[0], 1, -1), x], 1)
        for attention, feed_forward in self.transformer.layers:
            x = x + attention.fn(attention.norm(x))
            x = x + feed_forward.fn(feed_forward.norm(x))
        return x[:, 0]


def ball_query(points: Tensor, lengths: Tensor, centres: Tensor, radius: float, samples: int) -> Tensor:
    """``(B, S, samples)`` indices: per centre, the lowest-index real points within ``radius``
    (squared distances as OpenShape computes them), padded with the first one found."""
    batch, rows, _ = points.shape
    xyz = points[..., :3]
    take = min(samples, rows)
    real = torch.arange(rows, device=points.device) < lengths[:, None]
    per_block = max(1, BALL_BLOCK_ELEMENTS // max(1, centres.shape[1] * rows))
    parts = []
    for start in range(0, batch, per_block):
        stop = min(batch, start + per_block)
        c, p = centres[start:stop], xyz[start:stop]
        dist = (-2 * c @ p.transpose(1, 2) + c.square().sum(-1)[..., None]
                + p.square().sum(-1)[:, None, :])
        inside = (dist <= radius ** 2) & real[start:stop, None, :]
        index = torch.where(inside, torch.arange(rows, device=points.device), rows)
        parts.append(index.topk(take, dim=-1, largest=False, sorted=True).values)
    idx = torch.cat(parts)
    idx = torch.where(idx == rows, idx[..., :1], idx)
    if take < samples:
        idx = torch.cat([idx, idx[..., :1].expand(-1, -1, samples - take)], -1)
    return idx


class OpenShapePointModel(nn.Module):
    """PPAT + optional linear projection into the text space + CLIP logit scale."""

    def __init__(self, config: PPATConfig) -> None:
        super().__init__()
        self.config = config
        self.ppat = PointPatchTransformer(config)
        self.proj = nn.Linear(config.dim, config.embed_dim) if config.projected else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.input_convention = InputConvention(num_points=config.max_points, resample_up=True,
                                                order="sample_then_normalize", channels=6)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode(self, clouds: Sequence[Tensor], normalize: bool = True, *,
               generator: torch.Generator | None = None, random_start: bool = False) -> Tensor:
        """Embeddings ``(B, embed_dim)`` of ``(N_i, 6)`` clouds (xyz + rgb).

        FPS starts at point 0, or at a random point (``generator``) with ``random_start`` as
        OpenShape's own sampler always does.
        """
        clouds = as_cloud_list(clouds, self.config.max_points, self.logit_scale, self.config.in_channels)
        if not clouds:
            return self.logit_scale.new_zeros(0, self.config.embed_dim)
        features = self.ppat(clouds, random_start or self.training, generator)
        embeddings = self.proj(features) if self.proj is not None else features
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

    forward = encode
