"""Mining real triplets from simulated nuScenes-format datasets through the real nuscenes-devkit."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from blendclip_ros.errors import ConfigError
from blendclip_train.mining import (
    NUSCENES,
    CropRules,
    KeyframeMiner,
    MiningConfig,
    parse_slice,
    run_mining,
    scene_units,
)
from blendclip_train.mining.crops import crop_rects
from blendclip_train.mining.fusion import GlobalBoxes, Sweep, fuse_box_points, slerp
from blendclip_train.shards import ShardSet

pytest.importorskip("nuscenes")
VERSION = "v1.0-sim"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four short scenes (2 keyframes each, 2 sweeps between) and six 160x90 cameras."""
    from blendclip_sim.cameras import nuscenes_rig
    from blendclip_sim.nuscenes_writer import write_nuscenes
    from blendclip_sim.scene import generate_scene

    root = tmp_path_factory.mktemp("nus")
    write_nuscenes([generate_scene(seed, duration=1.0) for seed in (3, 4, 5, 6)], root, sweeps_per_keyframe=2,
                   cameras=nuscenes_rig(160, 90))
    return root, NUSCENES.open(root, VERSION)


def _mine(nusc, config=None):
    miner = KeyframeMiner(nusc, NUSCENES, config or MiningConfig())
    return [m for unit in scene_units(nusc, NUSCENES) for t in unit.sample_tokens for m in miner.mine(t)]


def _wanted(nusc, min_points=1):
    """Keyframe annotations of detection classes with at least ``min_points`` (devkit order)."""
    out = []
    for unit in scene_units(nusc, NUSCENES):
        for token in unit.sample_tokens:
            for a in nusc.get("sample", token)["anns"]:
                ann = nusc.get("sample_annotation", a)
                if NUSCENES.detection_class(ann["category_name"]) and ann["num_lidar_pts"] >= min_points:
                    out.append(ann)
    return out


# ----------------------------------------------------------------------------- geometry


def test_slerp_matches_pyquaternion():
    from pyquaternion import Quaternion

    rng = np.random.default_rng(0)
    q0, q1 = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    q1[:5] = q0[:5] + 1e-4  # nearly equal: pyquaternion's linear branch
    amount = rng.uniform(-0.5, 1.5, 50)  # clipped to [0, 1]
    ours = slerp(q0, q1, amount)
    for i in range(50):
        ref = Quaternion.slerp(Quaternion(q0[i]), Quaternion(q1[i]), amount[i]).q
        assert np.allclose(ours[i], ref, atol=1e-9) or np.allclose(ours[i], -ref, atol=1e-9)


def test_motion_compensation_moves_old_points_into_the_reference_box():
    """A box driving at 10 m/s and turning: every older sweep's points land back in the keyframe box."""
    rng = np.random.default_rng(1)
    size = np.array([4.0, 2.0, 1.5])
    t_ref, t_prev = 1_000_000, 500_000
    yaw_ref, yaw_prev = 0.3, 0.1
    v = np.array([10.0, 2.0, 0.0])

    def quat(yaw: float) -> np.ndarray:
        return np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)])

    centre = np.array([20.0, 5.0, 1.0])
    sweeps = []
    for k in range(5):
        dt = 0.05 * k
        f = dt / 0.5
        yaw = yaw_ref + (yaw_prev - yaw_ref) * f
        local = rng.uniform(-0.49, 0.49, (200, 3)) * size
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        sweeps.append(Sweep(local @ rot.T + centre - v * dt, t_ref - int(dt * 1e6)))
    boxes = GlobalBoxes(centre[None], size[None], quat(yaw_ref)[None], v[None], quat(yaw_prev)[None], v[None],
                        np.array([t_prev]))
    points, used = fuse_box_points(sweeps, boxes)
    assert used.tolist() == [5] and len(points[0]) == 1000  # nothing lost to the final crop
    static, _ = fuse_box_points(sweeps, boxes, motion_compensation=False)
    assert len(static[0]) == 200
    unknown = GlobalBoxes(centre[None], size[None], quat(yaw_ref)[None], np.full((1, 3), np.nan), quat(yaw_prev)[None],
                          v[None], np.array([t_prev]))
    points, used = fuse_box_points(sweeps, unknown)
    assert used.tolist() == [1] and len(points[0]) == 200  # no velocity: keyframe only


