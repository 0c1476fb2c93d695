"""PointBERT encoder: configs, FPS/kNN grouping, masking, batch independence, BlendCLIP equivalence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendclip_ros.errors import ConfigError, PointCloudError
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel
from blendclip_ros.model.sampling import (bucket_by_size, farthest_point_sample, group_counts,
                                          group_points, knn_indices, pad_clouds)

TINY = PointBertConfig.named("tiny")
# Mixed sizes around every grouping boundary: 1 point, < 32, = 32, k > 1, k = max_groups, 8192.
SIZES = [1, 2, 7, 31, 32, 33, 64, 95, 300, 1500, 8192]


def _cloud(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    points = torch.randn(n, 3, generator=gen) * torch.tensor([2.0, 1.0, 0.6])
    return points / points.norm(dim=1).max().clamp(min=1e-6)


@pytest.fixture(scope="module")
def tiny_model() -> BlendClipPointModel:
    torch.manual_seed(0)
    model = BlendClipPointModel(TINY).eval()
    _randomise_batchnorm(model)
    return model


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode BatchNorm is not an identity."""
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)


# --- config -------------------------------------------------------------------------------

def test_named_presets_and_round_trip():
    full = PointBertConfig.named("full")
    assert (full.width, full.depth, full.heads, full.group_size, full.max_groups,
            full.max_points, full.embed_dim, full.feature_dim) == (384, 12, 6, 32, 512, 8192, 512, 768)
    assert full == PointBertConfig()
    assert TINY.width < full.width and TINY.depth < full.depth and TINY.max_groups == 128
    for config in (full, TINY):
        assert PointBertConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("data, field", [
    ({"widht": 384}, "widht"),
    ({"width": 100, "heads": 6}, "width"),
    ({"depth": 0}, "depth"),
    ({"drop_path": 1.5}, "drop_path"),
    ({"mlp_ratio": -1}, "mlp_ratio"),
    ({"pointnet_dims": [1, 2, 3]}, "pointnet_dims"),
    ({"group_size": 3.5}, "group_size"),
])
def test_config_errors_name_the_field(data, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        PointBertConfig.from_dict(data)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="name: unknown encoder preset 'huge'"):
        PointBertConfig.named("huge")


# --- sampling -----------------------------------------------------------------------------

def test_group_counts_formula():
    lengths = torch.tensor([1, 15, 16, 31, 32, 47, 48, 8191, 8192, 10000])
    expected = [1, 1, 1, 1, 2, 2, 3, 511, 512, 512]
    assert group_counts(lengths, 32, 512).tolist() == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9000), min_size=1, max_size=40))
def test_buckets_partition_and_bound_padding(sizes):
    buckets = bucket_by_size(torch.tensor(sizes))
    flat = torch.cat(buckets).tolist()
    assert sorted(flat) == list(range(len(sizes)))
    for bucket in buckets:
        members = [sizes[i] for i in bucket.tolist()]
        assert max(members) < 2 * min(members) or max(members) == min(members)


def _fps_numpy(points: np.ndarray, count: int, start: int) -> list[int]:
    """Textbook sequential FPS on one cloud (reference for the batched version)."""
    chosen = [start]
    nearest = ((points - points[start]) ** 2).sum(1)
    for _ in range(count - 1):
        chosen.append(int(nearest.argmax()))
        nearest = np.minimum(nearest, ((points - points[chosen[-1]]) ** 2).sum(1))
    return chosen


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=6), st.integers(0, 2**16))
def test_fps_matches_sequential_reference_with_any_padding(sizes, seed):
    clouds = [_cloud(n, seed + i) for i, n in enumerate(sizes)]
    lengths = torch.tensor(sizes)
    counts = group_counts(lengths, 8, 64)
    zero_padded, _ = pad_clouds(clouds)
    inf_padded, _ = pad_clouds(clouds, max(sizes) + 17, fill=torch.inf)
    idx = farthest_point_sample(zero_padded, lengths, counts)
    assert torch.equal(idx, farthest_point_sample(inf_padded, lengths, counts))
    for b, cloud in enumerate(clouds):
        k = int(counts[b])
        assert idx[b, :k].tolist() == _fps_numpy(cloud.double().numpy(), k, 0)
        assert (idx[b, k:] == 0).all()


