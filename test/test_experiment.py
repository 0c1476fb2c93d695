"""The mixing ablation (blendclip-experiment): a tiny real run, resume, JSON -> table and plots.

The command runs in a subprocess exactly as a user runs it: it builds real simulated object
sets (HDL-32E and a 128-beam sensor), trains two arms through ``trainer.train`` in two spawned
worker processes, evaluates every run on three test domains, and writes ``results.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from blendclip_sim.object_sets import build_object_sets, load_object_set
from blendclip_train.experiment import DOMAINS, ExperimentConfig, curriculum_arm, plan_runs
from blendclip_train.experiment_report import BEGIN, END, replace_block

TINY = ["--arms", "synthetic_only", "curriculum", "--seeds", "0", "--sweep", "--per-class", "4",
        "--cad-points", "64", "--views", "1", "--epochs", "2", "--iterations-per-epoch", "2", "--batch-size", "8"]


def experiment(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blendclip_train.cli.experiment", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    result = experiment("run", "--out", str(out), *TINY)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_tiny_run_writes_every_run_and_domain(tiny):
    out, stdout = tiny
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["planned"] == ["synthetic_only_seed0", "curriculum_r0.3_seed0"]
    assert results["budget"]["iterations"] == 4
    for run in results["runs"].values():
        assert run["iterations"] == 4 and (out / run["checkpoint"]).is_file()
        assert set(run["eval"]) == set(DOMAINS)
        for domain, (folder, file) in DOMAINS.items():
            metrics = run["eval"][domain]
            assert metrics["count"] == len(load_object_set(out / "data" / folder / file))
            assert sum(b["count"] for b in metrics["breakdown"]["points"]) == metrics["count"]
            assert sum(row["count"] for row in metrics["per_class"].values()) == metrics["count"]
    # the curriculum arm saw real samples only from epoch 1 on; with 2 epochs its ramp is still 0
    assert results["runs"]["curriculum_r0.3_seed0"]["real_pool"] is True
    assert results["runs"]["synthetic_only_seed0"]["real_pool"] is False
    summary = results["arms"]["synthetic_only"]["domains"]["lidar"]["top1"]
    assert summary["n"] == 1 and summary["std"] is None
    assert summary["mean"] == results["runs"]["synthetic_only_seed0"]["eval"]["lidar"]["top1"]
    # the second sensor scans the same held-out instances with a different beam pattern and height
    sim = load_object_set(out / "data" / "sim" / "lidar_test.npz")
    other = load_object_set(out / "data" / "sensor2" / "lidar_test.npz")
    assert set(other.instance_ids) <= set(load_object_set(out / "data" / "sim" / "cad_test.npz").instance_ids)
    assert np.median(other.num_points) != np.median(sim.num_points)
    assert len(load_object_set(out / "data" / "sensor2" / "lidar_train.npz")) == 0
    assert "[2/2]" in stdout and len(results["sessions"]) == 1


def test_second_invocation_skips_finished_runs_reuses_trainings_and_redoes_interrupted_ones(tiny):
    out, _ = tiny
    first = (out / "runs" / "synthetic_only_seed0" / "result.json").read_text()
    again = experiment("run", "--out", str(out), *TINY)
    assert again.returncode == 0, again.stderr
    assert "skip synthetic_only_seed0 (finished)" in again.stdout
    assert "skip curriculum_r0.3_seed0 (finished)" in again.stdout and "0 to do" in again.stdout
    assert (out / "runs" / "synthetic_only_seed0" / "result.json").read_text() == first
    # evaluation lost, training finished: the checkpoint is reused (its metadata says it is complete)
    curriculum = out / "runs" / "curriculum_r0.3_seed0"
    (curriculum / "result.json").unlink()
    trained_at = (curriculum / "train" / "last.safetensors").stat().st_mtime_ns
    # interrupted: no finished checkpoint, so the run trains again (resuming from its newest training state)
    (out / "runs" / "synthetic_only_seed0" / "result.json").unlink()
    (out / "runs" / "synthetic_only_seed0" / "train" / "last.safetensors").unlink()
    third = experiment("run", "--out", str(out), *TINY)
    assert third.returncode == 0, third.stderr
    assert "0 finished, 2 to do" in third.stdout and "[2/2]" in third.stdout
    assert (curriculum / "train" / "last.safetensors").stat().st_mtime_ns == trained_at
    assert (out / "runs" / "synthetic_only_seed0" / "train" / "last.safetensors").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and len(results["sessions"]) == 3
    assert results["runs"]["synthetic_only_seed0"]["iterations"] == 4


def test_report_turns_the_json_into_a_table_and_plots(tiny, tmp_path):
    out, _ = tiny
    doc = tmp_path / "docs" / "ablation.md"
    doc.parent.mkdir()
    doc.write_text(f"# Ablation\n\nprose before\n\n{BEGIN}\nold\n{END}\n\nprose after\n")
    result = experiment("report", "--results", str(out / "results.json"), "--markdown", str(doc),
                        "--images", str(tmp_path / "docs" / "images"))
    assert result.returncode == 0, result.stderr
    text = doc.read_text()
    assert text.startswith("# Ablation\n\nprose before") and text.rstrip().endswith("prose after")
    assert "old" not in text and text.count(BEGIN) == 1
    results = json.loads((out / "results.json").read_text())
    top1 = results["arms"]["synthetic_only"]["domains"]["cad"]["top1"]["mean"]
    row = next(line for line in text.splitlines() if line.startswith("| synthetic (CAD) only | 1 |"))
    assert f"| {100 * top1:.1f} |" in row
    for name in ("ablation_arms.png", "ablation_points.png"):
        assert (tmp_path / "docs" / "images" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](images/{name})" in text
    assert "ablation_sweep" not in text  # no sweep in the tiny run


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    for args in (["run", "--out", str(tmp_path), "--sweep", "1.5"], ["run", "--out", str(tmp_path), "--arms",
                                                                         "--sweep"],
                 ["report", "--results", str(tmp_path / "missing.json"), "--markdown", "x.md", "--images", "i"]):
        result = experiment(*args)
        assert result.returncode == 2 and result.stderr.startswith("blendclip-experiment: error: ")
        assert result.stderr.count("\n") == 1


def test_plan_runs_orders_seeds_first_and_shares_the_default_curriculum_run(tmp_path):
    runs = [r.key for r in plan_runs(ExperimentConfig(out_dir=tmp_path))]
    assert len(runs) == 15 and len(set(runs)) == 15
    assert runs[:4] == ["synthetic_only_seed0", "real_only_seed0", "constant_1_64_seed0", "curriculum_r0.3_seed0"]
    assert runs[8:11] == ["curriculum_r0.08_seed0", "curriculum_r0.15_seed0", "curriculum_r0.5_seed0"]
    assert runs[-1] == "curriculum_r0.3_seed2"
    assert curriculum_arm(0.3).name == "curriculum_r0.3"


def test_replace_block_appends_then_replaces():
    once = replace_block("# T\n", "one")
    assert once == f"# T\n\n{BEGIN}\none\n{END}\n"
    assert replace_block(once, "two") == f"# T\n\n{BEGIN}\ntwo\n{END}\n"


def test_lidar_options_choose_sensor_height_and_splits():
    from blendclip_sim.lidar import vls128

    kwargs = dict(seed=2, n_per_class=5, cad_points=32, lidar_views=1, classes=("car", "pedestrian"))
    base = build_object_sets(**kwargs)
    test_only = build_object_sets(**kwargs, lidar_splits=("test",))
    assert len(test_only[("lidar", "train")]) == 0 and len(base[("lidar", "train")]) > 0
    np.testing.assert_array_equal(test_only[("lidar", "test")].points, base[("lidar", "test")].points)
    high = build_object_sets(**kwargs, lidar_splits=("test",), mount_height=3.5, pattern=vls128())
    assert not np.array_equal(high[("lidar", "test")].num_points, base[("lidar", "test")].num_points)
    assert set(high[("lidar", "test")].instance_ids) <= set(base[("cad", "test")].instance_ids)
    from blendclip_ros.errors import ConfigError

    with pytest.raises(ConfigError, match="mount_height"):
        build_object_sets(**kwargs, mount_height=0.0)


def test_model_card_numbers_come_from_its_json(tiny, tmp_path, shared_data):
    from test.conftest import NUSCENES_INFO

    if not NUSCENES_INFO.is_file():
        pytest.skip("nuScenes sample not found")
    out, _ = tiny
    card_json, card_md = tmp_path / "card.json", tmp_path / "card.md"
    card_md.write_text("# Card\n\nprose\n")
    result = subprocess.run([sys.executable, "-m", "blendclip_train.model_card", "--data-dir", str(out),
                             "--per-class", "4", "--cad-points", "64", "--views", "1", "--nuscenes-info",
                             str(NUSCENES_INFO), "--json", str(card_json), "--markdown", str(card_md)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    card = json.loads(card_json.read_text())
    assert card["checkpoint"]["iterations"] == 2650 and card["checkpoint"]["config"]["r_max"] == 0.3
    assert set(card["simulated"]) == set(DOMAINS)
    assert set(card["real_nuscenes"]) == {"nuscenes", "nuscenes_synonyms"}
    real = card["real_nuscenes"]["nuscenes"]
    # 69 boxes in the frame: one "ignore", the rest labelled; boxes without points count as misses
    assert real["all"]["count"] == 68 and real["all"]["empty"] == real["skipped"]["no points"]
    assert real["min_points_1"]["count"] == 68 - real["all"]["empty"]
    assert 0 < real["min_points_5"]["count"] < real["min_points_1"]["count"]
    assert sum(r["count"] for r in real["all"]["per_class"].values()) == 68
    hits = real["min_points_1"]["top1"] * real["min_points_1"]["count"]
    assert real["all"]["top1"] == pytest.approx(hits / 68)
    text = card_md.read_text()
    assert text.startswith("# Card\n\nprose\n")
    assert f"| {100 * real['min_points_5']['top1']:.1f} % |" in text
    rendered = tmp_path / "rendered.md"
    again = subprocess.run([sys.executable, "-m", "blendclip_train.model_card", "--render-only", "--json",
                            str(card_json), "--markdown", str(rendered)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert rendered.read_text().strip() == text[text.index("<!-- model-card:begin"):].strip()
