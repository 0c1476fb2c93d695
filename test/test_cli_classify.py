"""blendclip-classify on the real nuScenes sweep (subprocess) and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blendclip_ros.cli.classify import main
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.crop import points_in_boxes
from blendclip_ros.text.prompts import load_prompt_set

REPO = Path(__file__).resolve().parents[1]


def write_boxes(path: Path, rows: np.ndarray) -> list[str]:
    """BOXES.json from mmdet3d rows [x, y, z, l, w, h, yaw] (size = [l, w, h])."""
    ids = [f"box-{i:03d}" for i in range(len(rows))]
    path.write_text(json.dumps([
        {"id": box_id, "center": row[:3].tolist(), "size": row[3:6].tolist(), "yaw": float(row[6])}
        for box_id, row in zip(ids, rows)]))
    return ids


def run_cli(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "blendclip_ros.cli.classify", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def scene(nuscenes_frame, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    ids = write_boxes(folder / "boxes.json", nuscenes_frame.boxes)
    counts = [len(i) for i in points_in_boxes(nuscenes_frame.points, Boxes.from_mmdet3d(nuscenes_frame.boxes))]
    return folder, ids, counts


def test_classifies_all_69_boxes_in_input_order(scene, nuscenes_frame):
    folder, ids, counts = scene
    result = run_cli(["--points", str(nuscenes_frame.lidar_path), "--boxes", str(folder / "boxes.json")],
                     folder / "xdg")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 69 and [r["id"] for r in rows] == ids
    assert [r["num_points"] for r in rows] == counts
    labels = set(load_prompt_set("nuscenes").labels)
    for row, n in zip(rows, counts):
        assert set(row) == {"id", "num_points", "label", "score", "top_k"}
        if n == 0:
            assert row["label"] == "unknown" and row["top_k"] == []
        else:
            assert row["label"] in labels and len(row["top_k"]) == 3
            assert row["top_k"][0] == [row["label"], row["score"]] and 0 < row["score"] <= 1
            assert {name for name, _ in row["top_k"]} <= labels
    warning_lines = result.stderr.strip().splitlines()
    assert len(warning_lines) == 1 and "random-initialised" in warning_lines[0]
    assert list((folder / "xdg" / "blendclip_ros" / "text").glob("*.safetensors"))  # bank cached


# In-process run of main(): the untrained-model warning must be shown, not raised (pytest.ini: error).
@pytest.mark.filterwarnings("default::blendclip_ros.pipeline.UntrainedModelWarning")
def test_inline_labels_top_k_and_min_points(scene, nuscenes_frame, capsys, monkeypatch):
    folder, ids, counts = scene
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "xdg"))
    assert main(["--points", str(nuscenes_frame.lidar_path), "--point-dims", "5",
                 "--boxes", str(folder / "boxes.json"), "--labels", "car,truck,pedestrian",
                 "--top-k", "2", "--min-points", "5", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("blendclip-classify: warning: no checkpoint")
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["id"] for r in rows] == ids
    for row, n in zip(rows, counts):
        if n < 5:
            assert row["label"] == "unknown" and row["top_k"] == [] and row["score"] == 0.0
        else:
            assert row["label"] in {"car", "truck", "pedestrian"} and len(row["top_k"]) == 2


def test_bad_input_in_a_subprocess_is_one_line_and_exit_2(scene, tmp_path):
    folder, _, _ = scene
    result = run_cli(["--points", str(tmp_path / "absent.bin"), "--boxes", str(folder / "boxes.json")],
                     tmp_path / "xdg")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("blendclip-classify: error: ")
    assert "absent.bin" in result.stderr and "Traceback" not in result.stderr


def bad_cases(folder: Path, lidar: Path) -> dict[str, tuple[list[str], str]]:
    good = ["--points", str(lidar), "--boxes", str(folder / "boxes.json")]
    (folder / "broken.json").write_text("[{")
    (folder / "negative.json").write_text(json.dumps([{"center": [0, 0, 0], "size": [1, -1, 1], "yaw": 0}]))
    (folder / "bad_prompts.yaml").write_text("name: x\ntemplates: ['no slot']\nclasses: [car]\n")
    return {
        "missing points": (["--points", str(folder / "none.bin"), "--boxes", str(folder / "boxes.json")],
                           "none.bin"),
        "bad json": (["--points", str(lidar), "--boxes", str(folder / "broken.json")], "not valid JSON"),
        "negative size": (["--points", str(lidar), "--boxes", str(folder / "negative.json")], "'size'"),
        "point dims": ([*good, "--point-dims", "7"], "point_dims"),
        "top-k": ([*good, "--top-k", "0"], "--top-k"),
        "unknown option": ([*good, "--frobnicate"], "unrecognized arguments"),
        "missing option": (["--points", str(lidar)], "--boxes"),
        "both prompt sources": ([*good, "--labels", "car", "--prompts", "nuscenes"], "not allowed with"),
        "bad prompt set": ([*good, "--prompts", str(folder / "bad_prompts.yaml")], "templates[0]"),
        "absent prompt set": ([*good, "--prompts", str(folder / "nope.yaml")], "cannot read prompt set"),
        "duplicate label": ([*good, "--labels", "car,car"], "--labels: classes[1].name: duplicate class 'car'"),
        "absent checkpoint": ([*good, "--checkpoint", str(folder / "no.safetensors")], "not found"),
        "text weights without tower": ([*good, "--text-weights", "x.pt"], "--text-tower open_clip"),
        "pretrained tag offline": ([*good, "--text-tower", "open_clip", "--text-weights", "openai"],
                                   "allow_network"),
    }


@pytest.mark.parametrize("case", ["missing points", "bad json", "negative size", "point dims", "top-k",
                                  "unknown option", "missing option", "both prompt sources", "bad prompt set",
                                  "absent prompt set", "duplicate label", "absent checkpoint",
                                  "text weights without tower", "pretrained tag offline"])
def test_bad_input_gives_a_one_line_error(case, scene, nuscenes_frame, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder, _, _ = scene
    argv, fragment = bad_cases(folder, nuscenes_frame.lidar_path)[case]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("blendclip-classify: error: ") and fragment in captured.err