def test_fps_random_start_is_seeded_and_stays_on_real_points():
    clouds = [_cloud(n, n) for n in (5, 40, 300)]
    points, lengths = pad_clouds(clouds, 400, fill=torch.inf)
    counts = group_counts(lengths, 32, 512)
    draws = [farthest_point_sample(points, lengths, counts, random_start=True,
                                   generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(draws[0], draws[1])
    starts = torch.stack([d[:, 0] for d in draws] + [
        farthest_point_sample(points, lengths, counts, random_start=True,
                              generator=torch.Generator().manual_seed(s))[:, 0]
        for s in range(20)])
    assert (starts < lengths).all()
    assert len(set(starts[:, 2].tolist())) > 5  # starts really vary for the 300-point cloud


def test_knn_returns_the_nearest_real_points_and_repeats_small_clouds():
    clouds = [_cloud(n, n) for n in (3, 32, 200)]
    points, lengths = pad_clouds(clouds, 256, fill=torch.inf)
    centres = torch.stack([c[:4] if c.shape[0] >= 4 else c[[0, 1, 2, 0]] for c in clouds])
    idx = knn_indices(points, lengths, centres, 8)
    assert idx.shape == (3, 4, 8)
    small = idx[0]
    assert (small < 3).all() and all(set(row.tolist()) == {0, 1, 2} for row in small)
    for b in (1, 2):
        dist = torch.cdist(centres[b], clouds[b])
        expected = dist.topk(8, largest=False).values
        got = dist.gather(1, idx[b]).sort(1).values
        torch.testing.assert_close(got, expected)


def test_group_points_relative_neighbourhoods_and_padding():
    clouds = [_cloud(n, n) for n in (10, 100)]
    points, lengths = pad_clouds(clouds)
    counts = group_counts(lengths, 32, 512)
    neighbours, centres, valid = group_points(points, lengths, counts, 32)
    assert neighbours.shape == (2, 6, 32, 3) and valid.tolist() == [[True] + [False] * 5, [True] * 6]
    assert (neighbours[0, 1:] == 0).all() and (centres[0, 1:] == 0).all()
    # each neighbourhood holds real points, expressed relative to its centre
    absolute = neighbours[1] + centres[1][:, None, :]
    gap = torch.cdist(absolute.reshape(-1, 3), clouds[1], compute_mode="donot_use_mm_for_euclid_dist")
    assert (gap.min(1).values < 1e-6).all()
    assert (neighbours[1].norm(dim=-1).min(1).values < 1e-6).all()  # centre is its own neighbour


# --- encoder ------------------------------------------------------------------------------

def test_parameter_count_of_the_release_architecture():
    model = BlendClipPointModel(PointBertConfig.named("full"))
    encoder = sum(p.numel() for p in model.point_encoder.parameters())
    assert abs(encoder - 21.9e6) < 0.1e6
    assert model.pc_projection.shape == (768, 512)
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    keys = set(model.state_dict())
    for key in ("point_encoder.cls_token", "point_encoder.cls_pos", "point_encoder.patch_padding",
                "point_encoder.encoder.first_conv.1.running_var",
                "point_encoder.encoder.second_conv.3.weight", "point_encoder.reduce_dim.weight",
                "point_encoder.pos_embed.2.bias", "point_encoder.blocks.blocks.11.attn.qkv.weight",
                "point_encoder.blocks.blocks.11.mlp.fc2.bias", "point_encoder.norm.weight",
                "pc_projection", "logit_scale"):
        assert key in keys, key
    assert "point_encoder.blocks.blocks.0.attn.qkv.bias" not in keys


def test_shapes_and_normalisation(tiny_model):
    clouds = [_cloud(n, n) for n in SIZES]
    with torch.inference_mode():
        unit = tiny_model.encode(clouds)
        raw = tiny_model.encode(clouds, normalize=False)
        features = tiny_model.point_encoder(clouds)
    assert unit.shape == raw.shape == (len(SIZES), TINY.embed_dim)
    assert features.shape == (len(SIZES), 2 * TINY.width)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(len(SIZES)))
    torch.testing.assert_close(unit, raw / raw.norm(dim=1, keepdim=True))
    assert tiny_model.encode([]).shape == (0, TINY.embed_dim)


def test_embedding_does_not_depend_on_the_batch(tiny_model):
    clouds = [_cloud(n, 100 + n) for n in SIZES]
    with torch.inference_mode():
        alone = torch.cat([tiny_model.encode([c]) for c in clouds])
        together = tiny_model.encode(clouds)
        order = torch.randperm(len(clouds), generator=torch.Generator().manual_seed(3)).tolist()
        shuffled = tiny_model.encode([clouds[i] for i in order])
        with_others = tiny_model.encode(clouds[:3] + [_cloud(5000, 9), _cloud(12, 9)])[:3]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(shuffled, alone[order], atol=1e-5, rtol=0)
    torch.testing.assert_close(with_others, alone[:3], atol=1e-5, rtol=0)
    assert (alone[0] - alone[1]).abs().max() > 1e-3  # different clouds, different embeddings


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=5), st.integers(0, 2**16))
def test_any_batch_gives_each_cloud_its_own_embedding(tiny_model, sizes, seed):
    clouds = [_cloud(n, seed + i) for i, n in enumerate(sizes)]
    with torch.inference_mode():
        together = tiny_model.encode(clouds)
        alone = torch.cat([tiny_model.encode([c]) for c in clouds])
        reference = tiny_model.encode_padded_reference(clouds)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(together, reference, atol=1e-5, rtol=0)


