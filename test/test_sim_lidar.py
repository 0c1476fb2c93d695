"""Ray casting and the LiDAR simulator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blendclip_ros.errors import ConfigError
from blendclip_sim.lidar import (BeamPattern, Instance, LidarSimulator, cast_scene, hdl32e, hdl64e, preset,
                                     vls128)
from blendclip_sim.mesh import box, merge, rot_z
from blendclip_sim.objects import CLASS_NAMES, make_object
from blendclip_sim.raycast import build_bvh, intersect, intersect_brute_force, moller_trumbore

SENSOR_HEIGHT = 1.84


def _random_rays(rng, n):
    d = rng.normal(size=(n, 3))
    d[:, 2] = -np.abs(d[:, 2]) * 0.2
    return np.tile([0.0, 0.0, SENSOR_HEIGHT], (n, 1)), d / np.linalg.norm(d, axis=1, keepdims=True)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([1, 4, 16, 64]))
def test_accelerated_intersection_equals_brute_force(seed, leaf_size):
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(4):
        o = make_object(CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))], int(rng.integers(1 << 30)))
        offset = (rng.uniform(-8, 8), rng.uniform(-8, 8), o.size[2] / 2)
        parts.append(o.mesh.transformed(rot_z(rng.uniform(0, 6.3)), offset))
    mesh = merge(parts)
    origins, dirs = _random_rays(rng, 3000)
    fast = intersect(build_bvh(mesh, leaf_size), origins, dirs)
    slow = intersect_brute_force(mesh, origins, dirs)
    np.testing.assert_array_equal(np.isfinite(fast.t), np.isfinite(slow.t))
    hit = np.isfinite(slow.t)
    assert hit.sum() > 0
    np.testing.assert_allclose(fast.t[hit], slow.t[hit], rtol=1e-12)


def test_intersection_distance_of_a_box_is_exact():
    mesh = box((10.0, 0.0, 0.0), (2.0, 2.0, 2.0))
    origins = np.zeros((3, 3))
    dirs = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.05, 0.0]])
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    hits = intersect(build_bvh(mesh), origins, dirs)
    assert hits.t[0] == pytest.approx(9.0)
    assert np.isinf(hits.t[1]) and hits.face[1] == -1
    assert hits.t[2] == pytest.approx(9.0 / dirs[2, 0])
    # t_max prunes hits farther than the limit
    assert np.isinf(intersect(build_bvh(mesh), origins, dirs, t_max=8.0).t).all()


def test_moller_trumbore_edges():
    v0, e1, e2 = np.zeros(3), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    o = np.array([[0.2, 0.2, 1.0], [0.8, 0.8, 1.0], [0.2, 0.2, -1.0]])
    d = np.array([[0.0, 0.0, -1.0]] * 3)
    t = moller_trumbore(o, d, v0, e1, e2)
    assert t[0] == pytest.approx(1.0) and np.isinf(t[1]) and np.isinf(t[2])  # outside; behind the origin


def test_beam_presets_follow_the_real_sensors():
    p = hdl32e()
    assert p.n_beams == 32 and p.azimuth_steps == 1084 and p.frequency_hz == 20.0
    assert p.elevations_deg[0] == pytest.approx(-30.67) and p.elevations_deg[-1] == pytest.approx(10.67)
    np.testing.assert_allclose(np.diff(p.elevations_deg), 4 / 3, atol=0.002)
    assert hdl64e().n_beams == 64 and vls128().n_beams == 128
    assert min(vls128().elevations_deg) == pytest.approx(-25.0) and max(vls128().elevations_deg) == pytest.approx(15.0)
    dirs, ring = p.rays()
    assert dirs.shape == (32 * 1084, 3) and ring.max() == 31
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0)
    np.testing.assert_allclose(np.degrees(np.arcsin(dirs[:, 2])), np.asarray(p.elevations_deg)[ring], atol=1e-9)
    with pytest.raises(ConfigError, match="preset"):
        preset("hdl16")
    with pytest.raises(ConfigError, match="elevations_deg"):
        BeamPattern("bad", (1.0, 0.0), 100, 10.0)
    with pytest.raises(ConfigError, match="azimuth_steps"):
        BeamPattern("bad", (0.0, 1.0), 0, 10.0)


def test_empty_road_gives_rings_on_the_ground_in_nuscenes_layout():
    sweep = LidarSimulator().scan([], np.eye(3), [0.0, 0.0, SENSOR_HEIGHT], seed=0)
    pts = sweep.points
    assert pts.dtype == np.float32 and pts.shape[1] == 5
    np.testing.assert_allclose(pts[:, 2], -SENSOR_HEIGHT, atol=0.06)  # the ground (2 cm range noise)
    assert set(np.unique(pts[:, 4]).astype(int)) <= set(range(23))  # only downward beams return
    assert np.all((pts[:, 3] >= 0) & (pts[:, 3] <= 255)) and np.all(pts[:, 3] == np.round(pts[:, 3]))
    r = np.linalg.norm(pts[:, :3], axis=1)
    assert r.max() <= hdl32e().max_range + 0.1
    assert np.all(sweep.object_id == -1)
    # the lowest ring lands where its elevation says: h / tan(30.67 deg)
    np.testing.assert_allclose(np.median(np.linalg.norm(pts[pts[:, 4] == 0, :2], axis=1)),
                               SENSOR_HEIGHT / np.tan(np.radians(30.67)), rtol=0.02)


def _car_at(distance, object_id=0, y=0.0):
    car = make_object("car", 5)
    return Instance.from_mesh(car.mesh, object_id).placed(np.eye(3), [distance, y, car.size[2] / 2]), car


def test_far_objects_get_a_handful_of_points_and_only_their_near_side():
    counts = {}
    for d in (8.0, 20.0, 40.0, 70.0):
        inst, car = _car_at(d)
        sweep = LidarSimulator().scan([inst], np.eye(3), [0.0, 0.0, SENSOR_HEIGHT], seed=1)
        mine = sweep.points[sweep.object_id == 0]
        counts[d] = len(mine)
        if len(mine):  # self-occlusion: only the face looking at the sensor is hit
            assert mine[:, 0].max() < d - car.size[0] / 2 + 1.6
    assert counts[8.0] > counts[20.0] > counts[40.0] > counts[70.0]
    assert counts[8.0] > 300 and 0 < counts[70.0] < 25


def test_occlusion_by_another_object_and_visible_fraction():
    front, _ = _car_at(10.0, object_id=0)
    back, _ = _car_at(20.0, object_id=1)
    alone = cast_scene([back], np.array([0.0, 0.0, SENSOR_HEIGHT]), hdl32e().rays()[0], 0.0, 100.0)
    both = cast_scene([front, back], np.array([0.0, 0.0, SENSOR_HEIGHT]), hdl32e().rays()[0], 0.0, 100.0)
    seen_alone = (alone.object_id == 1).sum()
    seen_behind = (both.object_id == 1).sum()
    assert seen_alone > 30
    assert seen_behind < 0.3 * seen_alone  # mostly hidden behind the front car
    assert both.own_hits[1] == seen_alone  # own hits ignore occluders


def test_intensity_comes_from_reflectivity_and_incidence():
    plate = box((10.0, 0.0, 1.0), (0.05, 3.0, 2.0))
    bright = Instance.from_mesh(plate.with_reflectivity(0.9), 0)
    dark = Instance.from_mesh(plate.with_reflectivity(0.1), 0)
    sim = LidarSimulator()
    i_bright = sim.scan([bright], np.eye(3), [0, 0, SENSOR_HEIGHT], seed=0).points
    i_dark = sim.scan([dark], np.eye(3), [0, 0, SENSOR_HEIGHT], seed=0).points
    on = lambda p: p[np.abs(p[:, 0] - 9.975) < 0.1, 3]  # noqa: E731
    assert np.median(on(i_bright)) > 4 * np.median(on(i_dark))
    centred = Instance.from_mesh(box((0.0, 0.0, 0.0), (0.05, 3.0, 2.0)).with_reflectivity(0.3), 0)
    medians = []
    for yaw in (0.0, 1.2):  # facing the sensor, then turned almost edge-on
        p = sim.scan([centred.placed(rot_z(yaw), [10.0, 0.0, 1.0])], np.eye(3), [0, 0, SENSOR_HEIGHT], seed=0)
        medians.append(np.median(p.points[p.object_id == 0, 3]))
    assert medians[1] < 0.75 * medians[0]


def test_range_noise_and_dropout_are_applied():
    wall = Instance.from_mesh(box((10.0, 0.0, 2.0), (0.1, 40.0, 6.0)).with_reflectivity(0.5), 0)
    noisy = LidarSimulator(BeamPattern("t", tuple(np.linspace(-5, 5, 8)), 720, 10.0, range_noise=0.05, dropout=0.3))
    exact = LidarSimulator(BeamPattern("t", tuple(np.linspace(-5, 5, 8)), 720, 10.0, range_noise=0.0, dropout=0.0))
    a = noisy.scan([wall], np.eye(3), [0, 0, 1.0], seed=3, ground_z=None).points
    b = exact.scan([wall], np.eye(3), [0, 0, 1.0], seed=3, ground_z=None).points
    np.testing.assert_allclose(b[:, 0], 9.95, atol=1e-9)
    assert 0.6 < len(a) / len(b) < 0.8
    r = np.linalg.norm(a[:, :3], axis=1)
    expected = 9.95 / (a[:, 0] / r)  # the wall's range along each ray
    assert 0.045 < (r - expected).std() < 0.055