def test_crop_rules_agree_with_the_devkit_box_in_image(dataset):
    from nuscenes.utils.geometry_utils import BoxVisibility, box_in_image

    _, nusc = dataset
    checked = inside = 0
    for sample in nusc.sample:
        for channel in ("CAM_FRONT", "CAM_BACK", "CAM_FRONT_LEFT"):
            _, boxes, k = nusc.get_sample_data(sample["data"][channel], box_vis_level=BoxVisibility.NONE)
            sd = nusc.get("sample_data", sample["data"][channel])
            rects, keep = crop_rects(np.stack([b.corners().T for b in boxes]), k, (sd["width"], sd["height"]), 0)
            expected = [box_in_image(b, k, (sd["width"], sd["height"]), BoxVisibility.ALL) for b in boxes]
            assert keep.tolist() == expected
            checked += len(boxes)
            inside += sum(expected)
            big = crop_rects(np.stack([b.corners().T for b in boxes]), k, (sd["width"], sd["height"]), 30)[1]
            assert (big <= keep).all() and ((rects[big, 2:] - rects[big, :2]) >= 30).all()
    assert checked > 100 and inside > 5


# ----------------------------------------------------------------------------- points and metadata


def test_keyframe_only_counts_match_the_annotations(dataset):
    _, nusc = dataset
    mined = _mine(nusc, MiningConfig(sweeps=1))
    wanted = _wanted(nusc)
    assert [m.key for m in mined] == [a["token"] for a in wanted] and len(mined) > 60
    assert [m.meta["num_points"] for m in mined] == [a["num_lidar_pts"] for a in wanted]
    assert all(m.meta["sweeps"] == 1 for m in mined)
    m = mined[0]
    ann = nusc.get("sample_annotation", m.key)
    assert m.meta["instance_token"] == ann["instance_token"] == m.instance
    assert m.meta["sample_token"] == ann["sample_token"] and m.meta["visibility"] == ann["visibility_token"]
    assert m.meta["category"] == ann["category_name"] and m.label == NUSCENES.detection_class(ann["category_name"])


def test_sweeps_frames_and_min_points(dataset):
    _, nusc = dataset
    single = {m.key: m for m in _mine(nusc, MiningConfig(sweeps=1))}
    fused = _mine(nusc)  # default: 10 sweeps (here up to 4 exist), box frame
    assert sum(m.meta["num_points"] for m in fused) > sum(m.meta["num_points"] for m in single.values())
    assert max(m.meta["sweeps"] for m in fused) == 4  # keyframe, 2 sweeps, the previous keyframe
    for m in fused:
        half = np.array(m.meta["size_lwh"]) / 2
        assert (np.abs(m.points) <= half + 1e-3).all()
        assert m.meta["num_points"] >= single[m.key].meta["num_points"] if m.key in single else True
    centred = _mine(nusc, MiningConfig(frame="centred", min_points=20))
    assert centred and all(len(m.points) >= 20 for m in centred)
    assert len(centred) == sum(m.meta["num_points"] >= 20 for m in fused)
    for m in centred:
        np.testing.assert_allclose(m.points.mean(0), 0, atol=1e-3)


def test_eval_set_uses_the_devkit_filter(dataset):
    _, nusc = dataset
    kept = _mine(nusc, MiningConfig(eval_set=True, sweeps=1))
    ranges = NUSCENES.class_ranges()
    assert ranges["car"] == 50 and ranges["pedestrian"] == 40 and ranges["traffic cone"] == 30
    expected = []
    for a in _wanted(nusc, min_points=0):
        sample = nusc.get("sample", a["sample_token"])
        ego = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
        dist = np.linalg.norm(np.array(a["translation"][:2]) - ego["translation"][:2])
        if dist < ranges[NUSCENES.detection_class(a["category_name"])] and a["num_lidar_pts"] > 0:
            expected.append(a["token"])
    assert [m.key for m in kept] == expected and 0 < len(kept) < len(_wanted(nusc))
    assert all(m.meta["distance"] < ranges[m.label] for m in kept)


# ----------------------------------------------------------------------------- images


