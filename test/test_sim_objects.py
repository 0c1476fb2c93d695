"""Procedural objects and synthetic-CAD surface sampling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blendclip_ros.errors import ConfigError
from blendclip_sim.mesh import box, merge
from blendclip_sim.objects import CLASS_NAMES, make_object, object_seed
from blendclip_sim.surface import sample_surface

# plausible [l, w, h] ranges per class (nuScenes/TruckScenes annotation statistics, generous)
SIZE_RANGES = {
    "car": ([3.5, 1.6, 1.3], [5.5, 2.1, 2.1]),
    "truck": ([4.8, 1.8, 1.7], [10.5, 3.0, 4.3]),
    "bus": ([6.0, 2.0, 2.5], [19.0, 3.2, 4.0]),
    "trailer": ([2.0, 1.4, 0.8], [14.0, 2.7, 4.3]),
    "construction vehicle": ([3.5, 1.8, 2.5], [11.0, 6.5, 6.0]),
    "other vehicle": ([1.5, 0.9, 0.9], [4.5, 2.5, 3.2]),
    "motorcycle": ([1.5, 0.5, 0.8], [2.5, 1.0, 1.9]),
    "bicycle": ([1.4, 0.4, 0.8], [2.0, 0.8, 2.0]),
    "pedestrian": ([0.2, 0.3, 0.9], [1.2, 1.2, 2.4]),
    "animal": ([0.3, 0.08, 0.2], [2.6, 0.7, 2.4]),
    "traffic cone": ([0.2, 0.2, 0.4], [0.8, 0.8, 1.2]),
    "barrier": ([0.3, 1.5, 0.7], [0.8, 2.8, 1.3]),
    "traffic sign": ([0.05, 0.3, 1.8], [0.3, 1.6, 3.3]),
}


def test_every_driving_class_is_covered():
    assert set(CLASS_NAMES) == set(SIZE_RANGES)


@pytest.mark.parametrize("class_name", CLASS_NAMES)
def test_objects_have_plausible_sizes_centred_meshes_and_variety(class_name):
    objects = [make_object(class_name, object_seed(7, class_name, i)) for i in range(25)]
    lo, hi = (np.array(v) for v in SIZE_RANGES[class_name])
    sizes = np.array([o.size for o in objects])
    assert np.all(sizes >= lo) and np.all(sizes <= hi), sizes
    for o in objects:
        vmin, vmax = o.mesh.bounds
        np.testing.assert_allclose(vmin, -o.size / 2, atol=1e-9)
        np.testing.assert_allclose(vmax, o.size / 2, atol=1e-9)
        assert o.caption.startswith("a point cloud of ")
        assert np.all((o.mesh.reflectivity >= 0) & (o.mesh.reflectivity <= 1))
    assert len({o.attributes["style"] for o in objects}) >= 2  # intra-class variety
    assert np.ptp(sizes, axis=0).max() > 0.05


def test_car_sizes_match_nuscenes_statistics():
    sizes = np.array([make_object("car", object_seed(0, "car", i)).size for i in range(200)])
    np.testing.assert_allclose(sizes.mean(axis=0), [4.6, 1.85, 1.6], atol=0.25)  # nuScenes car ~4.6x1.95x1.7


def test_same_seed_same_mesh_and_different_seeds_differ():
    a, b = make_object("truck", 123), make_object("truck", 123)
    np.testing.assert_array_equal(a.mesh.vertices, b.mesh.vertices)
    np.testing.assert_array_equal(a.mesh.faces, b.mesh.faces)
    assert a.caption == b.caption
    c = make_object("truck", 124)
    assert a.mesh.vertices.shape != c.mesh.vertices.shape or not np.array_equal(a.mesh.vertices, c.mesh.vertices)
    assert object_seed(0, "car", 1) == object_seed(0, "car", 1) != object_seed(0, "car", 2)


def test_unknown_class_is_a_clear_error():
    with pytest.raises(ConfigError, match="class_name"):
        make_object("spaceship", 0)
    with pytest.raises(ConfigError, match="class_name"):
        object_seed(0, "spaceship", 0)


def test_surface_samples_lie_on_the_surface_uniformly_by_area():
    size = np.array([1.0, 2.0, 3.0])
    mesh = box((0.0, 0.0, 0.0), size)
    pts, normals = sample_surface(mesh, 60_000, seed=1)
    assert pts.shape == (60_000, 3) and pts.dtype == np.float32
    on_face = np.isclose(np.abs(pts), size / 2, atol=1e-5)  # (N, 3): which face pair each point is on
    assert np.all(on_face.sum(axis=1) >= 1)
    assert np.all(np.abs(pts) <= size / 2 + 1e-5)
    areas = np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]])
    np.testing.assert_allclose(on_face.mean(axis=0), areas / areas.sum(), atol=0.01)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)


def test_normal_noise_moves_points_off_the_surface_by_sigma():
    mesh = box((0.0, 0.0, 0.0), (2.0, 2.0, 2.0))
    pts, normals = sample_surface(mesh, 20_000, seed=2, normal_noise=0.01)
    offset = (np.abs(pts).max(axis=1) - 1.0)  # signed distance to the cube surface (faces only)
    assert 0.008 < offset.std() < 0.012
    assert abs(offset.mean()) < 0.001


def test_surface_sampling_rejects_bad_arguments():
    mesh = box((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="n_points"):
        sample_surface(mesh, 0)
    with pytest.raises(ConfigError, match="normal_noise"):
        sample_surface(mesh, 10, normal_noise=-1.0)
    flat = box((0.0, 0.0, 0.0), (1.0, 1.0, 0.0))
    flat = merge([flat]).transformed(np.zeros((3, 3)))
    with pytest.raises(ConfigError, match="zero surface area"):
        sample_surface(flat, 10)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(CLASS_NAMES), st.integers(0, 2**31))
def test_cad_clouds_cover_the_whole_object(class_name, seed):
    obj = make_object(class_name, seed)
    pts, _ = sample_surface(obj.mesh, 4000, seed=seed)
    assert np.all(np.abs(pts) <= obj.size / 2 + 1e-4)
    # a dense CAD cloud spans (almost) the full box in every axis, unlike a one-sided LiDAR view
    assert np.all(np.ptp(pts, axis=0) >= 0.8 * obj.size)
