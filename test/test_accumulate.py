"""Multi-sweep accumulation (ROS-free core): pose interpolation, the sweep ring, moving boxes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from blendclip_ros.errors import ConfigError
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.crop import points_in_boxes
from blendclip_ros.ros.accumulate import NS, BoxTracks, PoseError, PoseHistory, SweepRing, invert, pose_matrix

PERIOD_NS = NS // 10


def ego_pose(k: int) -> np.ndarray:
    """``world <- sensor`` of sweep k: 1.5 m forward and 3 degrees of yaw per sweep."""
    yaw = np.radians(3.0 * k)
    return pose_matrix((1.5 * k, 0.2 * k, 0.0), Rotation.from_euler("z", yaw).as_quat())


def box_surface(rng: np.random.Generator, centre, size, count: int) -> np.ndarray:
    points = rng.uniform(-0.5, 0.5, (count, 3)) * size
    face = rng.integers(0, 2, count)
    points[np.arange(count), face] = np.sign(rng.uniform(-1, 1, count)) * np.asarray(size)[face] / 2
    return points + centre


def to_frame(points_world: np.ndarray, world_from_frame: np.ndarray) -> np.ndarray:
    frame_from_world = invert(world_from_frame)
    return (points_world @ frame_from_world[:3, :3].T + frame_from_world[:3, 3]).astype(np.float32)


def history(poses: list[np.ndarray]) -> PoseHistory:
    out = PoseHistory()
    for k, pose in enumerate(poses):
        out.add(k * PERIOD_NS, pose[:3, 3], Rotation.from_matrix(pose[:3, :3]).as_quat())
    return out


def test_pose_history_interpolates_between_stamps_and_refuses_outside_them():
    poses = history([ego_pose(0), ego_pose(2)])
    poses.tolerance_ns = PERIOD_NS // 2
    halfway = poses.at(PERIOD_NS // 2)  # between the two stored poses (stamps 0 and 1 period)
    np.testing.assert_allclose(halfway[:3, 3], (1.5, 0.2, 0.0), atol=1e-12)
    yaw = Rotation.from_matrix(halfway[:3, :3]).as_euler("xyz")[2]
    assert np.degrees(yaw) == pytest.approx(3.0)
    np.testing.assert_allclose(poses.at(PERIOD_NS + PERIOD_NS // 4), poses.at(PERIOD_NS))  # within tolerance
    with pytest.raises(PoseError, match="no pose within"):
        poses.at(3 * PERIOD_NS)
    with pytest.raises(PoseError, match="no pose received"):
        PoseHistory().at(0)
    with pytest.raises(PoseError, match="finite"):
        poses.add(5, (0, 0, np.nan), (0, 0, 0, 1))
    small = PoseHistory(capacity=3)
    for k in (4, 1, 3, 2, 0):  # out of order: kept sorted, only the newest 3
        small.add(k * PERIOD_NS, (k, 0, 0), (0, 0, 0, 1))
    assert len(small) == 3 and small.at(3 * PERIOD_NS)[0, 3] == 3.0
    with pytest.raises(PoseError):
        small.at(0)


def test_extra_columns_travel_unchanged_while_xyz_move():
    """Intensity (column 3) stays with its point; only xyz are transformed into the current frame."""
    rng = np.random.default_rng(1)
    poses = [ego_pose(k) for k in range(3)]
    ring = SweepRing(3, history(poses).at)
    world = box_surface(rng, np.array([8.0, -2.0, 0.5]), np.array([2.0, 2.0, 1.0]), 30)
    clouds = [np.c_[to_frame(world, pose), np.full(len(world), 10.0 * k), np.arange(len(world))]
              for k, pose in enumerate(poses)]
    for k, cloud in enumerate(clouds[:2]):
        ring.add(k * PERIOD_NS, cloud)
    merged, missing = ring.merged(2 * PERIOD_NS, clouds[2])
    assert missing == 0 and merged.shape == (90, 5) and merged.dtype == np.float32
    np.testing.assert_array_equal(merged[:, 3], np.repeat([20.0, 0.0, 10.0], 30))  # current sweep first
    np.testing.assert_array_equal(merged[:, 4], np.tile(np.arange(30), 3))
    for k in range(3):  # the same world points land on the current sweep's, row by row
        np.testing.assert_allclose(merged[30 * k:30 * (k + 1), :3], clouds[2][:, :3], atol=1e-4)


def test_static_object_gains_points_at_the_right_place():
    rng = np.random.default_rng(0)
    centre, size = np.array([12.0, 3.0, 0.5]), np.array([4.0, 2.0, 1.5])
    poses = [ego_pose(k) for k in range(10)]
    ring = SweepRing(10, history(poses).at)
    for k, pose in enumerate(poses):
        ring.add(k * PERIOD_NS, to_frame(box_surface(rng, centre, size, 20), pose))
    current = to_frame(box_surface(rng, centre, size, 20), poses[-1])
    merged, missing = ring.merged(9 * PERIOD_NS, current)
    assert missing == 0 and merged.shape == (200, 3) and merged.dtype == np.float32
    box = Boxes.from_quaternions(to_frame(centre[None], poses[-1]).astype(float), size[None],
                                 Rotation.from_matrix(invert(poses[-1])[:3, :3]).as_quat()[None])
    inside = points_in_boxes(merged, Boxes(box.centers, box.sizes + 1e-3, box.quaternions))[0]
    assert len(inside) == 200  # every sweep's points land on the object in the current frame
    naive = np.concatenate([ring._ring[k].points for k in range(9)] + [current])  # no ego-motion compensation
    assert len(points_in_boxes(naive, Boxes(box.centers, box.sizes + 1e-3, box.quaternions))[0]) < 60


def test_the_ring_is_bounded_restarts_on_older_stamps_and_counts_missing_poses():
    poses = [ego_pose(k) for k in range(30)]
    ring = SweepRing(4, history(poses[:25]).at)
    for k in range(30):
        ring.add(k * PERIOD_NS, np.zeros((5, 3)))
    assert len(ring) == 4
    merged, missing = ring.merged(29 * PERIOD_NS, np.zeros((5, 3)))
    assert missing == 3 and len(merged) == 5  # poses end at sweep 24: the current sweep only
    merged, missing = ring.merged(28 * PERIOD_NS, np.zeros((5, 3)))  # pose of the "current" sweep missing
    assert missing == 2 and len(merged) == 5
    ring.add(3 * PERIOD_NS, np.ones((5, 3)))  # the bag was replayed from the start
    assert len(ring) == 1
    assert len(SweepRing(1, history(poses).at).merged(0, np.zeros((7, 3)))[0]) == 7
    with pytest.raises(ConfigError, match="accumulate.sweeps"):
        SweepRing(0, history(poses).at)


def test_moving_box_points_follow_the_box_with_its_tracked_velocity():
    rng = np.random.default_rng(1)
    size, velocity = np.array([4.5, 1.9, 1.6]), np.array([8.0, 0.0, 0.0])  # world frame, m/s
    poses = [ego_pose(k) for k in range(10)]
    poses_history = history(poses)
    ring, tracks = SweepRing(10, poses_history.at), BoxTracks()
    for k, pose in enumerate(poses):
        centre_world = np.array([20.0, -4.0, 0.8]) + velocity * k * PERIOD_NS / NS
        centre = to_frame(centre_world[None], pose).astype(float)
        yaw_quat = Rotation.from_matrix(invert(pose)[:3, :3]).as_quat()[None]
        boxes = Boxes.from_quaternions(centre, size[None], yaw_quat)
        velocities = tracks.velocities(k * PERIOD_NS, ["car-1"], centre, pose)
        points = to_frame(box_surface(rng, centre_world, 0.95 * size, 30), pose)  # just inside the box
        ring.add(k * PERIOD_NS, points)
    np.testing.assert_allclose(velocities[0], invert(poses[-1])[:3, :3] @ velocity, atol=1e-4)
    grown = Boxes(boxes.centers, boxes.sizes + 1e-3, boxes.quaternions)
    followed, _ = ring.merged(9 * PERIOD_NS, points, boxes, velocities)
    smeared, _ = ring.merged(9 * PERIOD_NS, points)
    assert len(points_in_boxes(followed, grown)[0]) == 300
    assert len(points_in_boxes(smeared, grown)[0]) < 150  # the trail behind a car at 8 m/s
    assert len(tracks) == 1


def test_box_tracks_need_a_recent_stable_id():
    tracks = BoxTracks(max_age_s=0.5)
    identity = np.eye(4)
    assert not tracks.velocities(0, ["a", ""], np.zeros((2, 3)), identity).any()
    v = tracks.velocities(NS // 10, ["a", "", "b"], np.array([[1.0, 0, 0], [5, 5, 5], [0, 0, 0]]), identity)
    np.testing.assert_allclose(v, [[10.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    assert not tracks.velocities(NS, ["a"], np.array([[9.0, 0, 0]]), identity).any()  # last seen 0.9 s ago
    assert len(tracks) == 1  # "b" was forgotten, "a" re-recorded
