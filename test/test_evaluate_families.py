"""blendclip-evaluate with a random-weight file of each public family and a prompt bank (no text tower)."""

from __future__ import annotations

import json

import pytest
import torch

from blendclip_ros.model.checkpoint import load_checkpoint
from blendclip_ros.text.bank import TextBank, save_bank
from blendclip_ros.text.prompts import load_prompt_set
from blendclip_train.cli.evaluate import main as evaluate_main
from test.test_families import files  # noqa: F401  (module fixture: one file per published layout)

SWEEP_INFO = "mmdet3d/demo/data/nuscenes/n015-2018-07-24-11-22-45+0800.pkl"


def bank_for(path, out, text_space: str | None = None):
    """A random, normalised nuScenes bank in the model's text space (encoding bigG/EVA text is too slow here)."""
    loaded = load_checkpoint(path)
    prompts = load_prompt_set("nuscenes")
    rows = torch.nn.functional.normalize(torch.randn(len(prompts.labels), loaded.model.config.embed_dim,
                                                     generator=torch.Generator().manual_seed(0)), dim=-1)
    space = loaded.text_space if text_space is None else text_space
    save_bank(out, TextBank(tuple(prompts.labels), rows, "test-bank", "0" * 64, space), prompts)
    return out


@pytest.mark.parametrize("name", ["ulip2", "openshape", "uni3d"])
def test_each_family_evaluates_from_a_bank_on_the_real_sweep(files, name, shared_data, tmp_path, capsys):  # noqa: F811
    bank = bank_for(files[name], tmp_path / "bank.safetensors")
    capsys.readouterr()
    code = evaluate_main(["--checkpoint", str(files[name]), "--data", f"mmdet3d:{shared_data / SWEEP_INFO}",
                          "--bank", str(bank), "--max-points", "256", "--json", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    # 69 boxes: one 'ignore' label and three without points are skipped
    assert report["count"] == 65 and report["prompts"] == "nuscenes"
    assert 0.0 <= report["top1"] <= report["top3"] <= report["top5"] <= 1.0


def test_a_bank_from_another_text_space_is_refused(files, shared_data, tmp_path, capsys):  # noqa: F811
    bank = bank_for(files["openshape"], tmp_path / "bank.safetensors", text_space="open_clip:ViT-B-32:openai")
    capsys.readouterr()
    code = evaluate_main(["--checkpoint", str(files["openshape"]), "--data", f"mmdet3d:{shared_data / SWEEP_INFO}",
                          "--bank", str(bank)])
    assert code == 2 and "aligned to" in capsys.readouterr().err