def test_packed_path_equals_the_blendclip_padded_reference(tiny_model):
    clouds = [_cloud(n, 200 + n) for n in SIZES]
    with torch.inference_mode():
        packed = tiny_model.encode(clouds)
        reference = tiny_model.encode_padded_reference(clouds)
    torch.testing.assert_close(packed, reference, atol=1e-5, rtol=0)


def test_full_architecture_equivalence_on_a_small_batch():
    torch.manual_seed(5)
    model = BlendClipPointModel(PointBertConfig.named("full")).eval()
    _randomise_batchnorm(model)
    clouds = [_cloud(n, n) for n in (1, 40, 700)]
    with torch.inference_mode():
        packed = model.encode(clouds)
        reference = model.encode_padded_reference(clouds)
        alone = model.encode(clouds[2:])
    torch.testing.assert_close(packed, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed[2:], alone, atol=1e-5, rtol=0)


def test_padding_slots_never_leak(tiny_model):
    encoder = tiny_model.point_encoder
    gen = torch.Generator().manual_seed(4)
    tokens = torch.randn(3, 6, TINY.width, generator=gen)
    pos = torch.randn(3, 6, TINY.width, generator=gen)
    valid = torch.tensor([[True] * 6, [True, True, False, False, False, False],
                          [True] + [False] * 5])
    noise = torch.randn(3, 6, TINY.width, generator=gen) * 50
    with torch.inference_mode():
        clean = encoder._transform(tokens, pos, valid)
        noisy = encoder._transform(torch.where(valid[..., None], tokens, noise),
                                   torch.where(valid[..., None], pos, -noise), valid)
        encoder.patch_padding.normal_(generator=gen)
        clouds = [_cloud(n, n) for n in (40, 400)]
        perturbed = tiny_model.encode(clouds)
        encoder.patch_padding.zero_()
        baseline = tiny_model.encode(clouds)
    torch.testing.assert_close(clean, noisy, atol=1e-5, rtol=0)
    torch.testing.assert_close(perturbed, baseline, atol=1e-6, rtol=0)
    assert not torch.equal(clean[0], clean[1])


