"""Simulated scenes written in TruckScenes format, loaded by the real truckscenes-devkit and mined."""

from __future__ import annotations

import numpy as np
import pytest

from blendclip_train.mining import TRUCKSCENES, KeyframeMiner, MiningConfig, scene_units

pytest.importorskip("truckscenes")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from blendclip_sim.scene import generate_scene
    from blendclip_sim.truckscenes_writer import write_truckscenes

    root = tmp_path_factory.mktemp("truck")
    write_truckscenes([generate_scene(8, duration=1.0)], root)
    return root, TRUCKSCENES.open(root, "v1.0-sim")


def test_devkit_loads_six_lidars_and_counts_agree(dataset):
    from pyquaternion import Quaternion
    from truckscenes.utils.data_classes import Box, LidarPointCloud
    from truckscenes.utils.geometry_utils import points_in_box, transform_matrix

    _, trucksc = dataset
    assert len(trucksc.sample) == 2 and len(trucksc.scene) == 1
    sample = trucksc.sample[1]
    assert set(TRUCKSCENES.lidars) <= set(sample["data"])
    clouds = []
    for channel in TRUCKSCENES.lidars:
        sd = trucksc.get("sample_data", sample["data"][channel])
        cs = trucksc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        ego = trucksc.get("ego_pose", sd["ego_pose_token"])
        pc = LidarPointCloud.from_file(trucksc.get_sample_data_path(sd["token"]))
        m = transform_matrix(ego["translation"], Quaternion(ego["rotation"])) @ \
            transform_matrix(cs["translation"], Quaternion(cs["rotation"]))
        clouds.append(m[:3, :3] @ pc.points[:3] + m[:3, 3:])
    fused = np.concatenate(clouds, axis=1)
    nonzero = 0
    for token in sample["anns"]:
        ann = trucksc.get("sample_annotation", token)
        box = Box(ann["translation"], ann["size"], Quaternion(ann["rotation"]))
        assert abs(int(points_in_box(box, fused).sum()) - ann["num_lidar_pts"]) <= 1  # float32 files
        nonzero += ann["num_lidar_pts"] > 0
        assert not np.isnan(trucksc.box_velocity(token)).any()
    assert nonzero > 10 and len({trucksc.get("sample_annotation", t)["category_name"] for t in sample["anns"]}) > 4


def test_mining_fuses_the_keyframe_lidars_with_the_twelve_classes(dataset):
    _, trucksc = dataset
    assert TRUCKSCENES.classes == ("animal", "pedestrian", "barrier", "traffic cone", "traffic sign", "bicycle", "bus",
                                   "car", "other vehicle", "motorcycle", "trailer", "truck")
    assert TRUCKSCENES.detection_class("vehicle.construction") == "other vehicle"
    assert TRUCKSCENES.detection_class("vehicle.ego_trailer") == "trailer"
    miner = KeyframeMiner(trucksc, TRUCKSCENES, MiningConfig())  # default 10 sweeps: TruckScenes uses keyframes only
    unit = scene_units(trucksc, TRUCKSCENES)[0]
    mined = [m for t in unit.sample_tokens for m in miner.mine(t)]
    wanted = [a for t in unit.sample_tokens for a in (trucksc.get("sample_annotation", x)
                                                       for x in trucksc.get("sample", t)["anns"])
              if TRUCKSCENES.detection_class(a["category_name"]) and a["num_lidar_pts"] >= 1]
    assert [m.key for m in mined] == [a["token"] for a in wanted]
    assert all(m.meta["sweeps"] == 1 for m in mined)
    assert np.abs(np.array([m.meta["num_points"] for m in mined]) - [a["num_lidar_pts"] for a in wanted]).max() <= 1
    assert {"traffic sign", "car", "pedestrian"} <= {m.label for m in mined}
    ranges = TRUCKSCENES.class_ranges()
    assert ranges["car"] == ranges["other vehicle"] == 150 and ranges["pedestrian"] == ranges["traffic sign"] == 75
    evaluation = KeyframeMiner(trucksc, TRUCKSCENES, MiningConfig(eval_set=True))
    kept = [m for t in unit.sample_tokens for m in evaluation.mine(t)]
    assert kept and all(m.meta["distance"] < ranges[m.label] for m in kept)
