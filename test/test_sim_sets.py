"""CAD and simulated-LiDAR object sets, the demo bag, and the simulate CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from blendclip_ros.errors import ConfigError, PointFileError
from blendclip_sim.object_sets import build_object_sets, lidar_view, load_object_set, write_object_sets
from blendclip_sim.objects import make_object
from blendclip_sim.lidar import hdl32e

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("car", "pedestrian", "traffic cone", "bus")


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    out = tmp_path_factory.mktemp("sets")
    paths = write_object_sets(out, seed=3, n_per_class=10, cad_points=256, lidar_views=2, classes=CLASSES)
    return {k: load_object_set(p) for k, p in paths.items()}


def test_splits_are_disjoint_by_instance_and_shared_across_domains(sets):
    cad_train, cad_test = sets[("cad", "train")], sets[("cad", "test")]
    assert len(cad_train) == 4 * 8 and len(cad_test) == 4 * 2
    assert not set(cad_train.instance_ids) & set(cad_test.instance_ids)
    assert set(sets[("lidar", "test")].instance_ids) <= set(cad_test.instance_ids)
    assert set(sets[("lidar", "train")].instance_ids) <= set(cad_train.instance_ids)
    assert cad_train.class_names == CLASSES


def test_cad_clouds_are_dense_whole_objects(sets):
    s = sets[("cad", "train")]
    assert np.all(s.num_points == 256) and s.points.shape == (256 * len(s), 3)
    assert np.all(np.isnan(s.distance)) and np.all(s.occlusion == 0)
    for i in range(len(s)):
        cloud = s.cloud(i)
        assert np.all(np.abs(cloud) <= s.box_size[i] / 2 + 1e-4)
        assert s.captions[i].startswith("a point cloud of ") and s.image_paths[i] == ""


def test_lidar_views_are_sparse_partial_crops_with_metadata(sets):
    s = sets[("lidar", "train")]
    assert len(s) > 0
    np.testing.assert_array_equal(np.diff(s.offsets), s.num_points)
    assert np.all(s.num_points >= 1)
    assert np.median(s.num_points) < 256  # far sparser than CAD
    assert np.all((s.distance > 3) & (s.distance <= 50)) and np.all((s.occlusion >= 0) & (s.occlusion <= 1))
    for i in range(len(s)):
        assert np.all(np.abs(s.cloud(i)) <= s.box_size[i] / 2 + 1e-4)  # cropped by the box, box frame
    cone = s.labels == s.class_names.index("traffic cone")
    assert s.distance[cone].max() <= 30.0


def test_lidar_view_counts_fall_with_distance_and_occlusion_is_measured():
    car = make_object("car", 1)
    rng = np.random.default_rng(0)
    near, occ_near = lidar_view(car, 10.0, 0.3, 0.0, rng, hdl32e())
    far, _ = lidar_view(car, 45.0, 0.3, 0.0, rng, hdl32e())
    assert len(near) > 5 * len(far) > 0 and occ_near == 0.0
    blocker = make_object("truck", 2)
    hidden, occluded = lidar_view(car, 25.0, 0.0, 0.0, rng, hdl32e(),
                                  [(blocker, np.array([12.0, 0.0, blocker.size[2] / 2]), np.pi / 2)])
    assert occluded > 0.8 and len(hidden) < 10


def test_object_set_errors(tmp_path):
    with pytest.raises(ConfigError, match="n_per_class"):
        build_object_sets(n_per_class=1)
    with pytest.raises(ConfigError, match="classes"):
        build_object_sets(n_per_class=2, classes=("car", "ufo"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, points=np.zeros((3, 3)))
    with pytest.raises(PointFileError, match="not an object-set"):
        load_object_set(bad)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_bundled_demo_bag_regenerates_bit_for_bit(tmp_path):
    from blendclip_sim.cli import main

    committed = REPO / "data" / "demo"
    assert committed.is_dir(), "data/demo is missing: run blendclip-simulate demo-bag"
    out = tmp_path / "demo"  # same folder name, so metadata.yaml names the same .mcap
    assert main(["demo-bag", "--out", str(out)]) == 0
    assert _digest(out) == _digest(committed)
    assert sum(p.stat().st_size for p in committed.iterdir()) < 6e6


def test_demo_bag_holds_clouds_and_matching_ground_truth():
    from blendclip_ros.bags.reader import decode, read_bag

    msgs = list(read_bag(REPO / "data" / "demo"))
    clouds = [m for m in msgs if m.topic == "/lidar/points"]
    dets = [m for m in msgs if m.topic == "/detections"]
    assert len(clouds) == len(dets) >= 6
    for c, d in zip(clouds, dets):
        cloud, det = decode(c), decode(d)
        assert cloud.header.frame_id == det.header.frame_id == "lidar_top"
        assert (cloud.header.stamp.sec, cloud.header.stamp.nanosec) == (det.header.stamp.sec, det.header.stamp.nanosec)
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity", "ring"]
        pts = np.frombuffer(bytes(cloud.data), dtype=np.float32).reshape(-1, 5)
        assert len(det.detections) > 5
        for box in det.detections:
            hyp = box.results[0].hypothesis
            assert hyp.score == 1.0 and hyp.class_id and len(box.id) == 32
            c3 = np.array([box.bbox.center.position.x, box.bbox.center.position.y, box.bbox.center.position.z])
            q = box.bbox.center.orientation
            yaw = 2 * np.arctan2(q.z, q.w)
            size = np.array([box.bbox.size.x, box.bbox.size.y, box.bbox.size.z])
            rotation = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
            local = (pts[:, :3] - c3) @ rotation
            assert np.all(np.abs(local) <= size / 2, axis=1).sum() >= 1  # only boxes with points are written


def test_compare_real_prints_both_distributions(nuscenes_frame, capsys):
    from blendclip_sim.cli import main

    assert main(["compare-real", "--real", str(nuscenes_frame.lidar_path.with_name(
        "n015-2018-07-24-11-22-45+0800.pkl")), "--scenes", "1"]) == 0
    out = capsys.readouterr().out
    assert "real nuScenes keyframe: 68 boxes" in out and "pedestrian" in out


def test_cli_help_and_errors(tmp_path, capsys):
    from blendclip_sim.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "demo-bag" in capsys.readouterr().out
    existing = tmp_path / "bag"
    existing.mkdir()
    assert main(["demo-bag", "--out", str(existing)]) == 2
    assert "--force" in capsys.readouterr().err
