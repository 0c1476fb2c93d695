"""Crop preprocessing: BlendCLIP normalisation, box-frame rotation and point sampling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pyquaternion import Quaternion
from scipy.spatial.distance import cdist

from blendclip_ros.errors import ConfigError, PointCloudError
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.crop import points_in_boxes
from blendclip_ros.geometry.preprocess import (
    InputConvention,
    center_points,
    farthest_point_indices,
    preprocess_crop,
    preprocess_crops,
    resample_up,
    rotate_into_box_frame,
    sample_points,
    scale_to_unit_sphere,
)


def reference_fps(points: np.ndarray, count: int, start: int) -> list[int]:
    """Farthest point sampling from its definition, with a full distance matrix."""
    distances = cdist(points[:, :3], points[:, :3])
    chosen = [start]
    for _ in range(count - 1):
        chosen.append(int(np.argmax(distances[chosen].min(axis=0))))
    return chosen


def assert_normalised(crop: np.ndarray) -> None:
    assert crop.dtype == np.float32 and crop.shape[1] == 3
    np.testing.assert_allclose(crop.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(crop, axis=1).max(), 1.0, rtol=1e-6)


def test_center_and_scale_helpers():
    points = np.array([[1.0, 2.0, 3.0, 9.0], [3.0, 2.0, 3.0, 9.0], [2.0, 5.0, 3.0, 9.0]])
    centred = center_points(points)
    np.testing.assert_allclose(centred, [[-1, -1, 0], [1, -1, 0], [0, 2, 0]])
    scaled = scale_to_unit_sphere(centred)
    np.testing.assert_allclose(np.linalg.norm(scaled, axis=1).max(), 1.0)
    np.testing.assert_allclose(scaled[2], [0, 1, 0])
    np.testing.assert_array_equal(scale_to_unit_sphere(np.zeros((2, 3))), np.zeros((2, 3)))
    assert center_points(np.zeros((0, 3))).shape == (0, 3)


def test_preprocess_crop_normalises_like_blendclip():
    rng = np.random.default_rng(0)
    points = rng.normal([40.0, -12.0, 1.0, 9.0, 0.0], [2.0, 1.0, 0.7, 1.0, 1.0], (500, 5)).astype(np.float32)
    crop = preprocess_crop(points)
    assert crop.shape == (500, 3)
    assert_normalised(crop)
    xyz = points[:, :3].astype(np.float64)
    expected = (xyz - xyz.mean(0)) / np.linalg.norm(xyz - xyz.mean(0), axis=1).max()
    np.testing.assert_allclose(crop, expected, atol=1e-6)


@pytest.mark.parametrize("count", [1, 3])
def test_single_or_coincident_points_become_the_origin(count):
    points = np.tile(np.array([[50.1, -7.3, 0.9]], dtype=np.float32), (count, 1))
    crop = preprocess_crop(points)
    assert crop.shape == (count, 3) and crop.dtype == np.float32
    np.testing.assert_array_equal(crop, 0.0)


def test_empty_and_non_finite_rows():
    assert preprocess_crop(np.zeros((0, 4))).shape == (0, 3)
    points = np.array([[1, 0, 0], [np.nan, 0, 0], [-1, 0, 0], [0, np.inf, 0]], dtype=np.float32)
    np.testing.assert_array_equal(preprocess_crop(points), [[1, 0, 0], [-1, 0, 0]])
    assert preprocess_crop(np.full((3, 3), np.nan)).shape == (0, 3)


SAMPLE_FIRST = InputConvention(order="sample_then_normalize")


def release_reference(points: np.ndarray, npoints: int, seed: int) -> np.ndarray:
    """The release's loader from its description: pc_normalize the whole crop, then FPS from a
    seeded start (float32 distances, first max), no re-centring."""
    xyz = points[:, :3].astype(np.float64)
    xyz = xyz - xyz.mean(0)
    xyz = xyz / np.linalg.norm(xyz, axis=1).max()
    if len(xyz) <= npoints:
        return xyz
    start = int(np.random.default_rng(seed).integers(len(xyz)))
    flat = xyz.astype(np.float32)
    nearest = np.full(len(flat), np.inf, dtype=np.float32)
    chosen = [start]
    for _ in range(npoints - 1):
        nearest = np.minimum(nearest, ((flat - flat[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(np.argmax(nearest)))
    return xyz[chosen]


def test_large_crop_is_normalised_whole_then_sampled_without_recentring():
    """Above the cap the release normalises the whole crop, then samples, and does not re-centre."""
    rng = np.random.default_rng(1)
    points = rng.normal([30.0, 4.0, 1.0], [4.0, 1.2, 0.8], (9000, 3)).astype(np.float32)
    crop = preprocess_crop(points, max_points=1024, seed=3)
    assert crop.shape == (1024, 3)
    np.testing.assert_allclose(crop, release_reference(points, 1024, 3), atol=2e-6)
    assert np.abs(crop.mean(0)).max() > 1e-3  # not re-centred
    assert np.linalg.norm(crop, axis=1).max() <= 1.0 + 1e-6
    sample_first = preprocess_crop(points, max_points=1024, seed=3, convention=SAMPLE_FIRST)
    assert_normalised(sample_first)
    small = preprocess_crop(points[:8192])
    assert small.shape == (8192, 3)  # at the cap: no sampling
    assert_normalised(small)


def test_sparse_crops_are_resampled_up_when_the_family_does():
    rng = np.random.default_rng(4)
    points = rng.normal(size=(100, 3))
    convention = InputConvention(num_points=1000, resample_up=True, order="sample_then_normalize")
    crop = preprocess_crop(points, convention=convention)
    assert crop.shape == (1000, 3)
    ratio = cdist(crop[:100], crop[:100])[np.triu_indices(100, 1)] / cdist(points, points)[np.triu_indices(100, 1)]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)  # every point kept, in order, one scale
    assert np.linalg.norm(crop, axis=1).max() == pytest.approx(1.0, rel=1e-6)
    rows = {tuple(r) for r in np.round(crop[:100], 5)}
    assert {tuple(r) for r in np.round(crop[100:], 5)} <= rows
    assert resample_up(np.zeros((0, 3)), 10).shape == (0, 3)
    assert preprocess_crop(np.zeros((0, 4)), convention=convention).shape == (0, 3)


def test_y_up_families_get_rotated_crops_with_gray_or_intensity_colour():
    rng = np.random.default_rng(5)
    points = np.column_stack([rng.normal(size=(50, 3)), rng.uniform(0, 255, 50)])
    gray = InputConvention(up_axis="y", channels=6, order="sample_then_normalize")
    crop = preprocess_crop(points, convention=gray)
    assert crop.shape == (50, 6) and crop.dtype == np.float32
    z_up = preprocess_crop(points, convention=SAMPLE_FIRST)
    np.testing.assert_allclose(crop[:, :3], np.column_stack([z_up[:, 0], z_up[:, 2], -z_up[:, 1]]), atol=1e-6)
    np.testing.assert_array_equal(crop[:, 3:], 0.4)
    lit = preprocess_crop(points, convention=gray.replace(colour="intensity"))
    np.testing.assert_allclose(lit[:, 3:], np.repeat(points[:, 3:4] / 255.0, 3, axis=1), atol=1e-6)
    with pytest.raises(PointCloudError, match="intensity"):
        preprocess_crop(points[:, :3], convention=gray.replace(colour="intensity"))
    with pytest.raises(ConfigError, match="up_axis"):
        InputConvention(up_axis="x")


def test_farthest_point_indices_match_the_definition():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(400, 3)) * [5.0, 2.0, 1.0]
    chosen = farthest_point_indices(points, 60, seed=7)
    start = int(np.random.default_rng(7).integers(400))
    assert chosen.tolist() == reference_fps(points, 60, start)
    assert len(set(chosen.tolist())) == 60
    np.testing.assert_array_equal(farthest_point_indices(points, 60, seed=7), chosen)
    assert farthest_point_indices(points, 1000, seed=0).shape == (400,)


def test_fps_spreads_points_better_than_random():
    rng = np.random.default_rng(3)
    points = np.vstack([rng.normal(0, 0.05, (1900, 3)), rng.normal(5, 0.05, (100, 3))])
    fps = sample_points(points, 64, "fps", seed=0)
    rand = sample_points(points, 64, "random", seed=0)

    def coverage(sample: np.ndarray) -> float:  # farthest any input point is from the sample
        return float(cdist(points, sample).min(axis=1).max())

    assert coverage(fps) < 0.5 * coverage(rand)
    assert (np.linalg.norm(fps - 5, axis=1) < 1).sum() >= 16  # the small cluster is not lost


def test_sample_points_random_and_passthrough():
    points = np.arange(300.0).reshape(100, 3)
    picked = sample_points(points, 10, "random", seed=4)
    assert picked.shape == (10, 3) and np.all(np.diff(picked[:, 0]) > 0)
    assert set(picked[:, 0]).issubset(set(points[:, 0]))
    np.testing.assert_array_equal(picked, sample_points(points, 10, "random", seed=4))
    assert not np.array_equal(picked, sample_points(points, 10, "random", seed=5))
    assert sample_points(points, 100) is points


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"max_points": 0}, "max_points"), ({"max_points": 2.5}, "max_points"),
                          ({"method": "uniform"}, "method")]
)
def test_bad_sampling_settings_raise_config_error(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        preprocess_crop(np.zeros((5, 3)), **kwargs)


def test_rotate_into_box_frame_matches_pyquaternion():
    rng = np.random.default_rng(5)
    points = rng.normal(size=(50, 3))
    center = np.array([1.0, -2.0, 0.5])
    x, y, z, w = 0.2, -0.4, 0.7, 0.5
    local = rotate_into_box_frame(points, center, [x, y, z, w])
    inverse = Quaternion(w, x, y, z).normalised.inverse
    expected = np.array([inverse.rotate(p - center) for p in points])
    np.testing.assert_allclose(local, expected, atol=1e-12)
    with pytest.raises(ValueError, match="quaternion"):
        rotate_into_box_frame(points, center, [0, 0, 0, 0])


def test_crops_of_the_real_sweep_lie_inside_their_boxes(nuscenes_frame):
    boxes = Boxes.from_mmdet3d(nuscenes_frame.boxes)
    for index, idx in enumerate(points_in_boxes(nuscenes_frame.points, boxes)):
        local = rotate_into_box_frame(nuscenes_frame.points[idx], boxes.centers[index],
                                      boxes.quaternions[index])
        assert np.all(np.abs(local) <= boxes.sizes[index] / 2 + 1e-9)


def test_batched_crops_equal_single_crops_on_the_real_sweep(nuscenes_frame):
    boxes = Boxes.from_mmdet3d(nuscenes_frame.boxes)
    index_lists = points_in_boxes(nuscenes_frame.points, boxes, margin=0.1)
    index_lists.append(np.zeros(0, dtype=np.int64))
    boxes = Boxes(np.vstack([boxes.centers, [0, 0, 0]]), np.vstack([boxes.sizes, [1, 1, 1]]),
                  np.vstack([boxes.quaternions, [0, 0, 0, 1]]))
    for rotate in (False, True):
        batch = preprocess_crops(nuscenes_frame.points, index_lists, boxes, rotate_to_box=rotate,
                                 max_points=256)
        assert len(batch) == len(index_lists)
        for i, idx in enumerate(index_lists):
            single = preprocess_crop(nuscenes_frame.points[idx], boxes.subset([i]),
                                     rotate_to_box=rotate, max_points=256)
            np.testing.assert_array_equal(batch[i], single)
            assert batch[i].shape == (min(len(idx), 256), 3)
            if 1 < len(idx) <= 256:  # above the cap: normalised before sampling, not re-centred
                assert_normalised(batch[i])
    assert preprocess_crops(nuscenes_frame.points, [], Boxes.empty()) == []
    with pytest.raises(ValueError, match="boxes"):
        preprocess_crops(nuscenes_frame.points, index_lists, None, rotate_to_box=True)


finite = st.floats(-30, 30, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    cloud=arrays(np.float64, st.tuples(st.integers(2, 200), st.just(3)), elements=finite),
    yaw=st.floats(-np.pi, np.pi),
    shift=arrays(np.float64, 3, elements=finite),
    scale=st.floats(0.1, 10),
)
def test_box_frame_crops_are_invariant_to_moving_the_scene(cloud, yaw, shift, scale):
    """Rotating/translating the scene (points and box together) leaves a box-frame crop
    unchanged; scaling the scene leaves any crop unchanged (up to float32 rounding)."""
    if np.ptp(cloud, axis=0).max() < 1e-3:
        cloud = cloud + np.eye(3)[np.arange(len(cloud)) % 3] * 0.01
    box = Boxes.from_yaw([[1.0, 2.0, 0.0]], [[4.0, 2.0, 1.5]], [0.3])
    rotation = Quaternion(axis=[0, 0, 1], angle=yaw)
    moved = np.array([rotation.rotate(p) for p in cloud]) + shift
    moved_box = Boxes.from_yaw([rotation.rotate(box.centers[0]) + shift], box.sizes, [0.3 + yaw])
    original = preprocess_crop(cloud, box, rotate_to_box=True, max_points=256)
    np.testing.assert_allclose(
        preprocess_crop(moved, moved_box, rotate_to_box=True, max_points=256), original, atol=2e-5
    )
    np.testing.assert_allclose(
        preprocess_crop(cloud * scale + shift), preprocess_crop(cloud),
        atol=2e-5,
    )
