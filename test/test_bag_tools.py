"""blendclip-bag-from-nuscenes: bags from the real sweep and from a nuScenes-format dataset (real devkit).

No rclpy needed. The nuScenes-format dataset is built in tmp_path from the real sweep's points
and boxes (tables as the devkit expects them), never committed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.spatial.transform import Rotation

from blendclip_ros.bags.reader import decode, read_bag
from blendclip_ros.data.nuscenes_frames import AnnotatedCloud, read_lidar_bin
from blendclip_ros.errors import ConfigError
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.ros.bag_from_nuscenes import main, repeated

from .conftest import NUSCENES_INFO

CLOUD, DETS = "/lidar/points", "/detections"
VENV_SHARE = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).resolve().parents[1] / ".venv")) / "share"


def _messages(bag: Path) -> dict[str, list]:
    out: dict[str, list] = {CLOUD: [], DETS: []}
    for message in read_bag(bag):
        out.setdefault(message.topic, []).append((message.log_time_ns, decode(message)))
    return out


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def _cloud_points(msg, width: int) -> np.ndarray:
    assert [f.name for f in msg.fields][:width] == ["x", "y", "z", "intensity", "ring", "time"][:width]
    assert msg.point_step == 4 * width and msg.height == 1
    return np.frombuffer(bytes(msg.data), dtype="<f4").reshape(msg.width, width)


def _box_arrays(msg) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str], list[float]]:
    dets = msg.detections
    centers = np.array([[d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.position.z] for d in dets])
    sizes = np.array([[d.bbox.size.x, d.bbox.size.y, d.bbox.size.z] for d in dets])
    o = [d.bbox.center.orientation for d in dets]
    quats = np.array([[q.x, q.y, q.z, q.w] for q in o])
    return (centers, sizes, quats, [d.id for d in dets], [d.results[0].hypothesis.class_id for d in dets],
            [d.results[0].hypothesis.score for d in dets])


# ----------------------------------------------------------------------------- mmdet3d source


@pytest.fixture(scope="module")
def sweep_bag(tmp_path_factory, nuscenes_frame) -> Path:
    bag = tmp_path_factory.mktemp("bags") / "sweep"
    assert main([str(bag), "--mmdet3d-info", str(NUSCENES_INFO), "--repeat", "5", "--period", "0.1", "--quiet"]) == 0
    return bag


def test_mmdet3d_bag_holds_the_real_sweep_five_times(sweep_bag, nuscenes_frame):
    msgs = _messages(sweep_bag)
    assert len(msgs[CLOUD]) == len(msgs[DETS]) == 5
    t0 = nuscenes_frame.timestamp_us * 1000
    expected_stamps = [t0 + k * 100_000_000 for k in range(5)]
    boxes = Boxes.from_mmdet3d(nuscenes_frame.boxes)
    for (cloud_log, cloud), (det_log, dets), stamp in zip(msgs[CLOUD], msgs[DETS], expected_stamps):
        assert cloud_log == det_log == _stamp_ns(cloud) == _stamp_ns(dets) == stamp
        assert cloud.header.frame_id == dets.header.frame_id == "lidar_top"
        np.testing.assert_array_equal(_cloud_points(cloud, 5), nuscenes_frame.points)
        centers, sizes, quats, ids, labels, scores = _box_arrays(dets)
        np.testing.assert_array_equal(centers, boxes.centers)
        np.testing.assert_array_equal(sizes, nuscenes_frame.boxes[:, 3:6])  # [l, w, h]
        np.testing.assert_allclose(quats, boxes.quaternions, atol=1e-15)
        np.testing.assert_allclose(Boxes(centers, sizes, quats).yaws, nuscenes_frame.boxes[:, 6], atol=1e-12)
        assert ids == [f"ca9a282c9e77460f8360f564131a8af5_{i}" for i in range(69)]
        assert labels == nuscenes_frame.labels and scores == [1.0] * 69


def test_metadata_has_what_ros2_bag_play_reads(sweep_bag):
    meta = yaml.safe_load((sweep_bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap" and meta["message_count"] == 10
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert set(topics) == {CLOUD, DETS}
    for name, msgtype in ((CLOUD, "sensor_msgs/msg/PointCloud2"), (DETS, "vision_msgs/msg/Detection3DArray")):
        info = topics[name]
        assert info["message_count"] == 5
        assert info["topic_metadata"]["type"] == msgtype
        assert info["topic_metadata"]["serialization_format"] == "cdr"
        assert info["topic_metadata"]["offered_qos_profiles"] == []  # a list in v9; empty = player default
        # The hash rosidl generated for the installed interface package (share/<pkg>/msg/<T>.json).
        description = VENV_SHARE / msgtype.replace("/msg/", "/msg/", 1).split("/")[0] / "msg" / (
            msgtype.rsplit("/", 1)[1] + ".json")
        if not description.is_file():
            pytest.skip(f"no rosidl type description at {description}")
        hashes = {h["type_name"]: h["hash_string"] for h in json.loads(description.read_text())["type_hashes"]}
        assert info["topic_metadata"]["type_description_hash"] == hashes[msgtype]
    assert meta["relative_file_paths"] == ["sweep.mcap"]


def test_mcap_decodes_with_mcap_ros2_decoder(sweep_bag, nuscenes_frame):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with (sweep_bag / "sweep.mcap").open("rb") as f:
        reader = make_reader(f)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        assert {s.name: s.encoding for s in summary.schemas.values()} == {
            "sensor_msgs/msg/PointCloud2": "ros2msg", "vision_msgs/msg/Detection3DArray": "ros2msg"}
        assert all(c.message_encoding == "cdr" and "offered_qos_profiles" in c.metadata
                   for c in summary.channels.values())
        assert "rosbag2" in {m.name for m in reader.iter_metadata()}
    with (sweep_bag / "sweep.mcap").open("rb") as f:
        decoded = [(channel.topic, msg) for _, channel, _, msg in
                   make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages()]
    assert [topic for topic, _ in decoded] == [CLOUD, DETS] * 5
    cloud, dets = decoded[0][1], decoded[1][1]
    np.testing.assert_array_equal(np.frombuffer(bytes(cloud.data), "<f4").reshape(-1, 5), nuscenes_frame.points)
    assert len(dets.detections) == 69 and dets.detections[5].id == "ca9a282c9e77460f8360f564131a8af5_5"
    assert dets.detections[5].results[0].hypothesis.class_id == nuscenes_frame.labels[5]


def test_sqlite3_storage_holds_the_same_messages(tmp_path, sweep_bag):
    bag = tmp_path / "sqlite"
    assert main([str(bag), "--mmdet3d-info", str(NUSCENES_INFO), "--repeat", "2", "--storage", "sqlite3",
                 "--frame-id", "velodyne", "--cloud-topic", "/points", "--detections-topic", "/boxes",
                 "--quiet"]) == 0
    assert (bag / "sqlite.db3").is_file()
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "sqlite3" and meta["version"] == 9
    got = [(m.topic, m.log_time_ns, decode(m)) for m in read_bag(bag)]
    want = [(m.topic, m.log_time_ns, decode(m)) for m in read_bag(sweep_bag)][:4]
    assert [g[0] for g in got] == ["/points", "/boxes", "/points", "/boxes"]
    assert [g[1] for g in got] == [w[1] for w in want]
    assert {g[2].header.frame_id for g in got} == {"velodyne"}
    assert bytes(got[0][2].data) == bytes(want[0][2].data)
    assert [d.id for d in got[1][2].detections] == [d.id for d in want[1][2].detections]


@settings(max_examples=50, deadline=None)
@given(stamps=st.lists(st.integers(0, 10**12), min_size=1, max_size=6, unique=True).map(sorted),
       repeat=st.integers(1, 5), period=st.floats(1e-3, 10.0))
def test_repeat_keeps_stamps_increasing_and_passes_spaced(stamps, repeat, period):
    frames = [AnnotatedCloud(s, np.zeros((0, 5), np.float32), ("x",) * 5, Boxes.empty(), [], []) for s in stamps]
    out = [f.stamp_ns for f in repeated(lambda: iter(frames), repeat, period)]
    assert len(out) == repeat * len(stamps)
    assert all(b > a for a, b in zip(out, out[1:]))
    per_pass = np.array(out).reshape(repeat, len(stamps))
    np.testing.assert_array_equal(per_pass - per_pass[:, :1], np.tile(per_pass[0] - stamps[0], (repeat, 1)))
    if repeat > 1:
        assert (per_pass[1:, 0] - per_pass[:-1, -1] == round(period * 1e9)).all()


# ----------------------------------------------------------------------------- nuScenes source

CATEGORIES = {"car": "vehicle.car", "pedestrian": "human.pedestrian.adult", "barrier": "movable_object.barrier",
              "traffic_cone": "movable_object.trafficcone", "truck": "vehicle.truck", "bicycle": "vehicle.bicycle",
              "bus": "vehicle.bus.rigid", "construction_vehicle": "vehicle.construction", "ignore": "animal"}
LIDAR_CALIB = {"translation": [0.985793, 0.0, 1.84019],
               "rotation": [0.706749235646644, -0.0153009937885, 0.0173974518126, -0.707084666905]}


def _wxyz(rotation: Rotation) -> list[float]:
    x, y, z, w = rotation.as_quat()
    return [float(w), float(x), float(y), float(z)]


def _transform(record: dict) -> tuple[Rotation, np.ndarray]:
    w, x, y, z = record["rotation"]
    return Rotation.from_quat([x, y, z, w]), np.asarray(record["translation"], dtype=np.float64)


def write_nuscenes_dataset(root: Path, points: np.ndarray, boxes_lidar: np.ndarray, labels: list[str]) -> dict:
    """A small nuScenes-format dataset (v1.0-mini tables) with real points and boxes.

    scene-0001: keyframe A (t=0), a sweep (t=50 ms), keyframe B (t=100 ms); scene-0002: keyframe C.
    Every LiDAR file is a different slice of the real sweep; the annotations are the real boxes
    (given in the LiDAR frame) moved to the global frame through each keyframe's poses.
    """
    tables = {name: [] for name in ("category", "attribute", "visibility", "instance", "sensor",
                                    "calibrated_sensor", "ego_pose", "log", "scene", "sample", "sample_data",
                                    "sample_annotation", "map")}
    (root / "maps").mkdir(parents=True)
    Image.new("L", (4, 4), 255).save(root / "maps" / "mask.png")
    (root / "samples" / "LIDAR_TOP").mkdir(parents=True)
    (root / "sweeps" / "LIDAR_TOP").mkdir(parents=True)
    names = sorted(set(labels))
    tables["category"] = [{"token": f"cat-{n}", "name": n, "description": n} for n in names]
    tables["visibility"] = [{"token": "4", "level": "v80-100", "description": "visible"}]
    tables["sensor"] = [{"token": "sensor-lidar", "channel": "LIDAR_TOP", "modality": "lidar"}]
    tables["calibrated_sensor"] = [{"token": "calib-lidar", "sensor_token": "sensor-lidar",
                                    "camera_intrinsic": [], **LIDAR_CALIB}]
    tables["log"] = [{"token": "log-1", "logfile": "n015-test", "vehicle": "n015", "date_captured": "2018-07-24",
                      "location": "singapore-onenorth"}]
    tables["map"] = [{"token": "map-1", "log_tokens": ["log-1"], "category": "semantic_prior",
                      "filename": "maps/mask.png"}]
    t0 = 1532402927647951
    lidar = [  # token, scene, keyframe?, time offset (us), ego translation, ego yaw (rad)
        ("sd-a", "scene-1", True, 0, [600.0, 1600.0, 0.1], 0.3),
        ("sd-s", "scene-1", False, 50_000, [600.4, 1600.3, 0.1], 0.32),
        ("sd-b", "scene-1", True, 100_000, [600.8, 1600.6, 0.12], 0.35),
        ("sd-c", "scene-2", True, 9_000_000, [700.0, 1500.0, 0.0], -1.2),
    ]
    order = {"scene-1": ["sd-a", "sd-s", "sd-b"], "scene-2": ["sd-c"]}
    files, sample_of = {}, {}
    for i, (token, _scene, key, dt, xyz, yaw) in enumerate(lidar):
        folder = "samples" if key else "sweeps"
        files[token] = f"{folder}/LIDAR_TOP/n015-test__LIDAR_TOP__{t0 + dt}.pcd.bin"
        points[i::4].tofile(root / files[token])
        rotation = Rotation.from_euler("xyz", [0.01 * i, -0.005, yaw])
        tables["ego_pose"].append({"token": f"ego-{token}", "timestamp": t0 + dt, "translation": xyz,
                                   "rotation": _wxyz(rotation)})
        if key:
            sample_of[token] = f"sample-{token[-1]}"
    keyframes = {scene: [t for t in tokens if t in sample_of] for scene, tokens in order.items()}
    for scene, tokens in order.items():
        for j, token in enumerate(tokens):
            row = next(r for r in lidar if r[0] == token)
            sample = sample_of.get(token) or sample_of[keyframes[scene][-1]]  # a sweep belongs to the next sample
            tables["sample_data"].append({
                "token": token, "sample_token": sample, "ego_pose_token": f"ego-{token}",
                "calibrated_sensor_token": "calib-lidar", "timestamp": t0 + row[3], "fileformat": "pcd",
                "is_key_frame": row[2], "height": 0, "width": 0, "filename": files[token],
                "prev": tokens[j - 1] if j else "", "next": tokens[j + 1] if j + 1 < len(tokens) else ""})
        samples = [sample_of[t] for t in keyframes[scene]]
        for j, token in enumerate(keyframes[scene]):
            tables["sample"].append({"token": samples[j], "timestamp": t0 + next(r[3] for r in lidar if r[0] == token),
                                     "scene_token": scene, "prev": samples[j - 1] if j else "",
                                     "next": samples[j + 1] if j + 1 < len(samples) else ""})
        tables["scene"].append({"token": scene, "log_token": "log-1", "nbr_samples": len(samples),
                                "first_sample_token": samples[0], "last_sample_token": samples[-1],
                                "name": scene.replace("scene-", "scene-000"), "description": "test"})
    sensor_rot, sensor_xyz = _transform({**LIDAR_CALIB})
    lidar_boxes = Boxes.from_mmdet3d(boxes_lidar)
    for token in sample_of:
        ego_rot, ego_xyz = _transform(tables["ego_pose"][[r[0] for r in lidar].index(token)])
        global_rot = ego_rot * sensor_rot
        centers = global_rot.apply(lidar_boxes.centers.copy()) + ego_rot.apply(sensor_xyz) + ego_xyz
        rotations = global_rot * Rotation.from_quat(lidar_boxes.quaternions.copy())
        for i in range(len(lidar_boxes)):
            length, w, h = boxes_lidar[i, 3:6]
            tables["sample_annotation"].append({
                "token": f"ann-{token}-{i}", "sample_token": sample_of[token], "instance_token": f"inst-{i}",
                "visibility_token": "4", "attribute_tokens": [], "translation": centers[i].tolist(),
                "size": [w, length, h], "rotation": _wxyz(rotations[i]), "prev": "", "next": "",
                "num_lidar_pts": 1, "num_radar_pts": 0})
    tables["instance"] = [{"token": f"inst-{i}", "category_token": f"cat-{labels[i]}", "nbr_annotations": 3,
                           "first_annotation_token": f"ann-sd-a-{i}", "last_annotation_token": f"ann-sd-c-{i}"}
                          for i in range(len(lidar_boxes))]
    (root / "v1.0-mini").mkdir()
    for name, rows in tables.items():
        (root / "v1.0-mini" / f"{name}.json").write_text(json.dumps(rows))
    return {"files": files, "t0_ns": t0 * 1000, "offsets_us": {r[0]: r[3] for r in lidar}}


@pytest.fixture(scope="module")
def nuscenes_root(tmp_path_factory, nuscenes_frame):
    pytest.importorskip("nuscenes")
    root = tmp_path_factory.mktemp("nuscenes")
    labels = [CATEGORIES[n] for n in nuscenes_frame.labels]
    info = write_nuscenes_dataset(root, nuscenes_frame.points, nuscenes_frame.boxes, labels)
    return root, info, labels


@pytest.fixture(scope="module")
def nusc(nuscenes_root):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version="v1.0-mini", dataroot=str(nuscenes_root[0]), verbose=False)


def test_devkit_loads_the_dataset_and_recovers_the_real_boxes(nusc, nuscenes_frame):
    assert [s["name"] for s in nusc.scene] == ["scene-0001", "scene-0002"]
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    _, boxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
    assert len(boxes) == 69
    np.testing.assert_allclose([b.center for b in boxes], nuscenes_frame.boxes[:, :3], atol=1e-9)
    np.testing.assert_allclose([b.orientation.yaw_pitch_roll[0] for b in boxes], nuscenes_frame.boxes[:, 6],
                               atol=1e-9)


def test_nuscenes_bag_equals_devkit_boxes_and_files(tmp_path, nuscenes_root, nusc):
    root, info, labels = nuscenes_root
    bag = tmp_path / "nusc"
    assert main([str(bag), "--dataroot", str(root), "--version", "v1.0-mini", "--quiet"]) == 0
    msgs = _messages(bag)
    keyframes = [s["data"]["LIDAR_TOP"] for s in sorted(nusc.sample, key=lambda s: s["timestamp"])]
    assert len(msgs[CLOUD]) == len(msgs[DETS]) == len(keyframes) == 3
    for (_, cloud), (_, dets), token in zip(msgs[CLOUD], msgs[DETS], keyframes):
        stamp = info["t0_ns"] + 1000 * info["offsets_us"][token]
        assert _stamp_ns(cloud) == _stamp_ns(dets) == stamp
        np.testing.assert_array_equal(_cloud_points(cloud, 5), read_lidar_bin(root / info["files"][token]))
        _, boxes, _ = nusc.get_sample_data(token)
        centers, sizes, quats, ids, got_labels, scores = _box_arrays(dets)
        np.testing.assert_array_equal(centers, [b.center for b in boxes])
        np.testing.assert_array_equal(sizes, [[b.wlh[1], b.wlh[0], b.wlh[2]] for b in boxes])
        # Boxes stores unit quaternions: renormalising may move the last bit
        np.testing.assert_allclose(quats, [[*b.orientation.vector, b.orientation.scalar] for b in boxes],
                                   rtol=0, atol=1e-15)
        assert ids == [nusc.get("sample_annotation", b.token)["instance_token"] for b in boxes]
        assert got_labels == [b.name for b in boxes] and set(scores) == {1.0}
    assert ids == [f"inst-{i}" for i in range(69)] and got_labels == labels


def test_scene_selection_and_multisweep_match_the_devkit(tmp_path, nuscenes_root, nusc):
    from nuscenes.utils.data_classes import LidarPointCloud

    root, info, _ = nuscenes_root
    bag = tmp_path / "sweeps"
    assert main([str(bag), "--dataroot", str(root), "--scene", "scene-0001", "--sweeps", "3", "--quiet"]) == 0
    msgs = _messages(bag)
    assert len(msgs[CLOUD]) == 2  # the two keyframes of scene-0001
    for (_, cloud), sample in zip(msgs[CLOUD], [s for s in nusc.sample if s["scene_token"] == "scene-1"]):
        ours = _cloud_points(cloud, 6)
        reference, times = LidarPointCloud.from_file_multisweep(nusc, sample, "LIDAR_TOP", "LIDAR_TOP", nsweeps=3)
        np.testing.assert_allclose(ours[:, :4], reference.points.T, rtol=0, atol=2e-5)
        # the devkit subtracts seconds since 1970 in float64 (error ~2e-7 s); ours subtracts integer us
        np.testing.assert_allclose(ours[:, 5], times[0], rtol=0, atol=5e-7)
        # ring survives (the devkit drops it): the files' rows, newest sweep first, close points removed
        chain = {"sd-a": ["sd-a"], "sd-b": ["sd-b", "sd-s", "sd-a"]}[sample["data"]["LIDAR_TOP"]]
        raw = [read_lidar_bin(root / info["files"][t]) for t in chain]
        raw = np.concatenate([r[~((np.abs(r[:, 0]) < 1) & (np.abs(r[:, 1]) < 1))] for r in raw])
        np.testing.assert_array_equal(ours[:, 3:5], raw[:, 3:5])
    lags = np.unique(_cloud_points(msgs[CLOUD][1][1], 6)[:, 5])
    np.testing.assert_array_equal(lags, np.array([0.0, 0.05, 0.1], dtype=np.float32))


# ----------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize("extra, message", [
    ([], "exactly one of --dataroot and --mmdet3d-info"),
    (["--mmdet3d-info", "x.pkl", "--dataroot", "d"], "exactly one"),
    (["--mmdet3d-info", str(NUSCENES_INFO), "--sweeps", "3"], "--sweeps/--scene"),
    (["--mmdet3d-info", "missing.pkl"], "missing.pkl: not an mmdet3d v1.1 info file"),
    (["--dataroot", "/nonexistent"], "dataroot: no table folder 'v1.0-mini'"),
    (["--mmdet3d-info", str(NUSCENES_INFO), "--repeat", "0"], "repeat: must be at least 1"),
    (["--mmdet3d-info", str(NUSCENES_INFO), "--cloud-topic", "points"], "--cloud-topic: topic must be absolute"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, extra, message):
    if str(NUSCENES_INFO) in extra and not NUSCENES_INFO.is_file():  # checked after the file is read
        pytest.skip(f"nuScenes sample not found at {NUSCENES_INFO}")
    assert main([str(tmp_path / "out"), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unknown_scene_and_existing_output_are_rejected(tmp_path, capsys, nuscenes_root):
    assert main([str(tmp_path / "a"), "--dataroot", str(nuscenes_root[0]), "--scene", "scene-9", "--quiet"]) == 2
    assert "scene: no scene named 'scene-9' (available: scene-0001, scene-0002)" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    assert main([str(tmp_path / "b"), "--mmdet3d-info", str(NUSCENES_INFO), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err and (tmp_path / "b").is_dir()
    (tmp_path / "broken" / "v1.0-mini").mkdir(parents=True)  # a table folder without tables
    assert main([str(tmp_path / "c"), "--dataroot", str(tmp_path / "broken"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is not a loadable nuScenes dataset (FileNotFoundError" in err and err.count("\n") == 1


def test_sweeps_below_one_is_a_config_error(nusc):
    from blendclip_ros.data.nuscenes_frames import nuscenes_frame

    with pytest.raises(ConfigError, match="sweeps: must be at least 1"):
        nuscenes_frame(nusc, nusc.sample[0]["token"], sweeps=0)
