"""A short real training run: the loss drops, checkpoints load everywhere, the CLIs work end to end."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from blendclip_ros.errors import ConfigError
from blendclip_ros.model.checkpoint import load_checkpoint, save_checkpoint
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel
from blendclip_ros.pipeline import ObjectClassifier
from blendclip_ros.text.towers import MiniLMTextTower
from blendclip_train.augment import AugmentConfig
from blendclip_train.evaluate import encode_dataset
from blendclip_train.trainer import TrainConfig, caption_embeddings, iterations_for, load_history, train
from blendclip_train.triplets import SYNTHETIC, TripletDataset
from test.test_training_triplets import SHAPES, tiny_object_set

# mild augmentation so a few iterations can show learning
GENTLE = AugmentConfig(scale_low=0.95, scale_high=1.05, translate=0.02, tilt_sigma=0.0, full_yaw=False,
                       dropout_max=0.2)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    tiny_object_set(root / "cad.npz", per_class=6)
    tiny_object_set(root / "lidar.npz", "lidar", per_class=4, points=(5, 40), seed=1)
    (root / "shapes.yaml").write_text("name: shapes\ntemplates: ['point cloud of a {}.']\n"
                                      "classes: [ball, stick, plate]\n")
    torch.manual_seed(0)
    init = BlendClipPointModel(dataclasses.replace(PointBertConfig.named("tiny"), embed_dim=384))
    _calibrate_batchnorm(init, TripletDataset([root / "cad.npz"], SYNTHETIC))
    save_checkpoint(root / "init.safetensors", init, text_tower={"type": "minilm", "embed_dim": 384})
    return root


def _calibrate_batchnorm(model: BlendClipPointModel, data: TripletDataset) -> None:
    """Running BatchNorm statistics of the data, as a trained initial checkpoint would have.

    A random init has running variance 1 while its activations vary ~1e-5: the 36 steps below
    (momentum 0.1) would leave ~2 % of that 1 in the running variance and collapse eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model.encode([torch.from_numpy(data[i].points) for i in range(len(data))])
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def _caption_loss(model: BlendClipPointModel, data: TripletDataset, captions: torch.Tensor) -> float:
    """Cross-entropy of each object against all distinct captions (fixed scale 1/0.07)."""
    points = encode_dataset(model, data)
    logits = points @ F.normalize(captions, dim=-1).T / 0.07
    return float(F.cross_entropy(logits, torch.from_numpy(data.caption_index)))


@pytest.fixture(scope="module")
def run(workdir):
    config = TrainConfig(synthetic=[workdir / "cad.npz"], real=[workdir / "lidar.npz"], val=[workdir / "lidar.npz"],
                         val_prompts=str(workdir / "shapes.yaml"), out_dir=workdir / "run",
                         init_checkpoint=workdir / "init.safetensors", epochs=3, iterations_per_epoch=12,
                         batch_size=12, warmup_epochs=0.0, r_max=0.25, augment=GENTLE, seed=0,
                         cache_dir=workdir / "cache", progress=False, save_every=2)
    records = []
    return config, train(config, on_epoch=records.append), records


def test_training_lowers_the_caption_loss(run, workdir):
    config, result, _ = run
    data = TripletDataset([workdir / "cad.npz"], SYNTHETIC)
    captions = caption_embeddings(MiniLMTextTower(), data.captions, workdir / "cache")
    before = _caption_loss(load_checkpoint(workdir / "init.safetensors").model, data, captions)
    after = _caption_loss(load_checkpoint(result.last).model, data, captions)
    assert after < 0.8 * before, (before, after)
    assert len(result.iteration_losses) == 36 and all(math.isfinite(x) for x in result.iteration_losses)


