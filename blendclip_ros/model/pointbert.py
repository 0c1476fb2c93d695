"""PointBERT point encoder with dynamic grouping, and the BlendCLIP point model around it.

Parameter and buffer names match the BlendCLIP release state dict (``point_encoder.*``,
``pc_projection``, ``logit_scale``). Two execution paths give the same embeddings:

* :meth:`PointBertEncoder.forward` takes clouds of different sizes as a list, groups them in
  buckets of similar point counts, tokenizes only real patches and runs the transformer in
  buckets of similar patch counts, each padded only to its own largest patch count;
* :meth:`PointBertEncoder.forward_padded` takes the BlendCLIP layout (every cloud padded to
  ``max_points`` rows of +inf, every cloud given ``max_groups`` patch slots). It exists for the
  equivalence test and the benchmark baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blendclip_ros.errors import PointCloudError
from blendclip_ros.geometry.preprocess import InputConvention
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.sampling import bucket_by_size, group_counts, group_points, pad_clouds

#: Upper bound on activation elements per tokenizer chunk in inference (bounded memory).
TOKENIZER_BLOCK_ELEMENTS = 1 << 24


class MiniPointNet(nn.Module):
    """Shared per-patch PointNet: conv-BN-ReLU-conv, concat with its max-pool, conv-BN-ReLU-conv, max."""

    def __init__(self, dims: tuple[int, int, int, int], in_channels: int = 3) -> None:
        super().__init__()
        hidden1, local, hidden2, out = dims
        self.out_channels = out
        self.widest = max(dims)
        self.first_conv = nn.Sequential(nn.Conv1d(in_channels, hidden1, 1), nn.BatchNorm1d(hidden1),
                                        nn.ReLU(inplace=True), nn.Conv1d(hidden1, local, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(2 * local, hidden2, 1), nn.BatchNorm1d(hidden2),
                                         nn.ReLU(inplace=True), nn.Conv1d(hidden2, out, 1))

    def forward(self, groups: Tensor) -> Tensor:
        """``(G, M, C)`` patch points (xyz relative to the centre, then features) -> ``(G, out)``.

        In inference the patches are processed in chunks to bound memory; in training all at
        once so BatchNorm sees the whole batch of real patches.
        """
        if self.training:
            return self._encode(groups)
        per_chunk = max(1, TOKENIZER_BLOCK_ELEMENTS // (groups.shape[1] * 2 * self.widest))
        if groups.shape[0] <= per_chunk:
            return self._encode(groups)
        return torch.cat([self._encode(part) for part in groups.split(per_chunk)], 0)

    def _encode(self, groups: Tensor) -> Tensor:
        count, size, channels = groups.shape
        local = _pointwise(self.first_conv, groups.reshape(count * size, channels))
        local = local.reshape(count, size, -1)
        pooled = local.amax(1, keepdim=True).expand_as(local)
        features = _pointwise(self.second_conv, torch.cat([pooled, local], -1).flatten(0, 1))
        return features.reshape(count, size, -1).amax(1)


def _pointwise(layers: nn.Sequential, x: Tensor) -> Tensor:
    """Kernel-1 conv, BatchNorm, ReLU, kernel-1 conv on channels-last rows ``(P, C)``.

    Same maths as running the Conv1d stack on ``(G, C, M)`` (BatchNorm1d normalises per channel
    over all points either way), but as plain matrix products.
    """
    conv_in, norm, act, conv_out = layers
    x = F.linear(x, conv_in.weight.squeeze(-1), conv_in.bias)
    return F.linear(act(norm(x)), conv_out.weight.squeeze(-1), conv_out.bias)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention; padded keys are masked and padded query rows zeroed."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:
        batch, length, width = x.shape
        q, k, v = (self.qkv(x).reshape(batch, length, 3, self.heads, width // self.heads)
                   .permute(2, 0, 3, 1, 4).unbind(0))
        mask = None if valid is None else valid[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(batch, length, width)
        if valid is not None:
            out = out * valid[..., None]
        return self.proj(out)


class Mlp(nn.Module):
    """Transformer feed-forward: fc1, GELU, fc2."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, width: int, heads: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, hidden)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), valid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerStack(nn.Module):
    """Blocks with the positional embedding re-added before every block (as in PointBERT)."""

    def __init__(self, config: PointBertConfig) -> None:
        super().__init__()
        rates = torch.linspace(0, config.drop_path, config.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(config.width, config.heads, config.mlp_hidden, rate) for rate in rates)

    def forward(self, x: Tensor, pos: Tensor, valid: Tensor | None) -> Tensor:
        for block in self.blocks:
            x = block(x + pos, valid)
        return x


