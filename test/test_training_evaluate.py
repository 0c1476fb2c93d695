"""Zero-shot metrics on hand-made cases, class matching, end-to-end evaluation with known answers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from blendclip_ros.errors import ConfigError
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel
from blendclip_ros.text.bank import TextBank
from blendclip_ros.text.prompts import PromptClass, PromptSet
from blendclip_train.cli.evaluate import main as evaluate_main
from blendclip_train.datasets.benchmarks import load_eval_set
from blendclip_train.eval_report import (
    build_report,
    compare_reports,
    format_table,
    write_outputs,
)
from blendclip_train.evaluate import (
    class_mapping,
    confusion_png,
    encode_clouds,
    encode_dataset,
    evaluate_model,
    evaluate_sets,
    zero_shot_metrics,
)
from blendclip_train.triplets import REAL, TripletDataset
from test.test_training_triplets import tiny_object_set

LABELS = ["a", "b", "c", "d", "e", "f"]


def _scores(rankings: list[list[int]]) -> torch.Tensor:
    """Scores whose descending order is each given ranking (first = top-1)."""
    scores = torch.zeros(len(rankings), len(LABELS))
    for row, ranking in enumerate(rankings):
        for position, cls in enumerate(ranking):
            scores[row, cls] = 1.0 - 0.1 * position
    return scores


def test_hand_made_case_has_the_known_accuracies_and_confusion():
    scores = _scores([[0, 1, 2, 3, 4, 5],   # true 0: top-1 hit
                      [2, 1, 0, 3, 4, 5],   # true 1: top-1 miss (c), top-5 hit
                      [1, 0, 2, 3, 4, 5],   # true 1: hit
                      [3, 0, 1, 4, 5, 2]])  # true 2: ranked 6th -> top-5 miss
    metrics = zero_shot_metrics(scores, torch.tensor([0, 1, 1, 2]), LABELS, skipped={"g": 3})
    assert metrics.count == 4 and metrics.top1 == 0.5 and metrics.top3 == 0.75 and metrics.top5 == 0.75
    assert metrics.per_class_count == [1, 2, 1, 0, 0, 0]
    assert metrics.per_class_top1[:3] == [1.0, 0.5, 0.0] and metrics.per_class_top5[:3] == [1.0, 1.0, 0.0]
    assert all(math.isnan(v) for v in metrics.per_class_top1[3:])
    assert metrics.mean_class_top1 == pytest.approx(0.5) and metrics.mean_class_top5 == pytest.approx(2 / 3)
    expected = np.zeros((6, 6), dtype=np.int64)
    expected[0, 0] = expected[1, 2] = expected[1, 1] = expected[2, 3] = 1
    np.testing.assert_array_equal(metrics.confusion, expected)
    doc = metrics.to_dict()
    assert doc["per_class"]["d"] == {"count": 0, "top1": None, "top3": None, "top5": None}
    assert doc["per_class"]["b"]["top3"] == 1.0 and doc["mean_class_top3"] == pytest.approx(2 / 3, abs=1e-6)
    assert doc["skipped"] == {"g": 3} and doc["confusion"]["matrix"][1][2] == 1


def test_fewer_than_five_classes_count_every_sample_in_top5():
    metrics = zero_shot_metrics(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([0, 0]), ["x", "y"])
    assert metrics.top1 == 0.5 and metrics.top5 == 1.0


def test_bad_metric_inputs_raise():
    with pytest.raises(ConfigError, match="scores"):
        zero_shot_metrics(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), LABELS)
    with pytest.raises(ConfigError, match="targets"):
        zero_shot_metrics(torch.zeros(2, 6), torch.tensor([0, 6]), LABELS)


def test_class_mapping_uses_synonyms_and_ignores_case_and_underscores():
    prompts = PromptSet("p", (PromptClass("traffic cone", ("cone",)), PromptClass("pedestrian", ("person",))),
                        ("point cloud of a {}.",))
    mapping = class_mapping(["Traffic_Cone", "person", "cone", "car"], prompts)
    assert mapping.tolist() == [0, 1, 0, -1]


@pytest.fixture(scope="module")
def one_per_class(tmp_path_factory):
    path = tiny_object_set(tmp_path_factory.mktemp("eval") / "one.npz", per_class=1,
                           classes=("ball", "stick", "plate", "cube"))
    torch.manual_seed(0)
    model = BlendClipPointModel(dataclasses.replace(PointBertConfig.named("tiny"), embed_dim=16)).eval()
    return path, model, TripletDataset([path], REAL)


def test_end_to_end_with_each_objects_own_embedding_as_its_class_text(one_per_class, tmp_path):
    path, model, dataset = one_per_class
    own = encode_dataset(model, dataset)
    assert own.shape == (4, 16) and torch.allclose(own.norm(dim=1), torch.ones(4))
    # prompt classes in another order than the object set; "cube" is not a prompt class
    prompts = PromptSet.from_labels(["plate", "ball", "stick", "bus"])
    rows = torch.stack([own[2], own[0], own[1], -own[0]])
    bank = TextBank(tuple(prompts.labels), rows, "handmade", "none")
    metrics = evaluate_model(model, bank, prompts, [path])
    assert metrics.count == 3 and metrics.skipped == {"cube": 1}
    assert metrics.top1 == 1.0 and metrics.per_class_count == [1, 1, 1, 0]
    swapped = TextBank(tuple(prompts.labels), torch.stack([own[0], own[2], own[1], -own[0]]), "handmade", "none")
    metrics = evaluate_model(model, swapped, prompts, dataset)
    assert metrics.confusion[0, 1] == 1 and metrics.confusion[1, 0] == 1 and metrics.confusion[2, 2] == 1
    assert metrics.top1 == pytest.approx(1 / 3)
    out = confusion_png(metrics, tmp_path / "cm.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_rejects_mismatched_banks(one_per_class):
    path, model, _ = one_per_class
    prompts = PromptSet.from_labels(["bus", "car"])
    with pytest.raises(ConfigError, match="projects"):
        evaluate_model(model, TextBank(("bus", "car"), torch.zeros(2, 8), "t", "d"), prompts, [path])
    with pytest.raises(ConfigError, match="none of the object classes"):
        evaluate_model(model, TextBank(("bus", "car"), torch.zeros(2, 16), "t", "d"), prompts, [path])
    with pytest.raises(ConfigError, match="labels"):
        evaluate_model(model, TextBank(("car", "bus"), torch.zeros(2, 16), "t", "d"), prompts, [path])


def test_report_bins_hand_made_case():
    """Six objects, one per point-count bin; two passes that disagree on the first object."""
    first = _scores([[0, 1, 2, 3, 4, 5]] * 6)
    second = first.clone()
    second[0] = _scores([[1, 0, 2, 3, 4, 5]])[0]
    targets = torch.tensor([0, 0, 0, 1, 1, 1])
    report = build_report(torch.stack([first, second]), targets, LABELS, np.array([1, 3, 7, 20, 100, 500]),
                          np.array([5.0, 15.0, 25.0, 45.0, 60.0, np.nan]), {}, ["x"], "p")
    assert report.metrics.count == 6 and report.metrics.per_class_count[:2] == [3, 3]
    assert report.repeat_top1 == [0.5, pytest.approx(2 / 6)]
    assert report.metrics.top1 == pytest.approx(5 / 12) and int(report.metrics.confusion.sum()) == 12
    assert [b["bin"] for b in report.point_bins] == ["1", "2-4", "5-9", "10-49", "50-199", "200+"]
    assert [b["count"] for b in report.point_bins] == [1] * 6
    assert [b["top1"] for b in report.point_bins] == [0.5, 1.0, 1.0, 0.0, 0.0, 0.0]
    distance = {b["bin"]: b for b in report.distance_bins}
    assert distance["0-10 m"]["top1"] == 0.5 and distance["10-20 m"]["count"] == 1
    assert distance["75-100 m"] == {"bin": "75-100 m", "count": 0, "top1": None, "top5": None,
                                    "mean_class_top1": None}
    assert sum(b["count"] for b in report.distance_bins) == 5  # NaN distance is in no bin
    doc = report.to_dict()
    assert doc["repeats"] == 2 and doc["confusion"]["passes"] == 2
    table = format_table(doc)
    assert "| 2-4 | 1 | 100.0 |" in table and "mean of 2 FPS starts" in table
    none = build_report(first[None], targets, LABELS, np.ones(6, int), np.full(6, np.nan), {}, ["x"], "p")
    assert none.distance_bins == []


def test_evaluate_sets_repeats_and_outputs(one_per_class, tmp_path):
    path, model, _ = one_per_class
    data = load_eval_set(str(path))
    own = encode_clouds(model, data.clouds())
    prompts = PromptSet.from_labels(["plate", "ball", "stick", "cube"])
    bank = TextBank(tuple(prompts.labels), own[[2, 0, 1, 3]], "handmade", "none")
    report = evaluate_sets(model, bank, prompts, [data])
    assert report.metrics.top1 == 1.0 and report.repeats == 1 and report.repeat_top1 == [1.0]
    assert sum(b["count"] for b in report.point_bins) == 4
    random_start = encode_clouds(model, data.clouds(seed=1), generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(random_start, own)  # another FPS start gives other patches
    repeated = evaluate_sets(model, bank, prompts, [data], repeats=3)
    assert repeated.repeats == 3 and len(repeated.repeat_top1) == 3
    assert repeated.metrics.count == 4 and int(repeated.metrics.confusion.sum()) == 12
    assert repeated.metrics.top1 == pytest.approx(np.mean(repeated.repeat_top1))
    paths = write_outputs(repeated, tmp_path / "out", extra={"checkpoint": "c"})
    assert json.loads(paths["json"].read_text())["checkpoint"] == "c"
    assert paths["breakdown_png"].read_bytes()[:4] == b"\x89PNG" and paths["confusion_png"].is_file()
    assert json.loads(paths["confusion_json"].read_text())["labels"] == prompts.labels
    with pytest.raises(ConfigError, match="repeats"):
        evaluate_sets(model, bank, prompts, [data], repeats=0)


def test_compare_prints_the_differences(tmp_path, capsys):
    a = {"count": 4, "top1": 0.5, "top3": 0.75, "top5": 1.0, "mean_class_top1": 0.5, "mean_class_top3": 0.7,
         "mean_class_top5": 1.0, "per_class": {"car": {"count": 2, "top1": 0.5}},
         "breakdown": {"points": [{"bin": "1", "top1": 0.25}], "distance": []}}
    b = {**a, "top1": 0.625, "per_class": {"car": {"count": 2, "top1": 1.0}, "bus": {"count": 1, "top1": 0.0}},
         "breakdown": {"points": [{"bin": "1", "top1": 0.5}]}}
    text = compare_reports(a, b)
    assert "+12.5" in text and "class car top-1" in text and "+50.0" in text and "points 1 top-1" in text
    assert next(line for line in text.splitlines() if line.startswith("class bus")).split()[-2:] == ["–", "0.0"]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert evaluate_main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "+12.5" in capsys.readouterr().out
    (tmp_path / "c.json").write_text("{}")
    assert evaluate_main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) == 2
    assert evaluate_main(["--data", "modelnet40:/nowhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a blendclip-evaluate report" in err[0] and "--checkpoint" in err[1]


def test_cli_shipped_model_on_the_real_sweep(shared_data, tmp_path, capsys):
    """The documented command: the simulated-data model on the 69 boxes of the real nuScenes sweep."""
    pkl = shared_data / "mmdet3d/demo/data/nuscenes/n015-2018-07-24-11-22-45+0800.pkl"
    if not pkl.is_file():
        pytest.skip("real nuScenes sweep not available")
    shipped = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
    code = evaluate_main(["--checkpoint", str(shipped / "blendclip_tiny_sim.safetensors"), "--data", f"mmdet3d:{pkl}",
                          "--prompts", str(shipped / "sim_classes.yaml"), "--out", str(tmp_path / "sweep"),
                          "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["count"] == 65 and doc["skipped"] == {"label 'ignore'": 1, "no points": 3}
    assert sum(b["count"] for b in doc["breakdown"]["points"]) == 65
    assert sum(b["count"] for b in doc["breakdown"]["distance"]) == 65
    assert "| 200+ |" in captured.err and (tmp_path / "sweep" / "breakdown.png").is_file()
    assert json.loads((tmp_path / "sweep" / "report.json").read_text())["top1"] == doc["top1"]


@pytest.mark.parametrize(("options", "message"), [
    (["--text-tower", "open_clip", "--text-model", "NoSuchNet"], "unknown open_clip model 'NoSuchNet'"),
    (["--text-tower", "open_clip", "--text-model", "ViT-B-32"], "512-d text embeddings but the model projects to 384"),
    (["--text-model", "ViT-B-32"], "need --text-tower open_clip"),
    (["--text-weights", "x.pt"], "need --text-tower open_clip"),
])
def test_cli_text_tower_options_reach_the_tower(tmp_path, capsys, options, message):
    """--text-model names the open_clip config (any, not only ViT-B-16); misuse is one clear line."""
    data = tiny_object_set(tmp_path / "set.npz", per_class=1)
    shipped = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
    code = evaluate_main(["--checkpoint", str(shipped / "blendclip_tiny_sim.safetensors"), "--data", f"npz:{data}",
                          "--prompts", str(shipped / "sim_classes.yaml"),
                          "--cache-dir", str(tmp_path / "cache"), *options])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