def test_history_curriculum_and_outputs(run):
    config, result, records = run
    assert [r.epoch for r in result.history] == [0, 1, 2] and records == result.history
    assert [r.real_per_batch for r in result.history] == [0, 0, 2]  # round(0.25 * 1/2 * 12) at the last epoch
    assert result.history[0].train_accuracy_real is None and result.history[2].train_accuracy_real is not None
    assert set(result.history[-1].val) == {"lidar"} and 0 <= result.history[-1].val["lidar"]["top1"] <= 1
    for name in ("last.safetensors", "best.safetensors", "epoch_002.safetensors", "history.json",
                 "training_curves.png"):
        assert (config.out_dir / name).is_file(), name
    assert not (config.out_dir / "epoch_001.safetensors").exists()
    history, losses = load_history(config.out_dir)
    assert history == result.history and losses == result.iteration_losses
    assert (config.out_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_log_csv_and_tensorboard_events(run):
    config, result, _ = run
    with (config.out_dir / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [r for r in rows if r["kind"] == "step"]
    assert [int(r["step"]) for r in steps] == [10, 20, 30]  # every log_every (10) of the 36 steps
    for row in steps:
        assert float(row["loss"]) > 0 and 0 < float(row["lr"]) <= 1e-3 and float(row["samples_per_s"]) > 0
        assert 1 <= float(row["logit_scale"]) <= 100 and row["loss_point_image"] == ""
    assert [float(r["real_share"]) for r in steps] == [0.0, 0.0, 0.125]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [(r["val_set"], float(r["val_top1"])) for r in epochs] == \
        [("lidar", record.val["lidar"]["top1"]) for record in result.history]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(config.out_dir / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/logit_scale", "train/real_share", "train/samples_per_s",
            "val/lidar/top1"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val/lidar/top1")] == [12, 24, 36]


def test_checkpoint_metadata_names_encoder_tower_and_data(run):
    config, result, _ = run
    loaded = load_checkpoint(result.best)
    assert loaded.format == "blendclip_ros" and loaded.encoder_config.embed_dim == 384
    assert loaded.text_tower["type"] == "minilm" and loaded.text_tower["name"].startswith("minilm")
    training = loaded.metadata["training"]
    assert training["selected_by"] == "val top-1 on lidar" and training["labels"] == list(SHAPES)
    assert [d["role"] for d in training["data"]] == ["synthetic", "real", "val"]
    assert all(len(d["sha256"]) == 64 for d in training["data"])
    assert training["config"]["r_max"] == 0.25 and training["config"]["seed"] == 0
    assert loaded.metadata["labels"] == list(SHAPES)


def test_checkpoint_classifies_through_the_pipeline(run, workdir):
    _, result, _ = run
    classifier = ObjectClassifier.from_config(result.last, prompts=str(workdir / "shapes.yaml"),
                                              cache_dir=workdir / "cache")
    assert classifier.labels == SHAPES
    from blendclip_ros.geometry.boxes import Boxes

    points = TripletDataset([workdir / "cad.npz"], SYNTHETIC)[0].points
    boxes = Boxes([[0, 0, 0]], [[3, 3, 3]], [[0, 0, 0, 1]])
    (only,) = classifier.classify(points, boxes)
    assert only.num_points == len(points) and only.prediction.label in SHAPES


def test_caption_embeddings_are_cached_without_building_the_tower(run, workdir):
    tower = MiniLMTextTower()
    data = TripletDataset([workdir / "cad.npz"], SYNTHETIC)
    cached = caption_embeddings(tower, data.captions, workdir / "cache")
    assert not tower.is_loaded and cached.shape == (len(data.captions), 384)
    torch.testing.assert_close(cached.norm(dim=1), torch.ones(len(data.captions)))


def test_cli_train_float16_then_evaluate(workdir, capsys):
    from blendclip_train.cli.evaluate import main as evaluate_main
    from blendclip_train.cli.train import main as train_main

    out = workdir / "cli"
    code = train_main(["--synthetic", str(workdir / "cad.npz"), "--epochs", "1", "--iterations", "2",
                       "--batch-size", "8", "--out", str(out), "--save-dtype", "float16", "--quiet",
                       "--cache-dir", str(workdir / "cache")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["val"] == {}
    with safe_open(out / "last.safetensors", framework="pt") as f:
        assert f.get_tensor("pc_projection").dtype == torch.float16
    loaded = load_checkpoint(out / "last.safetensors")
    assert loaded.model.pc_projection.dtype == torch.float32
    best = load_checkpoint(out / "best.safetensors")
    assert best.metadata["training"]["selected_by"] == "lowest training loss"
    code = evaluate_main(["--checkpoint", str(out / "last.safetensors"), "--data", str(workdir / "lidar.npz"),
                          "--prompts", str(workdir / "shapes.yaml"), "--json", str(out / "eval.json"),
                          "--confusion", str(out / "cm.png"), "--cache-dir", str(workdir / "cache")])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["count"] == 12 and printed == json.loads((out / "eval.json").read_text())
    assert set(printed["per_class"]) == set(SHAPES) and (out / "cm.png").is_file()


def test_cli_errors_are_one_line_exit_2(workdir, capsys):
    from blendclip_train.cli.evaluate import main as evaluate_main
    from blendclip_train.cli.train import main as train_main

    assert train_main(["--synthetic", str(workdir / "cad.npz"), "--r-max", "0.3", "--out", str(workdir / "x")]) == 2
    assert "r_max" in capsys.readouterr().err
    assert evaluate_main(["--checkpoint", str(workdir / "missing.safetensors"), "--data",
                          str(workdir / "lidar.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("blendclip-evaluate: error:") and err.count("\n") == 1
    assert train_main(["--help"]) == 0 and "curriculum" in capsys.readouterr().out


def test_config_validation():
    with pytest.raises(ConfigError, match="synthetic"):
        TrainConfig(synthetic=[], out_dir="x")
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(synthetic=["a.npz"], out_dir="x", batch_size=1)
    with pytest.raises(ConfigError, match="encoder preset"):
        TrainConfig(synthetic=["a.npz"], out_dir="x", encoder="huge")
    with pytest.raises(ConfigError, match="best_on"):
        TrainConfig(synthetic=["a.npz"], out_dir="x", val=["v/lidar_test.npz"], best_on="lvis")
    assert TrainConfig(synthetic=["a.npz"], out_dir="x", val=["v/a.npz", "v/lvis"], best_on="lvis").best_on == "lvis"
    with pytest.raises(ConfigError, match="resume"):
        TrainConfig(synthetic=["a.npz"], out_dir="x", resume="missing.pt")
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(synthetic=["a.npz"], out_dir="x", precision="fp16")
    assert TrainConfig(synthetic=["a.npz"], real=["b.npz"], out_dir="x").r_max == 0.3
    assert iterations_for(1000, 64) == math.ceil(1000 * math.log(5) / 64)