class PointBertEncoder(nn.Module):
    """PointBERT over ``(N, in_channels)`` clouds: one ``(2 * width)`` feature per cloud (CLS, max-pool)."""

    def __init__(self, config: PointBertConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.encoder = MiniPointNet(config.pointnet_dims, config.in_channels)
        self.reduce_dim = nn.Linear(config.pointnet_dims[3], width)
        self.register_buffer("patch_padding", torch.zeros(1, 1, width))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Sequential(nn.Linear(3, config.pos_hidden), nn.GELU(),
                                       nn.Linear(config.pos_hidden, width))
        self.blocks = TransformerStack(config)
        self.norm = nn.LayerNorm(width)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)

    def forward(self, clouds: Sequence[Tensor], *, generator: torch.Generator | None = None,
                random_start: bool = False) -> Tensor:
        """Features ``(B, 2 * width)`` of ``(N_i, in_channels)`` clouds on the module's device.

        FPS starts at point 0 in eval mode and at a random point (``generator``) in training or
        with ``random_start`` (the release's evaluation). In training, BatchNorm statistics
        cover real patches only (the release also counts its zero padding patches).
        """
        config = self.config
        clouds = as_cloud_list(clouds, config.max_points, self.cls_token, config.in_channels)
        if not clouds:
            return self.cls_token.new_zeros(0, config.feature_dim)
        lengths = torch.tensor([c.shape[0] for c in clouds], dtype=torch.long)
        counts = self._counts(lengths)
        tokens, positions, owner, slot = self._patch_tokens(clouds, lengths, counts, generator,
                                                            random_start or self.training)
        device = tokens.device
        features = tokens.new_empty(len(clouds), config.feature_dim)
        row_of = torch.full((len(clouds),), -1, dtype=torch.long, device=device)
        for members in bucket_by_size(counts + 1):
            member_counts = counts[members]
            members = members.to(device)
            row_of[members] = torch.arange(members.numel(), device=device)
            row = row_of[owner]
            take = row >= 0
            shape = (members.numel(), int(member_counts.max()), config.width)
            x = self.patch_padding.to(tokens.dtype).expand(shape).clone()  # tokens are bf16 under autocast
            pos = positions.new_zeros(shape)
            x[row[take], slot[take]] = tokens[take]
            pos[row[take], slot[take]] = positions[take]
            valid = (torch.arange(shape[1]) < member_counts[:, None]).to(device)
            features[members] = self._transform(x, pos, valid).to(features.dtype)
            row_of[members] = -1
        return features

    def _patch_tokens(self, clouds: list[Tensor], lengths: Tensor, counts: Tensor,
                      generator: torch.Generator | None,
                      random_start: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Tokens and positional embeddings of every real patch, with owning cloud and slot.

        Clouds are grouped in buckets of similar point counts so FPS and kNN pad little.
        """
        device = self.cls_token.device
        patches, centres, owners, slots = [], [], [], []
        for members in bucket_by_size(lengths):
            points, member_lengths = pad_clouds([clouds[i] for i in members.tolist()])
            neighbours, centre, valid = group_points(
                points, member_lengths, counts[members].to(device), self.config.group_size,
                random_start=random_start, generator=generator,
                skip_near_origin=self.config.fps_skip_near_origin)
            patches.append(neighbours[valid])
            centres.append(centre[valid])
            owners.append(members.to(device)[:, None].expand_as(valid)[valid])
            slots.append(torch.arange(valid.shape[1], device=device).expand_as(valid)[valid])
        tokens = self.reduce_dim(self.encoder(torch.cat(patches)))
        return tokens, self.pos_embed(torch.cat(centres)), torch.cat(owners), torch.cat(slots)

    def forward_padded(self, points: Tensor) -> Tensor:
        """BlendCLIP layout: ``(B, max_points, C)`` with real rows first and +inf padding rows.

        Every cloud gets ``max_groups`` patch slots (zeros where unused) that all go through
        the tokenizer and the transformer, exactly as the release code does.
        """
        config = self.config
        if points.dim() != 3 or points.shape[1:] != (config.max_points, config.in_channels):
            raise PointCloudError(f"points: expected shape (B, {config.max_points}, "
                                  f"{config.in_channels}), "
                                  f"got {tuple(points.shape)}")
        real = torch.isfinite(points).all(-1)
        lengths = real.sum(1)
        prefix = torch.arange(points.shape[1], device=points.device) < lengths[:, None]
        if not torch.equal(real, prefix) or bool((lengths == 0).any()):
            raise PointCloudError("points: every cloud needs >= 1 finite row and finite rows "
                                  "before its +inf padding rows")
        counts = self._counts(lengths)
        neighbours, centres, valid = group_points(
            points, lengths, counts, config.group_size, random_start=self.training,
            skip_near_origin=config.fps_skip_near_origin)
        batch, used = valid.shape
        slots = (batch, config.max_groups)
        all_neighbours = neighbours.new_zeros(slots + neighbours.shape[2:])
        all_centres = centres.new_zeros(slots + (3,))
        all_valid = valid.new_zeros(slots)
        all_neighbours[:, :used], all_centres[:, :used], all_valid[:, :used] = \
            neighbours, centres, valid
        tokens = self.reduce_dim(self.encoder(all_neighbours.flatten(0, 1)))
        tokens = tokens.reshape(batch, config.max_groups, config.width)
        return self._transform(tokens, self.pos_embed(all_centres), all_valid)

    def _counts(self, lengths: Tensor) -> Tensor:
        """Patches per cloud: dynamic (BlendCLIP) or always ``max_groups``."""
        config = self.config
        if config.dynamic_groups:
            return group_counts(lengths, config.group_size, config.max_groups)
        return torch.full_like(lengths, config.max_groups)

    def _transform(self, tokens: Tensor, pos: Tensor, valid: Tensor) -> Tensor:
        """CLS + patch tokens through the transformer, then concat(CLS, max over real patches)."""
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], 1)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), pos], 1)
        mask = None if bool(valid.all()) else torch.cat([valid.new_ones(batch, 1), valid], 1)
        x = self.norm(self.blocks(x, pos, mask))
        pooled = x[:, 1:].masked_fill(~valid[..., None], -torch.inf).amax(1)
        return torch.cat([x[:, 0], pooled], -1)


class BlendClipPointModel(nn.Module):
    """Point encoder + bare projection matrix into the text space + CLIP logit scale."""

    def __init__(self, config: PointBertConfig) -> None:
        super().__init__()
        self.config = config
        self.point_encoder = PointBertEncoder(config)
        self.pc_projection = nn.Parameter(torch.empty(config.feature_dim, config.embed_dim))
        nn.init.normal_(self.pc_projection, std=config.embed_dim ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        #: How crops are prepared for this model (the loader sets the family's convention).
        self.input_convention = InputConvention(num_points=config.max_points,
                                                channels=config.in_channels)

    @property
    def device(self) -> torch.device:
        return self.pc_projection.device

    def encode(self, clouds: Sequence[Tensor], normalize: bool = True, *,
               generator: torch.Generator | None = None, random_start: bool = False) -> Tensor:
        """Embeddings ``(B, embed_dim)`` of ``(N_i, in_channels)`` clouds of any sizes (1..max_points).

        ``random_start``: grouping FPS starts at a random point (``generator``) as in the
        release's evaluation; otherwise at point 0 (eval mode).
        """
        embeddings = self.point_encoder(clouds, generator=generator,
                                        random_start=random_start) @ self.pc_projection
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

    forward = encode

    def encode_padded_reference(self, clouds: Sequence[Tensor], normalize: bool = True) -> Tensor:
        """Same as :meth:`encode` through the BlendCLIP layout (pad to ``max_points`` rows of +inf)."""
        clouds = as_cloud_list(clouds, self.config.max_points, self.pc_projection,
                               self.config.in_channels)
        if not clouds:
            return self.pc_projection.new_zeros(0, self.config.embed_dim)
        points, _ = pad_clouds(clouds, self.config.max_points, fill=torch.inf)
        embeddings = self.point_encoder.forward_padded(points) @ self.pc_projection
        return F.normalize(embeddings, dim=-1) if normalize else embeddings


def as_cloud_list(clouds: Sequence[Tensor | np.ndarray], max_points: int,
                  like: Tensor, channels: int = 3) -> list[Tensor]:
    """Validate ``(N_i, channels)`` finite float clouds and move them to ``like``'s device and dtype."""
    if isinstance(clouds, (Tensor, np.ndarray)):
        raise PointCloudError(f"clouds: expected a sequence of (N, {channels}) arrays, got one array")
    out = []
    for i, cloud in enumerate(clouds):
        if not isinstance(cloud, (Tensor, np.ndarray)):
            raise PointCloudError(f"clouds[{i}]: expected a tensor, got {type(cloud).__name__}")
        tensor = torch.as_tensor(cloud)
        if tensor.dim() != 2 or tensor.shape[1] != channels:
            raise PointCloudError(f"clouds[{i}]: expected shape (N, {channels}), got "
                                  f"{tuple(tensor.shape)}")
        if not 1 <= tensor.shape[0] <= max_points:
            raise PointCloudError(f"clouds[{i}]: has {tensor.shape[0]} points, expected 1.."
                                  f"{max_points} (downsample larger clouds first)")
        if not tensor.is_floating_point():
            raise PointCloudError(f"clouds[{i}]: expected a floating dtype, got {tensor.dtype}")
        out.append(tensor.to(device=like.device, dtype=like.dtype))
    if out:
        finite = torch.stack([torch.isfinite(c).all() for c in out])
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            raise PointCloudError(f"clouds[{bad}]: contains NaN or infinite coordinates")
    return out


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