def test_image_crops_follow_the_rules_and_pair_by_instance(dataset, tmp_path):
    _, nusc = dataset
    rules = CropRules(min_size=12)
    config = MiningConfig(crops=rules, max_images=3)
    run_mining(nusc, NUSCENES, scene_units(nusc, NUSCENES), tmp_path, config, progress=False)
    data = ShardSet(tmp_path)
    with_images = [s for s in data if s.images]
    assert with_images, "no crop survived the rules"
    crops_of = {}
    for s in data:
        assert s.meta["own_crops"] == 0 or s.meta["visibility"] == "4"
        assert len(s.images) == len(s.meta["cameras"]) <= 3
        assert s.captions == [f"a point cloud of a {s.label}"] * max(1, len(s.images))
        for jpeg, camera in zip(s.images, s.meta["cameras"]):
            image = Image.open(io.BytesIO(jpeg))
            assert image.format == "JPEG" and min(image.size) >= 12 and camera.startswith("CAM_")
        crops_of.setdefault(s.meta["instance_token"], set()).update(s.images)
    # instance pairing: a triplet may carry crops from other keyframes of the same instance, never another's
    owners = {}
    for instance, crops in crops_of.items():
        for c in crops:
            assert owners.setdefault(c, instance) == instance
    keyframe = tmp_path / "keyframe"
    run_mining(nusc, NUSCENES, scene_units(nusc, NUSCENES), keyframe, MiningConfig(crops=rules, pairing="keyframe"),
               progress=False)
    for s in ShardSet(keyframe):
        assert set(s.meta["image_samples"]) <= {s.meta["sample_token"]} and len(s.images) == s.meta["own_crops"]


def test_sim_crops_show_their_object(dataset):
    """In the rendered camera, the crop of a fully visible box shows mainly that actor (calibration agrees)."""
    from blendclip_sim.cameras import nuscenes_rig, render_cameras
    from blendclip_sim.scene import generate_scene

    root, nusc = dataset
    scene = generate_scene(3, duration=1.0)
    rendered = render_cameras(scene, 0.0, nuscenes_rig(160, 90))
    actor_of = {a.token: j for j, a in enumerate(scene.actors)}
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    assert nusc.scene[0]["name"] == scene.name
    checked = 0
    for channel in rendered.images:
        _, boxes, k = nusc.get_sample_data(sample["data"][channel])
        sd = nusc.get("sample_data", sample["data"][channel])
        with Image.open(root / sd["filename"]) as picture:
            assert picture.size == (160, 90)
        if not boxes:
            continue
        rects, keep = crop_rects(np.stack([b.corners().T for b in boxes]), k, (160, 90), 10)
        for i in np.flatnonzero(keep):
            ann = nusc.get("sample_annotation", boxes[i].token)
            if ann["visibility_token"] != "4":
                continue
            x0, y0, x1, y1 = np.round(rects[i]).astype(int)
            patch = rendered.actor_ids[channel][y0:y1, x0:x1]
            actors = patch[patch >= 0]
            assert np.bincount(actors).argmax() == actor_of[ann["instance_token"]]  # the dominant actor
            assert (patch == actor_of[ann["instance_token"]]).mean() > 0.1
            checked += 1
    assert checked > 0


# ----------------------------------------------------------------------------- scale


def _contents(folder):
    return {s.key: (s.label, s.points.tobytes(), tuple(s.images), tuple(s.captions)) for s in ShardSet(folder)}


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    _, nusc = dataset
    out = tmp_path_factory.mktemp("full")
    summary = run_mining(nusc, NUSCENES, scene_units(nusc, NUSCENES), out, MiningConfig(crops=CropRules(min_size=12)),
                         progress=False)
    return out, summary


def test_slices_partition_the_dataset_and_reruns_skip(dataset, reference, tmp_path):
    _, nusc = dataset
    full, summary = reference
    units = scene_units(nusc, NUSCENES)
    assert summary["units"] == summary["mined_units"] == 4 and summary["triplets"] == len(ShardSet(full))
    from blendclip_train.datasets.benchmarks import load_eval_set

    evaluation = load_eval_set(f"nuscenes:{full}")  # blendclip-evaluate --data nuscenes:<folder> reads it as is
    assert len(evaluation) == summary["triplets"]
    from blendclip_train.data import StreamingTriplets
    from blendclip_train.shards import ShardSample, write_shard

    synthetic = write_shard(tmp_path / "cad" / "cad.h5", [ShardSample("cad-0", np.ones((5, 3), np.float32), "car",
                                                                      ["a car"])], domain="synthetic")
    streamed = StreamingTriplets([synthetic.parent], [full])  # blendclip-train --real <folder>
    assert streamed.num_real == summary["triplets"] and set(ShardSet(full).labels()) <= set(streamed.class_names)
    config = MiningConfig(crops=CropRules(min_size=12))
    for i in range(2):
        part = run_mining(nusc, NUSCENES, units, tmp_path, config, shard=(i, 2), workers=2, progress=False)
        assert part["units"] == 2
    assert _contents(tmp_path) == _contents(full)
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == sorted(p.name for p in full.glob("*.h5"))
    again = run_mining(nusc, NUSCENES, units, tmp_path, config, progress=False)
    assert again["skipped"] == 4 and again["mined_units"] == 0
    with pytest.raises(ConfigError, match="other settings"):
        run_mining(nusc, NUSCENES, units, tmp_path, MiningConfig(sweeps=2), progress=False)
    assert parse_slice("1/3") == (1, 3)
    for bad in ("3/3", "1", "-1/2"):
        with pytest.raises(ConfigError, match="shard"):
            parse_slice(bad)


