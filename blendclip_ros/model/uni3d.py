"""Uni3D point encoder (tiny to giant) on EVA transformer blocks from the installed timm.

Parameter names follow the published files (``point_encoder.*`` and ``logit_scale``): the
PointBERT-style tokenizer ``encoder.{first,second}_conv`` over ``[xyz - centre, rgb]``
neighbourhoods, ``encoder2trans``, ``pos_embed.{0,2}``, ``cls_token``, ``cls_pos``, the timm
EVA model as ``visual`` (its patch embedding and image position table are unused but present),
and ``trans2embed``. The positional embedding is added once; RoPE is not used; the output is
the CLS token through ``visual.norm`` and ``visual.fc_norm``, then ``trans2embed``.
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
from blendclip_ros.model.pointbert import MiniPointNet, as_cloud_list
from blendclip_ros.model.sampling import bucket_by_size, group_points, pad_clouds

#: Scale name -> (timm model, width, depth) as the Uni3D scripts pair them.
SCALES: dict[str, tuple[str, int, int]] = {
    "tiny": ("eva02_tiny_patch14_224", 192, 12),
    "small": ("eva02_small_patch14_224", 384, 12),
    "base": ("eva02_base_patch14_448", 768, 12),
    "large": ("eva02_large_patch14_448", 1024, 24),
    "giant": ("eva_giant_patch14_560", 1408, 40),
}
#: pointnet2's sampler never picks a centre this close (squared) to the origin.
POINTNET2_ORIGIN_SKIP = 1e-3


@dataclass(frozen=True)
class Uni3DConfig(DictConfig):
    """One Uni3D scale: the timm EVA model, tokenizer sizes and the 1024-d projection."""

    scale: str = "tiny"
    num_groups: int = 512
    group_size: int = 64
    encoder_dim: int = 512
    embed_dim: int = 1024
    head_classes: int = 0
    max_points: int = 10000

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ConfigError(f"scale: expected one of {list(SCALES)}, got {self.scale!r}")
        for name in ("num_groups", "group_size", "encoder_dim", "embed_dim", "max_points"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {value!r}")

    @property
    def timm_model(self) -> str:
        return SCALES[self.scale][0]

    @property
    def width(self) -> int:
        return SCALES[self.scale][1]

    @property
    def in_channels(self) -> int:
        return 6


class Uni3DPointEncoder(nn.Module):
    """Tokenizer + timm EVA blocks: one ``embed_dim`` feature per ``(N, 6)`` cloud."""

    def __init__(self, config: Uni3DConfig) -> None:
        import timm

        super().__init__()
        self.config = config
        width = config.width
        self.visual = timm.create_model(config.timm_model, pretrained=False,
                                        num_classes=config.head_classes)
        self.encoder = MiniPointNet((128, 256, 512, config.encoder_dim), in_channels=6)
        self.encoder2trans = nn.Linear(config.encoder_dim, width)
        self.trans2embed = nn.Linear(width, config.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, width))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))

    def forward(self, clouds: list[Tensor], random_start: bool,
                generator: torch.Generator | None) -> Tensor:
        config = self.config
        lengths = torch.tensor([c.shape[0] for c in clouds], dtype=torch.long)
        out = self.cls_token.new_empty(len(clouds), config.embed_dim)
        for members in bucket_by_size(lengths):
            points, member_lengths = pad_clouds([clouds[i] for i in members.tolist()])
            member_lengths = member_lengths.to(points.device)
            counts = torch.full_like(member_lengths, config.num_groups)
            neighbours, centres, _ = group_points(points, member_lengths, counts, config.group_size,
                                                  random_start=random_start, generator=generator,
                                                  skip_near_origin=POINTNET2_ORIGIN_SKIP)
            batch, groups = centres.shape[:2]
            tokens = self.encoder2trans(self.encoder(neighbours.flatten(0, 1))).reshape(batch, groups, -1)
            x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], 1)
            x = x + torch.cat([self.cls_pos.expand(batch, -1, -1), self.pos_embed(centres)], 1)
            x = self.visual.pos_drop(x)
            for block in self.visual.blocks:
                x = block(x)
            x = self.visual.fc_norm(self.visual.norm(x[:, 0]))
            out[members.to(out.device)] = self.trans2embed(x)
        return out


class Uni3DPointModel(nn.Module):
    """Uni3D: point encoder with its projection into EVA-CLIP's 1024-d space + logit scale."""

    def __init__(self, config: Uni3DConfig) -> None:
        super().__init__()
        self.config = config
        self.point_encoder = Uni3DPointEncoder(config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.input_convention = InputConvention(num_points=config.max_points, resample_up=True,
                                                order="sample_then_normalize", up_axis="y", channels=6)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode(self, clouds: Sequence[Tensor], normalize: bool = True, *,
               generator: torch.Generator | None = None, random_start: bool = False) -> Tensor:
        """Embeddings ``(B, embed_dim)`` of ``(N_i, 6)`` clouds (xyz + rgb)."""
        clouds = as_cloud_list(clouds, self.config.max_points, self.logit_scale, 6)
        if not clouds:
            return self.logit_scale.new_zeros(0, self.config.embed_dim)
        embeddings = self.point_encoder(clouds, random_start or self.training, generator)
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

    forward = encode
