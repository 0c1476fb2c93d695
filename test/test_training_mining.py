"""Mining object triplets from a simulated nuScenes-format dataset read by the real devkit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blendclip_ros.errors import ConfigError
from blendclip_sim.object_sets import load_object_set
from blendclip_train.mining import (DETECTION_CLASSES, DETECTION_RANGE, MiningConfig, detection_class,
                                           mine_object_set, scene_sample_tokens)
from blendclip_train.triplets import REAL, TripletDataset

pytest.importorskip("nuscenes")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from nuscenes.nuscenes import NuScenes

    from blendclip_sim.nuscenes_writer import sim_colormap, write_nuscenes
    from blendclip_sim.scene import generate_scene

    root = tmp_path_factory.mktemp("nus")
    write_nuscenes([generate_scene(3, duration=1.0), generate_scene(4, duration=0.5)], root, sweeps_per_keyframe=2)
    return root, NuScenes("v1.0-sim", str(root), verbose=False, colormap=sim_colormap())


def _annotations(nusc, tokens):
    """Every keyframe annotation with its detection class, in the devkit's order."""
    return [(nusc.get("sample_annotation", a), detection_class(nusc.get("sample_annotation", a)["category_name"]))
            for t in tokens for a in nusc.get("sample", t)["anns"]]


def test_class_mapping_keeps_ten_classes_and_drops_void():
    assert detection_class("vehicle.construction") == "construction vehicle"
    assert detection_class("human.pedestrian.child") == "pedestrian"
    assert detection_class("movable_object.trafficcone") == "traffic cone"
    for void in ("animal", "vehicle.emergency.police", "static_object.bicycle_rack", "human.pedestrian.stroller",
                 "vehicle.other", "static_object.traffic_sign"):
        assert detection_class(void) is None
    assert DETECTION_CLASSES == ("barrier", "bicycle", "bus", "car", "construction vehicle", "motorcycle",
                                 "pedestrian", "traffic cone", "trailer", "truck")


def test_keyframe_crops_match_the_annotated_point_counts(dataset):
    _, nusc = dataset
    tokens = scene_sample_tokens(nusc)
    assert len(tokens) == 3
    objects = mine_object_set(nusc, tokens)
    wanted = [(ann, name) for ann, name in _annotations(nusc, tokens) if name is not None and ann["num_lidar_pts"] >= 1]
    assert len(objects) == len(wanted) > 20
    # devkit order within each sample is kept: counts and classes line up one to one
    np.testing.assert_array_equal(objects.num_points, [ann["num_lidar_pts"] for ann, _ in wanted])
    assert [objects.class_names[i] for i in objects.labels] == [name for _, name in wanted]
    assert objects.domain == "lidar" and objects.split == "train" and objects.class_names == DETECTION_CLASSES
    assert set(objects.captions) <= {f"a point cloud of a {c}" for c in DETECTION_CLASSES}
    assert np.isnan(objects.occlusion).all() and (objects.image_paths == "").all()


