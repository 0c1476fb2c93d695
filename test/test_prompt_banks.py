"""Prompt banks: blendclip-prompts encode/show, classification from a bank with no text tower,
refusal of a bank from another text space, and live prompt changes where a tower is configured."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import _build_text_tower
from safetensors.torch import save_file

from blendclip_ros.cli.classify import main as classify_main
from blendclip_ros.cli.prompts import main as prompts_main
from blendclip_ros.errors import ConfigError
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.model.checkpoint import load_checkpoint
from blendclip_ros.pipeline import ObjectClassifier
from blendclip_ros.text.bank import encode_prompt_set, load_bank
from blendclip_ros.text.prompts import load_prompt_set
from blendclip_ros.text.towers import OpenClipTextTower
from test.test_cli_classify import write_boxes
from test.test_families import ppat_layout, random_state


@pytest.fixture(scope="module")
def b32(tmp_path_factory):
    """An OpenShape ViT-B/32 demo file and a random stand-in for the CLIP ViT-B-32 text weights."""
    root = tmp_path_factory.mktemp("banks")
    torch.save(random_state(ppat_layout(512, 12, 1024, 128, "pc_encoder."), 5), root / "b32.pt")
    config = open_clip.get_model_config("ViT-B-32")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        tower = _build_text_tower(config["embed_dim"], config["text_cfg"])
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, root / "clip_b32_text.safetensors")
    return root


def test_encode_writes_a_normalised_bank_with_its_provenance(b32, capsys):
    out = b32 / "bank.safetensors"
    weights = b32 / "clip_b32_text.safetensors"
    assert prompts_main(["encode", "--tower", "openshape_ppat:vitb32", "--weights", str(weights),
                         "--prompts", "nuscenes", "--out", str(out)]) == 0
    bank = load_bank(out)
    nuscenes = load_prompt_set("nuscenes")
    assert list(bank.labels) == nuscenes.labels and bank.dim == 512
    assert bank.text_space == "open_clip:ViT-B-32:openai" and len(bank.digest) == 64
    torch.testing.assert_close(bank.embeddings.norm(dim=1), torch.ones(10))
    tower = OpenClipTextTower("ViT-B-32", weights=weights, pretrained="openai")
    torch.testing.assert_close(bank.embeddings, encode_prompt_set(tower, nuscenes), atol=1e-5, rtol=0)
    capsys.readouterr()
    assert prompts_main(["show", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["templates"] == ["point cloud of a {}."] and shown["shape"] == [10, 512]
    assert shown["tower"].startswith("open_clip:ViT-B-32:") and shown["weights_digest"] == bank.digest


def test_a_bank_needs_no_text_tower_and_another_text_space_is_refused(b32, nuscenes_frame, tmp_path, capsys):
    bank = b32 / "bank.safetensors"
    if not bank.exists():
        prompts_main(["encode", "--tower", "openshape_ppat:vitb32", "--weights",
                      str(b32 / "clip_b32_text.safetensors"), "--out", str(bank)])
    pipe = ObjectClassifier.from_config(b32 / "b32.pt", bank=bank, min_points=1, max_points=1024)
    assert pipe.tower is None and "prompt bank" in pipe.description
    assert pipe.convention.colour == "gray" and pipe.convention.up_axis == "z" and pipe.max_points == 1024
    lit = ObjectClassifier.from_config(b32 / "b32.pt", bank=bank, colour="intensity")
    assert lit.convention.colour == "intensity" and lit.max_points == 10000
    with pytest.raises(ConfigError, match="without a text tower"):
        pipe.set_prompts(load_prompt_set("truckscenes"))
    results = pipe.classify(nuscenes_frame.points, Boxes.from_mmdet3d(nuscenes_frame.boxes))
    assert len(results) == 69 and {r.prediction.label for r in results} <= set(load_prompt_set("nuscenes").labels) | {
        "unknown"}
    # CLI: the same through blendclip-classify --bank.
    write_boxes(tmp_path / "boxes.json", nuscenes_frame.boxes[:5])
    capsys.readouterr()
    code = classify_main(["--points", str(nuscenes_frame.lidar_path), "--boxes", str(tmp_path / "boxes.json"),
                          "--checkpoint", str(b32 / "b32.pt"), "--bank", str(bank), "--max-points", "1024"])
    assert code == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    # A bank from a random-init ViT-B-32 (its own text space) does not fit the OpenShape model.
    other = tmp_path / "other.safetensors"
    assert prompts_main(["encode", "--tower", "open_clip:ViT-B-32", "--out", str(other)]) == 0
    with pytest.raises(ConfigError, match="text space open_clip:ViT-B-32:random-init-seed-0.*aligned to "
                                          "open_clip:ViT-B-32:openai"):
        ObjectClassifier.from_config(b32 / "b32.pt", bank=other)
    capsys.readouterr()
    assert classify_main(["--points", str(nuscenes_frame.lidar_path), "--boxes", str(tmp_path / "boxes.json"),
                          "--checkpoint", str(b32 / "b32.pt"), "--bank", str(other)]) == 2
    assert "aligned to open_clip:ViT-B-32:openai" in capsys.readouterr().err


def test_live_prompt_changes_work_where_a_tower_is_configured(b32):
    weights = b32 / "clip_b32_text.safetensors"
    bank = b32 / "bank.safetensors"
    if not bank.exists():
        prompts_main(["encode", "--tower", "openshape_ppat:vitb32", "--weights", str(weights), "--out", str(bank)])
    pipe = ObjectClassifier.from_config(b32 / "b32.pt", bank=bank, text_weights=weights)
    assert pipe.tower is not None and pipe.tower.text_space == "open_clip:ViT-B-32:openai"
    assert not pipe.tower.is_loaded  # the bank needed no encoding
    pipe.set_prompts(load_prompt_set("truckscenes"))
    assert list(pipe.labels) == load_prompt_set("truckscenes").labels


def test_family_checkpoint_without_weights_or_bank_says_what_to_pass(b32):
    with pytest.raises(ConfigError, match=r"aligned to open_clip ViT-B-32 \(openai\); pass that tower's local "
                                          "weights file .* or a prompt bank"):
        ObjectClassifier.from_config(b32 / "b32.pt")


def test_bad_bank_files_and_arguments(b32, tmp_path, capsys):
    bank = b32 / "bank.safetensors"
    if not bank.exists():
        prompts_main(["encode", "--tower", "openshape_ppat:vitb32", "--weights",
                      str(b32 / "clip_b32_text.safetensors"), "--out", str(bank)])
    assert prompts_main(["show", str(b32 / "b32.pt")]) == 2
    assert "not a readable prompt-bank file" in capsys.readouterr().err
    assert prompts_main(["encode", "--tower", "bogus", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "--tower 'bogus'" in capsys.readouterr().err
    assert prompts_main(["encode", "--tower", "ulip2_pointbert:xyz", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "not an open_clip tower" in capsys.readouterr().err
    assert prompts_main(["encode", "--tower", "uni3d", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "local weights file" in capsys.readouterr().err
    loaded = load_checkpoint(b32 / "b32.pt")
    assert loaded.text_space == "open_clip:ViT-B-32:openai"
    assert np.isclose(float(load_bank(b32 / "bank.safetensors").embeddings.norm(dim=1).mean()), 1.0)
