"""Benchmark readers on small files written here in each published layout (and the real nuScenes sweep)."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest

from blendclip_ros.errors import ConfigError, PointFileError
from blendclip_train.datasets.benchmarks import (
    SCANOBJECTNN_CLASSES,
    load_eval_set,
    parse_data_spec,
)
from blendclip_train.datasets.common import y_up_to_z_up
from blendclip_train.shards import ShardSample, write_shard
from test.test_training_triplets import tiny_object_set

MODELNET_NAMES = ["airplane", "bathtub", "bed", "flower_pot"]


def cloud(n: int, seed: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, channels)).astype(np.float32)


def write_modelnet_dat(root, labels=(3, 0, 2)):
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET_NAMES) + "\n")
    clouds = [cloud(60 + k, k, 6) for k in range(len(labels))]
    with (root / "modelnet40_test_8192pts_fps.dat").open("wb") as f:
        pickle.dump([clouds, [np.array([label], np.int32) for label in labels]], f)
    return clouds


def test_modelnet40_release_pickle(tmp_path):
    clouds = write_modelnet_dat(tmp_path / "modelnet40_normal_resampled")
    data = load_eval_set(f"modelnet40:{tmp_path / 'modelnet40_normal_resampled'}")
    assert data.class_names == MODELNET_NAMES and data.labels.tolist() == [3, 0, 2]
    assert data.prompts == "modelnet40_64" and data.num_points == 8192 and data.sampling == "fps"
    np.testing.assert_allclose(data.points[:60], y_up_to_z_up(clouds[0][:, :3]))  # normals dropped, z-up
    assert data.point_counts.tolist() == [60, 61, 62] and data.info["axis_conversion"].startswith("rot_x")
    prepared = data.clouds(num_points=32)
    assert [len(c) for c in prepared] == [32, 32, 32]
    np.testing.assert_allclose([np.linalg.norm(c, axis=1).max() for c in prepared], 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.stack([c.mean(0) for c in prepared]), 0.0, atol=1e-5)  # sampled, then normalised
    assert not np.allclose(data.clouds(seed=1, num_points=32)[0], prepared[0])  # another FPS start


def test_modelnet40_text_format_and_openshape_file(tmp_path):
    root = tmp_path / "modelnet40_normal_resampled"
    (root / "bed").mkdir(parents=True)
    (root / "flower_pot").mkdir()
    (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET_NAMES))
    (root / "modelnet40_test.txt").write_text("bed_0516\nflower_pot_0150\n")
    rows = {name: cloud(7, k, 6) for k, name in enumerate(["bed_0516", "flower_pot_0150"])}
    for name, values in rows.items():
        text = "\n".join(",".join(f"{v:.6f}" for v in row) for row in values)
        (root / name.rsplit("_", 1)[0] / f"{name}.txt").write_text(text + "\n")
    data = load_eval_set(f"modelnet40:{root}")
    assert data.name == "modelnet40:text" and data.labels.tolist() == [2, 3]
    np.testing.assert_allclose(data.points[7:], y_up_to_z_up(rows["flower_pot_0150"][:, :3]), atol=1e-5)
    other = tmp_path / "openshape"
    other.mkdir()
    np.save(other / "test_pc.npy", np.array([{"xyz": cloud(9, 1), "rgb": np.zeros((9, 3))}], dtype=object),
            allow_pickle=True)
    (other / "test_split.json").write_text(json.dumps([{"name": "bed_0516", "category": "bed"}]))
    assert load_eval_set(f"modelnet40:{other}").class_names == ["bed"]
    with pytest.raises(PointFileError, match="no modelnet40_test"):
        load_eval_set(f"modelnet40:{tmp_path}")


def write_scanobjectnn(root):
    files = {"main_split_nobg/test_objectdataset.h5": [0, 14, 4],
             "main_split/test_objectdataset_augmentedrot_scale75.h5": [1, 2]}
    for rel, labels in files.items():
        (root / "h5_files" / rel).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(root / "h5_files" / rel, "w") as f:
            f["data"] = np.stack([cloud(2048, k) for k in range(len(labels))])
            f["label"] = np.array(labels, np.int64)
            f["mask"] = np.zeros((len(labels), 2048), np.int64)
    return root


def test_scanobjectnn_variants(tmp_path):
    root = write_scanobjectnn(tmp_path / "sonn")
    default = load_eval_set(f"scanobjectnn:{root}")
    assert default.name == "scanobjectnn:OBJ_ONLY" and default.num_points == 2048
    assert [default.class_names[k] for k in default.labels] == ["bag", "toilet", "chair"]
    hardest = load_eval_set(f"scanobjectnn:{root}", scanobjectnn_variant="pb_t50_rs")
    assert hardest.name == "scanobjectnn:PB_T50_RS" and len(hardest) == 2
    by_file = load_eval_set(f"scanobjectnn:{root}/h5_files/main_split/test_objectdataset_augmentedrot_scale75.h5")
    assert by_file.info["variant"] == "PB_T50_RS" and by_file.class_names == list(SCANOBJECTNN_CLASSES)
    with pytest.raises(PointFileError, match="OBJ_BG"):
        load_eval_set(f"scanobjectnn:{root}", scanobjectnn_variant="OBJ_BG")
    with pytest.raises(ConfigError, match="variant"):
        load_eval_set(f"scanobjectnn:{root}", scanobjectnn_variant="hard")


def test_objaverse_lvis_openshape_and_ulip_splits(tmp_path):
    root = tmp_path / "objaverse-lvis"
    (root / "objs").mkdir(parents=True)
    for k in range(3):
        np.save(root / "objs" / f"u{k}.npy", {"xyz": cloud(10000 if k == 0 else 50, k), "rgb": np.ones((1, 3))},
                allow_pickle=True)
    split = [{"uid": f"u{k}", "category": ["zebra", "apple"][k % 2], "group": "x",
              "data_path": f"/mnt/data/objaverse-lvis/objs/u{k}.npy"} for k in range(3)]
    (root / "openshape_lvis.json").write_text(json.dumps(split))
    data = load_eval_set(f"objaverse_lvis:{root / 'openshape_lvis.json'}")
    assert data.class_names == ["apple", "zebra"] and data.labels.tolist() == [1, 0, 1]
    assert data.sampling == "random" and data.prompts == "objaverse_lvis_64"
    assert len(data.clouds()[0]) == 8192
    (root / "lvis.json").write_text(json.dumps({f"u{k}": f"objs/u{k}.npy" for k in range(3)}))
    (root / "objaverse_lvis_metadata.json").write_text(json.dumps({
        "value_to_key_mapping": {"u0": "zebra", "u1": "apple", "u2": "zebra"},
        "key_to_id": {"aardvark": 0, "apple": 1, "zebra": 2}, "all_keys": ["aardvark", "apple", "zebra"]}))
    ulip = load_eval_set(f"objaverse_lvis:{root}")
    assert ulip.class_names == ["aardvark", "apple", "zebra"] and ulip.labels.tolist() == [2, 1, 2]


def test_mined_shard_folders(tmp_path):
    samples = [ShardSample(key=f"k{i}", points=cloud(5 + i, i), label=label, meta={"distance": 12.5 * (i + 1)})
               for i, label in enumerate(["car", "void", "traffic_cone", "", "pedestrian"])]
    write_shard(tmp_path / "val-000000.h5", samples, domain="real", frame="global axes, centred")
    data = load_eval_set(f"nuscenes:{tmp_path}")
    assert data.prompts == "nuscenes" and len(data) == 3
    assert data.skipped == {"label 'void'": 1, "unlabelled": 1}
    assert [data.class_names[k] for k in data.labels] == ["car", "traffic_cone", "pedestrian"]
    assert data.distance.tolist() == [12.5, 37.5, 62.5] and data.info["frame"] == ["global axes, centred"]
    assert load_eval_set(f"truckscenes:{tmp_path}").prompts == "truckscenes"


def test_npz_object_sets_and_specs(tmp_path):
    path = tiny_object_set(tmp_path / "objects.npz", per_class=2)
    data = load_eval_set(str(path))
    assert data.name == "npz:objects.npz" and len(data) == 6 and np.isnan(data.distance).all()
    assert parse_data_spec("modelnet40:/x") == ("modelnet40", tmp_path.__class__("/x"))
    with pytest.raises(ConfigError, match="FORMAT:PATH"):
        parse_data_spec("sonn:/x")
    with pytest.raises(PointFileError, match="no such file"):
        load_eval_set(f"scanobjectnn:{tmp_path / 'missing.h5'}")


def test_mmdet3d_sweep_crops(shared_data):
    pkl = shared_data / "mmdet3d/demo/data/nuscenes/n015-2018-07-24-11-22-45+0800.pkl"
    if not pkl.is_file():
        pytest.skip("real nuScenes sweep not available")
    data = load_eval_set(f"mmdet3d:{pkl}")
    assert len(data) + sum(data.skipped.values()) == 69
    assert data.skipped == {"label 'ignore'": 1, "no points": 3} and data.prompts == "nuscenes"
    assert data.point_counts.min() >= 1 and (data.distance > 0).all() and (data.distance < 100).all()
    names = [data.class_names[k] for k in data.labels]
    assert names.count("pedestrian") == 27 and names.count("car") == 8 and names.count("barrier") == 22