def test_box_frame_points_lie_inside_the_box_and_instances_keep_their_id(dataset):
    _, nusc = dataset
    objects = mine_object_set(nusc, scene_sample_tokens(nusc))
    for i in range(len(objects)):
        half = objects.box_size[i] / 2
        assert (np.abs(objects.cloud(i)) <= half + 1e-4).all()
    tokens = [a["instance_token"] for a, name in _annotations(nusc, scene_sample_tokens(nusc))
              if name is not None and a["num_lidar_pts"] >= 1]
    by_token: dict[str, set[int]] = {}
    for token, instance in zip(tokens, objects.instance_ids):
        by_token.setdefault(token, set()).add(int(instance))
    assert all(len(ids) == 1 for ids in by_token.values())
    assert len(set(objects.instance_ids)) == len(by_token)
    np.testing.assert_array_equal(objects.instance_ids // 1_000_000, objects.labels)


def test_centred_frame_min_points_and_ranges(dataset):
    _, nusc = dataset
    tokens = scene_sample_tokens(nusc)
    box = mine_object_set(nusc, tokens)
    centred = mine_object_set(nusc, tokens, MiningConfig(frame="centred", min_points=5))
    assert (centred.num_points >= 5).all() and len(centred) == int((box.num_points >= 5).sum())
    for i in range(len(centred)):
        np.testing.assert_allclose(centred.cloud(i).mean(0), 0, atol=1e-4)
    ranged = mine_object_set(nusc, tokens, MiningConfig(eval_ranges=True))
    limits = np.array([DETECTION_RANGE[ranged.class_names[i]] for i in ranged.labels])
    assert (ranged.distance <= limits).all() and len(ranged) == int(
        (box.distance <= np.array([DETECTION_RANGE[box.class_names[i]] for i in box.labels])).sum())


def test_previous_sweeps_add_points_and_motion_compensation_keeps_them_in_the_box(dataset):
    _, nusc = dataset
    tokens = scene_sample_tokens(nusc)
    single = mine_object_set(nusc, tokens)
    compensated = mine_object_set(nusc, tokens, MiningConfig(sweeps=3))
    plain = mine_object_set(nusc, tokens, MiningConfig(sweeps=3, motion_compensation=False))
    assert compensated.num_points.sum() > single.num_points.sum()
    moving = [a for a, name in _annotations(nusc, tokens) if name is not None
              and np.linalg.norm(np.nan_to_num(nusc.box_velocity(a["token"]))) > 1.0]
    assert moving  # the simulated streets have moving traffic
    assert compensated.num_points.sum() > plain.num_points.sum()
    for objects in (compensated, plain):
        for i in range(len(objects)):
            assert (np.abs(objects.cloud(i)) <= objects.box_size[i] / 2 + 1e-4).all()


def test_caption_mapping_and_split_selection(dataset):
    _, nusc = dataset
    first_scene = nusc.scene[0]["name"]
    tokens = scene_sample_tokens(nusc, scenes=[first_scene])
    assert len(tokens) == 2
    ann = next(a for a, name in _annotations(nusc, tokens) if name is not None and a["num_lidar_pts"] > 0)
    objects = mine_object_set(nusc, tokens, MiningConfig(split="val"),
                              captions={ann["token"]: "a point cloud of a dented grey hatchback"})
    assert "a point cloud of a dented grey hatchback" in set(objects.captions) and objects.split == "val"
    with pytest.raises(ConfigError, match="split"):
        scene_sample_tokens(nusc, split="val")  # simulated scene names are in no devkit split
    with pytest.raises(ConfigError, match="split"):
        scene_sample_tokens(nusc, split="nonsense")
    with pytest.raises(ConfigError, match="frame"):
        MiningConfig(frame="global")


def test_cli_writes_a_set_the_trainer_reads(dataset, tmp_path, capsys):
    from blendclip_train.cli.mine import main

    root, _ = dataset
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"no-such-token": "unused"}))
    out = tmp_path / "mined.npz"
    code = main(["--dataroot", str(root), "--version", "v1.0-sim", "--out", str(out), "--sweeps", "2",
                 "--min-points", "3", "--captions", str(captions), "--max-samples", "2"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    objects = load_object_set(out)
    assert summary["objects"] == len(objects) > 0 and summary["samples"] == 2
    assert sum(summary["per_class"].values()) == len(objects) and (objects.num_points >= 3).all()
    data = TripletDataset([out], REAL)
    assert len(data) == len(objects) and data.class_names == list(DETECTION_CLASSES)
    assert main(["--dataroot", str(root), "--version", "v1.0-sim", "--out", str(tmp_path / "x.npy")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["--dataroot", str(tmp_path), "--version", "v1.0-sim", "--out", str(out)]) == 2
    assert "dataroot" in capsys.readouterr().err
