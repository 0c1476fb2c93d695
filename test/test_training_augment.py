"""Training augmentation invariants: yaw about z keeps z, drop-out keeps counts, ranges hold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendclip_ros.errors import ConfigError
from blendclip_train.augment import AugmentConfig, augment_clouds, rotation_matrices

NONE = AugmentConfig(scale_low=1.0, scale_high=1.0, translate=0.0, tilt_sigma=0.0, full_yaw=False,
                     dropout_max=0.0)


def _clouds(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, generator=gen) for n in sizes]


def test_identity_settings_change_nothing():
    clouds = _clouds([5, 40, 1])
    for before, after in zip(clouds, augment_clouds(clouds, NONE)):
        torch.testing.assert_close(after, before)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=6), seed=st.integers(0, 10_000))
def test_yaw_keeps_z_and_horizontal_radius(sizes, seed):
    clouds = _clouds(sizes, seed)
    yaw_only = AugmentConfig(**{**NONE.__dict__, "full_yaw": True})
    out = augment_clouds(clouds, yaw_only, generator=torch.Generator().manual_seed(seed))
    for before, after in zip(clouds, out):
        torch.testing.assert_close(after[:, 2], before[:, 2])
        torch.testing.assert_close(after[:, :2].norm(dim=1), before[:, :2].norm(dim=1))


def test_yaw_angles_cover_the_full_circle():
    cloud = torch.tensor([[1.0, 0.0, 0.0]])
    yaw_only = AugmentConfig(**{**NONE.__dict__, "full_yaw": True})
    out = torch.cat(augment_clouds([cloud] * 2000, yaw_only, generator=torch.Generator().manual_seed(0)))
    angles = torch.atan2(out[:, 1], out[:, 0]) % (2 * math.pi)
    counts = torch.histc(angles, bins=8, min=0, max=2 * math.pi)
    assert counts.min() > 180 and counts.max() < 320  # ~250 per 45-degree bin


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 200), min_size=1, max_size=6), seed=st.integers(0, 10_000))
def test_full_augmentation_keeps_counts_dtype_and_copies_dropped_points_from_the_first(sizes, seed):
    clouds = _clouds(sizes, seed)
    out = augment_clouds(clouds, generator=torch.Generator().manual_seed(seed))
    for before, after in zip(clouds, out):
        assert after.shape == before.shape and after.dtype == before.dtype
        assert torch.isfinite(after).all()
    # without drop-out the same draws give the undropped points; the rest equal the first point
    kept = augment_clouds(clouds, AugmentConfig(dropout_max=1e-12), generator=torch.Generator().manual_seed(seed))
    for dropped, full in zip(out, kept):
        same = torch.isclose(dropped, full, atol=1e-6).all(1)
        assert bool((same | torch.isclose(dropped, full[0], atol=1e-6).all(1)).all())


def test_drop_out_ratio_ranges_up_to_seven_eighths():
    cloud = torch.arange(3000, dtype=torch.float32)[:, None].repeat(1, 3) / 3000 + 1
    config = AugmentConfig(**{**NONE.__dict__, "dropout_max": 0.875})
    ratios = []
    for seed in range(60):
        out = augment_clouds([cloud], config, generator=torch.Generator().manual_seed(seed))[0]
        ratios.append(float((out == out[0]).all(1).float().mean()))
    assert min(ratios) < 0.15 and 0.75 < max(ratios) < 0.9


def test_scale_translation_and_tilt_stay_in_their_ranges():
    cloud = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    gen = torch.Generator().manual_seed(1)
    no_yaw = AugmentConfig(full_yaw=False, dropout_max=0.0)
    for out in augment_clouds([cloud] * 500, no_yaw, generator=gen):
        shift = out[0]  # the origin only moves by the (tilted) translation
        assert float(shift.norm()) <= math.sqrt(3) * 0.1 + 1e-6
        scale = float((out[1] - out[0]).norm())
        assert 0.8 - 1e-6 <= scale <= 1.25 + 1e-6
        up = (out[2] - out[0]) / float((out[2] - out[0]).norm())
        assert math.acos(min(1.0, float(up[2]))) <= math.sqrt(2) * 0.18 + 1e-6  # tilt about x and y only


@settings(max_examples=40, deadline=None)
@given(angles=st.lists(st.floats(-7, 7), min_size=3, max_size=3))
def test_rotation_matrices_are_proper_rotations(angles):
    r = rotation_matrices(torch.tensor([angles], dtype=torch.float64))[0]
    torch.testing.assert_close(r @ r.T, torch.eye(3, dtype=torch.float64))
    assert float(torch.linalg.det(r)) == pytest.approx(1.0)
    yaw = rotation_matrices(torch.tensor([[0.0, 0.0, angles[2]]], dtype=torch.float64))[0]
    np.testing.assert_allclose(yaw[2].numpy(), [0, 0, 1], atol=1e-12)


def test_same_generator_seed_same_result_and_bad_ranges_raise():
    clouds = _clouds([30, 7])
    a = augment_clouds(clouds, generator=torch.Generator().manual_seed(5))
    b = augment_clouds(clouds, generator=torch.Generator().manual_seed(5))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    assert augment_clouds([]) == []
    with pytest.raises(ConfigError, match="dropout_max"):
        AugmentConfig(dropout_max=1.0)
    with pytest.raises(ConfigError, match="scale"):
        AugmentConfig(scale_low=2.0, scale_high=1.0)