def test_padded_query_rows_are_zero_before_projection(tiny_model):
    attn = tiny_model.point_encoder.blocks.blocks[0].attn
    x = torch.randn(2, 5, TINY.width)
    valid = torch.tensor([[True, True, True, False, False], [True] * 5])
    with torch.inference_mode():
        out = attn(x, valid)
    torch.testing.assert_close(out[0, 3:], attn.proj.bias.expand(2, -1))
    assert (out[1, 3:] - attn.proj.bias).abs().max() > 1e-4


def test_extreme_cloud_sizes(tiny_model):
    single = torch.tensor([[0.3, -0.2, 0.1]])
    dense = _cloud(8192, 1)
    duplicates = torch.zeros(64, 3)  # degenerate: every point identical
    with torch.inference_mode():
        out = tiny_model.encode([single, dense, duplicates])
        ref = tiny_model.encode_padded_reference([single, dense, duplicates])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_training_mode_backpropagates_and_random_start_is_seeded():
    torch.manual_seed(2)
    model = BlendClipPointModel(TINY).train()
    clouds = [_cloud(n, n) for n in (20, 150, 600)]
    first = model.encode(clouds, generator=torch.Generator().manual_seed(0))
    (first @ torch.randn(TINY.embed_dim, 1)).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n != "logit_scale"}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["point_encoder.encoder.first_conv.0.weight"].abs().sum() > 0
    assert model.point_encoder.patch_padding.grad is None
    with torch.no_grad():
        again = model.encode(clouds, generator=torch.Generator().manual_seed(0))
        other = model.encode(clouds, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, first.detach())
    assert (other[1:] - first[1:].detach()).abs().max() > 1e-4  # FPS started elsewhere


def test_follows_module_dtype_and_accepts_numpy(tiny_model):
    model = BlendClipPointModel(TINY).eval().double()
    cloud = _cloud(50, 3).numpy()
    with torch.inference_mode():
        out = model.encode([cloud])
    assert out.dtype == torch.float64 and out.device == model.pc_projection.device


@pytest.mark.parametrize("clouds, message", [
    ([torch.zeros(5, 2)], r"clouds\[0\]: expected shape \(N, 3\)"),
    ([torch.zeros(4, 3), torch.zeros(0, 3)], r"clouds\[1\]: has 0 points"),
    ([torch.zeros(8193, 3)], r"clouds\[0\]: has 8193 points, expected 1..8192"),
    ([torch.zeros(4, 3, dtype=torch.int32)], r"clouds\[0\]: expected a floating dtype"),
    ([torch.zeros(4, 3), torch.tensor([[0.0, float("nan"), 0.0]])], r"clouds\[1\]: contains NaN"),
    (torch.zeros(2, 4, 3), "clouds: expected a sequence"),
    ([[0.0, 1.0, 2.0]], r"clouds\[0\]: expected a tensor"),
])
def test_bad_clouds_raise_typed_errors(tiny_model, clouds, message):
    with pytest.raises(PointCloudError, match=message):
        tiny_model.encode(clouds)


def test_padded_reference_rejects_bad_layouts(tiny_model):
    bad = torch.full((1, TINY.max_points, 3), torch.inf)
    bad[0, 5:10] = 0.0  # finite rows after padding rows
    with pytest.raises(PointCloudError, match="points: every cloud"):
        tiny_model.point_encoder.forward_padded(bad)
    with pytest.raises(PointCloudError, match=r"points: expected shape \(B, 8192, 3\)"):
        tiny_model.point_encoder.forward_padded(torch.zeros(1, 100, 3))


