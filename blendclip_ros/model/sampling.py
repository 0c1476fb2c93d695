"""Pure-PyTorch farthest point sampling and kNN grouping, batched over clouds of different sizes.

Clouds are passed padded: ``points (B, N, C)`` (xyz first, then any per-point features) plus
``lengths (B,)``; rows ``>= lengths[b]`` are padding whatever they hold (zeros or +inf).
Everything runs on the points' device (CPU or CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: Upper bound on the elements of one (batch, centres, points) distance block in kNN grouping.
KNN_BLOCK_ELEMENTS = 1 << 24


def group_counts(lengths: Tensor, group_size: int, max_groups: int) -> Tensor:
    """Patches per cloud, k_i = clamp(floor(2 N_i / group_size), 1, max_groups)."""
    return torch.div(2 * lengths, group_size, rounding_mode="floor").clamp(1, max_groups)


def pad_clouds(clouds: Sequence[Tensor], length: int | None = None,
               fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """Stack ``(N_i, 3)`` clouds into ``(B, length or max N_i, 3)`` filled with ``fill``, and lengths."""
    first = clouds[0]
    lengths = torch.tensor([c.shape[0] for c in clouds], dtype=torch.long, device=first.device)
    rows = int(lengths.max()) if length is None else length
    out = first.new_full((len(clouds), rows, first.shape[1]), fill)
    flat = torch.cat(list(clouds), 0)
    cloud = torch.repeat_interleave(torch.arange(len(clouds), device=first.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    slot = torch.arange(flat.shape[0], device=first.device) - starts[cloud]
    out[cloud, slot] = flat
    return out, lengths


def bucket_by_size(sizes: Tensor) -> list[Tensor]:
    """Indices grouped by ceil(log2(size)) so padding within a bucket wastes less than half.

    Buckets come in increasing size order; within a bucket indices keep their input order.
    """
    keys = torch.ceil(torch.log2(sizes.clamp(min=1).double())).long()
    order = torch.argsort(keys, stable=True)
    _, counts = torch.unique_consecutive(keys[order], return_counts=True)
    return list(torch.split(order, counts.tolist()))


def farthest_point_sample(points: Tensor, lengths: Tensor, counts: Tensor, *,
                          random_start: bool = False,
                          generator: torch.Generator | None = None,
                          skip_near_origin: float = 0.0) -> Tensor:
    """Indices ``(B, max counts)`` of ``counts[b]`` farthest-point centres per cloud (xyz columns).

    Starts at point 0 (deterministic) or, with ``random_start``, at a uniform real point.
    Slots ``>= counts[b]`` hold index 0. One vectorised step per centre, over the whole batch.
    ``skip_near_origin > 0`` never picks (after the start) a point with ``|p|^2 <=`` it, as
    pointnet2's CUDA sampler (ULIP-2, Uni3D) does with 1e-3; once every candidate is used up
    or skipped, point 0 repeats.
    """
    batch, rows, _ = points.shape
    points = points[..., :3]
    steps = int(counts.max())
    real = torch.arange(rows, device=points.device) < lengths[:, None]
    if skip_near_origin > 0:
        real = real & (points.square().sum(-1) > skip_near_origin)
    # Padding starts at -inf so it is never picked: min(-inf, d) stays -inf.
    nearest = torch.where(real, torch.inf, -torch.inf).to(points.dtype)
    if random_start:
        draw = torch.rand(batch, generator=generator,
                          device=generator.device if generator is not None else "cpu")
        current = torch.minimum((draw.to(points.device) * lengths).long(), lengths - 1)
    else:
        current = torch.zeros(batch, dtype=torch.long, device=points.device)
    batch_idx = torch.arange(batch, device=points.device)
    chosen = torch.empty(batch, steps, dtype=torch.long, device=points.device)
    for step in range(steps):
        chosen[:, step] = current
        if step + 1 == steps:
            break
        centre = points[batch_idx, current]
        dist = (points - centre[:, None, :]).square().sum(-1)
        nearest = torch.minimum(nearest, dist)
        current = nearest.argmax(-1)  # all -inf (nothing left): index 0
    valid = torch.arange(steps, device=points.device) < counts[:, None]
    return chosen.masked_fill(~valid, 0)


def knn_indices(points: Tensor, lengths: Tensor, centres: Tensor, group_size: int) -> Tensor:
    """Indices ``(B, K, group_size)`` of each centre's nearest real points.

    Clouds with fewer than ``group_size`` real points repeat their points (nearest first).
    Distances are exact per pair (no matrix-product shortcut), so the neighbours of a centre do
    not depend on how much padding its cloud carries. Memory is bounded by
    :data:`KNN_BLOCK_ELEMENTS` per block of clouds.
    """
    batch, rows, _ = points.shape
    points = points[..., :3]
    centre_count = centres.shape[1]
    take = min(group_size, rows)
    repeat = bool((lengths < group_size).any())
    per_block = max(1, KNN_BLOCK_ELEMENTS // max(1, centre_count * rows))
    real = torch.arange(rows, device=points.device) < lengths[:, None]
    parts = []
    for start in range(0, batch, per_block):
        stop = min(batch, start + per_block)
        dist = torch.cdist(centres[start:stop], points[start:stop],
                           compute_mode="donot_use_mm_for_euclid_dist")
        dist.masked_fill_(~real[start:stop, None, :], torch.inf)
        parts.append(dist.topk(take, dim=-1, largest=False, sorted=repeat).indices)
    idx = torch.cat(parts, 0)
    if repeat:
        # Position j of a cloud with n < group_size real points takes its (j mod n)-th nearest.
        position = torch.arange(group_size, device=points.device)
        source = position[None, :] % lengths.clamp(min=1, max=group_size)[:, None]
        idx = idx.gather(2, source[:, None, :].expand(-1, centre_count, -1))
    return idx


def group_points(points: Tensor, lengths: Tensor, counts: Tensor, group_size: int, *,
                 random_start: bool = False, generator: torch.Generator | None = None,
                 skip_near_origin: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """FPS centres and their kNN neighbourhoods, xyz relative to the centre, features as they are.

    ``points (B, N, C)``: xyz first, then per-point features (e.g. rgb). Returns
    ``neighbourhoods (B, K, group_size, C)``, ``centres (B, K, 3)`` and ``valid (B, K)`` with
    K = max counts; invalid slots hold zeros.
    """
    batch, _, channels = points.shape
    centre_idx = farthest_point_sample(points, lengths, counts, random_start=random_start,
                                       generator=generator, skip_near_origin=skip_near_origin)
    valid = torch.arange(centre_idx.shape[1], device=points.device) < counts[:, None]
    centres = points[..., :3].gather(1, centre_idx[..., None].expand(-1, -1, 3))
    centres = centres.masked_fill(~valid[..., None], 0.0)
    idx = knn_indices(points, lengths, centres, group_size)
    k = idx.shape[1]
    neighbours = points.gather(1, idx.reshape(batch, k * group_size, 1).expand(-1, -1, channels))
    neighbours = neighbours.reshape(batch, k, group_size, channels)
    neighbours = torch.cat([neighbours[..., :3] - centres[:, :, None, :], neighbours[..., 3:]], -1)
    neighbours = neighbours.masked_fill(~valid[..., None, None], 0.0)
    return neighbours, centres, valid
