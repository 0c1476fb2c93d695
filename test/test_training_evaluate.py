"""Zero-shot metrics on hand-made cases, class matching, end-to-end evaluation with known answers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from blendclip_ros.errors import ConfigError
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel
from blendclip_ros.text.bank import TextBank
from blendclip_ros.text.prompts import PromptClass, PromptSet
from blendclip_train.evaluate import (class_mapping, confusion_png, encode_dataset, evaluate_model,
                                             zero_shot_metrics)
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
    assert metrics.count == 4 and metrics.top1 == 0.5 and metrics.top5 == 0.75
    assert metrics.per_class_count == [1, 2, 1, 0, 0, 0]
    assert metrics.per_class_top1[:3] == [1.0, 0.5, 0.0] and metrics.per_class_top5[:3] == [1.0, 1.0, 0.0]
    assert all(math.isnan(v) for v in metrics.per_class_top1[3:])
    assert metrics.mean_class_top1 == pytest.approx(0.5) and metrics.mean_class_top5 == pytest.approx(2 / 3)
    expected = np.zeros((6, 6), dtype=np.int64)
    expected[0, 0] = expected[1, 2] = expected[1, 1] = expected[2, 3] = 1
    np.testing.assert_array_equal(metrics.confusion, expected)
    doc = metrics.to_dict()
    assert doc["per_class"]["d"] == {"count": 0, "top1": None, "top5": None}
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