def test_real_nuscenes_objects_encode_consistently(tiny_model, nuscenes_frame):
    """Crops of the real sweep (single-point to dense objects) through both paths."""
    points = torch.from_numpy(nuscenes_frame.points[:, :3].copy())
    boxes = torch.from_numpy(nuscenes_frame.boxes).float()
    local = points[None, :, :2] - boxes[:, None, :2]
    cos, sin = torch.cos(boxes[:, 6:7]), torch.sin(boxes[:, 6:7])
    x = local[..., 0] * cos + local[..., 1] * sin
    y = -local[..., 0] * sin + local[..., 1] * cos
    z = points[None, :, 2] - boxes[:, None, 2]
    inside = ((x.abs() <= boxes[:, 3:4] / 2) & (y.abs() <= boxes[:, 4:5] / 2)
              & (z.abs() <= boxes[:, 5:6] / 2))
    clouds = []
    for mask in inside[inside.sum(1) > 0]:
        crop = points[mask] - points[mask].mean(0)
        clouds.append(crop / crop.norm(dim=1).max().clamp(min=1e-6))
    sizes = [c.shape[0] for c in clouds]
    assert min(sizes) <= 5 and max(sizes) >= 100  # sparse and dense real objects
    with torch.inference_mode():
        packed = tiny_model.encode(clouds)
        reference = tiny_model.encode_padded_reference(clouds)
        alone = torch.cat([tiny_model.encode([c]) for c in clouds[:8]])
    torch.testing.assert_close(packed, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed[:8], alone, atol=1e-5, rtol=0)


# --- random-start FPS in evaluation (the release's --test_repeat) ----------------------------

def test_eval_random_start_is_seeded_and_repeats_average_over_starts(tiny_model):
    from blendclip_ros.model.interface import encode_random_starts

    clouds = [_cloud(n, seed) for seed, n in enumerate([40, 300, 1500])]
    with torch.no_grad():
        fixed = tiny_model.encode(clouds)
        assert torch.equal(fixed, tiny_model.encode(clouds))  # deterministic default
        runs = encode_random_starts(tiny_model, clouds, 3, seed=10)
        assert runs.shape == (3, 3, TINY.embed_dim)
        again = tiny_model.encode(clouds, generator=torch.Generator().manual_seed(11), random_start=True)
    torch.testing.assert_close(runs[1], again)
    assert not torch.allclose(runs[0], runs[1]) and not torch.allclose(runs[0], fixed)
    assert not tiny_model.training
    with pytest.raises(ConfigError, match="repeats"):
        encode_random_starts(tiny_model, clouds, 0)


def test_six_channel_clouds_and_pointnet2_origin_skip():
    config = PointBertConfig.from_dict({**TINY.to_dict(), "in_channels": 6, "fps_skip_near_origin": 1e-3})
    torch.manual_seed(0)
    model = BlendClipPointModel(config).eval()
    xyz = _cloud(200, 3)
    rgb = torch.full((200, 3), 0.4)
    with torch.no_grad():
        grey = model.encode([torch.cat([xyz, rgb], 1)])
        red = model.encode([torch.cat([xyz, rgb * torch.tensor([2.0, 0.0, 0.0])], 1)])
    assert grey.shape == (1, config.embed_dim) and not torch.allclose(grey, red)
    with pytest.raises(PointCloudError, match=r"\(N, 6\)"):
        model.encode([xyz])
    points = torch.tensor([[[1.0, 0, 0], [0.01, 0, 0], [-1.0, 0, 0], [0, 0.5, 0]]])
    lengths, counts = torch.tensor([4]), torch.tensor([4])
    picked = farthest_point_sample(points, lengths, counts, skip_near_origin=1e-3)[0].tolist()
    assert picked == [0, 2, 3, 0]  # the point near the origin is never a centre; then point 0 repeats
    assert farthest_point_sample(points, lengths, counts)[0].tolist() == [0, 2, 3, 1]


def test_bf16_autocast_encodes_like_float32(tiny_model):
    """Mixed precision (the trainer's bf16 autocast) runs the packed path and stays close to fp32."""
    clouds = [torch.randn(n, 3, generator=torch.Generator().manual_seed(n)) for n in (7, 300, 2048)]
    reference = tiny_model.encode(clouds)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = tiny_model.encode(clouds)
    cosine = torch.nn.functional.cosine_similarity(mixed.float(), reference, dim=-1)
    assert mixed.shape == reference.shape and bool((cosine > 0.98).all()), cosine
