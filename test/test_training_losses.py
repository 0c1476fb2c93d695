"""Contrastive loss, logit-scale clamp, AdamW parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendclip_ros.errors import ConfigError
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel
from blendclip_train.losses import (
    MAX_LOGIT_SCALE,
    clamp_logit_scale_,
    contrastive_loss,
    symmetric_infonce,
)
from blendclip_train.optim import WarmupCosine, build_optimizer, parameter_groups


def _reference(a: torch.Tensor, b: torch.Tensor, scale: float) -> float:
    """Symmetric InfoNCE written out per row (log-softmax of the diagonal, both directions)."""
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    sims = scale * a @ b.T
    total = 0.0
    for i in range(len(a)):
        total -= sims[i, i] - torch.logsumexp(sims[i], 0)
        total -= sims[i, i] - torch.logsumexp(sims[:, i], 0)
    return float(total / (2 * len(a)))


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(2, 12), dim=st.integers(2, 16), seed=st.integers(0, 10_000),
       scale=st.floats(0.5, 100.0))
def test_matches_the_written_out_definition_and_is_symmetric(batch, dim, seed, scale):
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(batch, dim, generator=gen, dtype=torch.float64), torch.randn(batch, dim, generator=gen,
                                                                                  dtype=torch.float64)
    value = float(symmetric_infonce(a, b, scale))
    assert value == pytest.approx(_reference(a, b, scale), rel=1e-9, abs=1e-9)
    assert value == pytest.approx(float(symmetric_infonce(b, a, scale)), rel=1e-12, abs=1e-12)
    assert value == pytest.approx(float(symmetric_infonce(3 * a, 0.5 * b, scale)), rel=1e-9)  # normalised


def test_aligned_pairs_give_a_low_loss_and_shuffled_pairs_a_high_one():
    points = torch.eye(8)[:, :6].clone()
    points[6:] = torch.tensor([[1.0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]])  # 8 distinct directions
    scale = torch.tensor(math.log(MAX_LOGIT_SCALE))
    aligned = contrastive_loss(points, points.clone(), scale)
    shuffled = contrastive_loss(points, points.roll(1, 0), scale)
    assert aligned.point_text < 0.05 and aligned.retrieval_accuracy == 1.0
    assert shuffled.point_text > 20 and shuffled.retrieval_accuracy == 0.0
    uniform = contrastive_loss(points, points.roll(1, 0), torch.tensor(-30.0))  # scale ~ 0: chance
    assert uniform.point_text == pytest.approx(math.log(8), rel=1e-6)


def test_image_term_uses_masked_rows_and_needs_two_of_them():
    gen = torch.Generator().manual_seed(0)
    points, texts, images = (torch.randn(6, 4, generator=gen) for _ in range(3))
    scale = torch.tensor(math.log(1 / 0.07))
    text_only = contrastive_loss(points, texts, scale)
    assert text_only.point_image is None and float(text_only.total) == pytest.approx(text_only.point_text)
    mask = torch.tensor([True, False, True, True, False, False])
    both = contrastive_loss(points, texts, scale, images, mask)
    expected = float(symmetric_infonce(points[mask], images[mask], scale.exp()))
    assert both.point_image == pytest.approx(expected, rel=1e-6)
    assert float(both.total) == pytest.approx(text_only.point_text + expected, rel=1e-6)
    one = contrastive_loss(points, texts, scale, images, torch.tensor([True] + [False] * 5))
    assert one.point_image is None


def test_gradient_reaches_the_logit_scale_and_the_clamp_holds():
    model = BlendClipPointModel(PointBertConfig.named("tiny"))
    assert float(model.logit_scale.detach().exp()) == pytest.approx(1 / 0.07, rel=1e-6)
    points = torch.randn(4, 8, requires_grad=True)
    loss = contrastive_loss(points, torch.randn(4, 8), model.logit_scale)
    loss.total.backward()
    assert model.logit_scale.grad is not None and points.grad is not None and points.grad.abs().sum() > 0
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    clamp_logit_scale_(model)
    assert float(model.logit_scale.detach().exp()) == pytest.approx(MAX_LOGIT_SCALE, rel=1e-6)
    with pytest.raises(ConfigError, match="embeddings"):
        symmetric_infonce(torch.zeros(3, 4), torch.zeros(2, 4), 1.0)


def test_weight_decay_spares_biases_norms_and_the_logit_scale():
    model = BlendClipPointModel(PointBertConfig.named("tiny"))
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    spared = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decayed | spared == set(names.values()) and not decayed & spared
    assert "logit_scale" in spared and "pc_projection" in decayed
    assert all(n.endswith(".bias") or ".norm" in n or n.startswith("point_encoder.norm")
               or ".encoder.first_conv.1." in n or ".encoder.second_conv.1." in n
               or n in ("logit_scale", "point_encoder.cls_token", "point_encoder.cls_pos") for n in spared)
    assert "point_encoder.blocks.blocks.0.attn.qkv.weight" in decayed
    optimizer = build_optimizer(model)
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-8


def test_schedule_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    schedule = WarmupCosine(peak=1e-3, total=110, warmup=10, start=1e-6, floor=1e-5)
    assert schedule(0) == pytest.approx(1e-6)
    assert schedule(5) == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)
    assert schedule(10) == pytest.approx(1e-3)
    assert schedule(109) == pytest.approx(1e-5)
    mid = 10 + (109 - 10) / 2
    assert schedule(round(mid)) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5 / 99 * 99)),
                                                 rel=0.05)
    after = [schedule(i) for i in range(10, 110)]
    assert all(x >= y for x, y in zip(after, after[1:]))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert schedule.apply(optimizer, 10) == optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="warmup"):
        WarmupCosine(peak=1e-3, total=10, warmup=10)


def test_global_batch_rows_average_to_the_whole_batch_loss():
    """Two ranks, each scoring its rows against the gathered batch: the mean is the one-process loss."""
    import torch.nn.functional as F

    from blendclip_train.losses import GlobalBatch

    gen = torch.Generator().manual_seed(1)
    points, texts, images = (torch.randn(8, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([True, False, True, True, False, False, True, True])
    scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64)
    whole = contrastive_loss(points, texts, scale, images, mask)

    def rank(r: int):
        rows = slice(4 * r, 4 * r + 4)

        def gather(p, t, i, m):
            assert torch.equal(p, F.normalize(points[rows], dim=-1))
            return GlobalBatch(F.normalize(points, dim=-1), F.normalize(texts, dim=-1), F.normalize(images, dim=-1),
                               mask, 4 * r)
        return contrastive_loss(points[rows], texts[rows], scale, images[rows], mask[rows], gather=gather)

    parts = [rank(0), rank(1)]
    assert (parts[0].point_text + parts[1].point_text) / 2 == pytest.approx(whole.point_text, rel=1e-12)
    # the image term averages per rank over its own rows with an image (3 and 2 here), so weight them
    weighted = (3 * parts[0].point_image + 2 * parts[1].point_image) / 5
    assert weighted == pytest.approx(whole.point_image, rel=1e-12)
    assert (parts[0].retrieval_accuracy + parts[1].retrieval_accuracy) / 2 == pytest.approx(whole.retrieval_accuracy)