def test_sigkill_at_a_random_moment_then_rerun_gives_every_triplet_once(dataset, reference, tmp_path):
    root, _ = dataset
    full, _ = reference
    out = tmp_path / "out"
    command = [sys.executable, "-m", "blendclip_train.cli.mine", "--dataroot", str(root), "--version", VERSION,
               "--out", str(out), "--images", "--min-crop", "12", "--workers", "2", "--no-progress"]
    seed = int(os.environ.get("MINING_KILL_SEED", random.randrange(1 << 30)))
    delay = random.Random(seed).uniform(1.0, 6.0)
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)  # the parent only: its workers must die with it
    process.wait(timeout=60)
    time.sleep(0.5)  # let the workers' death signals land
    done_before = len(list(out.glob("*.h5"))) if out.exists() else 0
    rerun = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == done_before, f"seed {seed}"
    assert _contents(out) == _contents(full), f"seed {seed}, killed after {delay:.2f} s"
    assert not list(out.glob("*.tmp")), f"seed {seed}"


def test_cli_errors_are_one_line(dataset, tmp_path, capsys):
    from blendclip_train.cli.mine import main

    root, _ = dataset
    base = ["--dataroot", str(root), "--version", VERSION, "--out", str(tmp_path / "o")]
    assert main(base + ["--shard", "2/2"]) == 2
    assert "shard" in capsys.readouterr().err
    assert main(base + ["--split", "val"]) == 2  # simulated scenes are in no devkit split
    assert "split" in capsys.readouterr().err
    assert main(["--dataroot", str(tmp_path), "--version", VERSION, "--out", str(tmp_path / "o")]) == 2
    assert "dataroot" in capsys.readouterr().err
    assert main(base + ["--eval", "--keep-void"]) == 2
    assert main(base + ["--caption-model", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(base + ["--scene", "sim-scene-0003", "--sweeps", "1", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["units"] == 1 and summary["triplets"] == len(ShardSet(tmp_path / "o")) > 0


# ----------------------------------------------------------------------------- the real nuScenes frame


def test_real_sweep_crops_show_real_objects(shared_data, tmp_path):
    from blendclip_train.cli.mine import main

    info = shared_data / "mmdet3d/demo/data/nuscenes/n015-2018-07-24-11-22-45+0800.pkl"
    if not info.exists():
        pytest.skip("real nuScenes sample frame not available")
    sheet = tmp_path / "sheet.png"
    assert main(["--dataset", "mmdet3d", "--dataroot", str(info), "--out", str(tmp_path / "real"), "--images",
                 "--contact-sheet", str(sheet)]) == 0
    data = ShardSet(tmp_path / "real")
    assert len(data) == 65  # 69 boxes: 1 ignore label, 3 with no point in the keyframe
    counts = np.array([s.meta["num_points"] for s in data])
    annotated = np.array([s.meta["num_lidar_pts"] for s in data])
    # the info file's boxes are rounded copies of the annotations: counts agree up to boundary points
    assert (counts == annotated).mean() > 0.8 and abs(counts.sum() - annotated.sum()) < 0.05 * annotated.sum()
    cropped = [s for s in data if s.images]
    assert 5 <= len(cropped) <= 30
    for s in cropped:
        assert s.meta["visible_fraction_est"] >= 0.8 and len(s.images) == len(s.meta["cameras"])
        for jpeg in s.images:
            assert min(Image.open(io.BytesIO(jpeg)).size) >= 50
    assert {"car", "pedestrian"} <= {s.label for s in cropped}
    with Image.open(sheet) as picture:
        assert picture.size[0] > 300
    evaluation = run_real_eval(info, tmp_path / "eval")
    assert all(s.meta["distance"] < NUSCENES.class_ranges()[s.label] for s in evaluation)
    assert 0 < len(evaluation) < len(data)


def run_real_eval(info, out):
    from blendclip_train.captioning import TemplateCaptioner
    from blendclip_train.mining.real_sweep import mine_info_file

    mine_info_file(info, out, MiningConfig(eval_set=True, sweeps=1), TemplateCaptioner())
    return list(ShardSet(out))
