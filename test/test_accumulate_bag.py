"""The nuScenes bag tool's ego poses drive the node's accumulation like the devkit's multi-sweep clouds.

A nuScenes-format dataset (real devkit; built in tmp_path from the real sweep, see
test_bag_tools.py) is written with ``--all-sweeps``; the bag's odometry then moves the earlier
sweeps into the keyframe's frame exactly as the devkit's ego-motion compensation does.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from blendclip_ros.ros.accumulate import PoseHistory, SweepRing, pose_matrix
from blendclip_ros.ros.bag_from_nuscenes import main

from .test_bag_tools import CATEGORIES, CLOUD, DETS, _cloud_points, _messages, _stamp_ns, write_nuscenes_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, nuscenes_frame):
    pytest.importorskip("nuscenes")
    from nuscenes.nuscenes import NuScenes

    root = tmp_path_factory.mktemp("nuscenes")
    write_nuscenes_dataset(root, nuscenes_frame.points, nuscenes_frame.boxes,
                           [CATEGORIES[n] for n in nuscenes_frame.labels])
    return root, NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)


def _transform(t) -> np.ndarray:
    return pose_matrix((t.translation.x, t.translation.y, t.translation.z),
                       (t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w))


def test_all_sweeps_bag_carries_devkit_poses_and_accumulates_like_the_devkit(tmp_path, dataset):
    from blendclip_ros.data.nuscenes_frames import multisweep_points

    root, nusc = dataset
    bag = tmp_path / "all"
    assert main([str(bag), "--dataroot", str(root), "--all-sweeps", "--quiet"]) == 0
    msgs = _messages(bag)
    clouds, odometry = msgs[CLOUD], msgs["/odom"]
    assert len(clouds) == len(odometry) == len(msgs["/tf"]) == 4 and len(msgs[DETS]) == 3  # sweep sd-s: no boxes
    assert len(msgs["/tf_static"]) == 1
    for (_, cloud), (_, odom), (_, tf) in zip(clouds, odometry, msgs["/tf"]):
        record = next(r for r in nusc.sample_data if r["timestamp"] * 1000 == _stamp_ns(cloud))
        ego = nusc.get("ego_pose", record["ego_pose_token"])
        sensor = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
        matrix = {}
        for name, rec in (("ego", ego), ("sensor", sensor)):
            w, x, y, z = rec["rotation"]
            matrix[name] = pose_matrix(rec["translation"], (x, y, z, w))
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        assert (odom.header.frame_id, odom.child_frame_id, _stamp_ns(odom)) == ("odom", "lidar_top", _stamp_ns(cloud))
        np.testing.assert_allclose(pose_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w)),
                                   matrix["ego"] @ matrix["sensor"], atol=1e-9)
        (transform,) = tf.transforms
        assert (transform.header.frame_id, transform.child_frame_id) == ("odom", "base_link")
        np.testing.assert_allclose(_transform(transform.transform), matrix["ego"], atol=1e-9)
    (static,) = msgs["/tf_static"][0][1].transforms
    assert (static.header.frame_id, static.child_frame_id) == ("base_link", "lidar_top")

    # Accumulate keyframe sd-b (scene-1: sweeps sd-a, sd-s, sd-b) from the bag alone.
    poses = PoseHistory()
    for _, odom in odometry:
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        poses.add(_stamp_ns(odom), (p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
    ring = SweepRing(3, poses.at)
    points = [_cloud_points(cloud, 5) for _, cloud in clouds]
    for (_, cloud), cloud_points in zip(clouds[:3], points):
        ring.add(_stamp_ns(cloud), cloud_points)
    merged, missing = ring.merged(_stamp_ns(clouds[2][1]), points[2])
    assert missing == 0
    keyframe = nusc.get("sample", nusc.scene[0]["last_sample_token"])["data"]["LIDAR_TOP"]
    devkit = multisweep_points(nusc, keyframe, 3, min_distance=0.0)  # chunks: sd-b, sd-s, sd-a
    sizes = [len(p) for p in points[:3]]  # sd-a, sd-s, sd-b
    ours = np.split(merged, np.cumsum([sizes[2], sizes[0]]))  # ring order: current, then oldest first
    theirs = np.split(devkit[:, :5], np.cumsum([sizes[2], sizes[1]]))  # xyz moved; intensity, ring kept
    for mine, reference in zip(ours, (theirs[0], theirs[2], theirs[1])):
        np.testing.assert_allclose(mine, reference, atol=2e-4)
    assert Rotation.from_matrix(poses.at(_stamp_ns(clouds[2][1]))[:3, :3]).magnitude() > 0.3  # the ego did turn


def test_all_sweeps_needs_nuscenes_and_single_sweeps(tmp_path, capsys, dataset):
    from .conftest import NUSCENES_INFO

    assert main([str(tmp_path / "a"), "--mmdet3d-info", str(NUSCENES_INFO), "--all-sweeps", "--quiet"]) == 2
    assert "--all-sweeps" in capsys.readouterr().err
    assert main([str(tmp_path / "b"), "--dataroot", str(dataset[0]), "--all-sweeps", "--sweeps", "3",
                 "--quiet"]) == 2
    assert "--sweeps 1" in capsys.readouterr().err
    assert main([str(tmp_path / "c"), "--dataroot", str(dataset[0]), "--odom-topic", "/lidar/points",
                 "--quiet"]) == 2
    assert "must differ" in capsys.readouterr().err
