"""ZeroShotClassifier: softmax over a prompt set, top-k, unknowns, bank swaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from blendclip_ros.classifier import Prediction, ZeroShotClassifier
from blendclip_ros.errors import ConfigError
from blendclip_ros.text import towers
from blendclip_ros.text.bank import TextBank, build_text_bank
from blendclip_ros.text.prompts import load_prompt_set


def one_hot_bank(labels: list[str], dim: int = 8) -> TextBank:
    return TextBank(labels, torch.eye(len(labels), dim), "test", "eye")


def test_each_class_direction_is_classified_as_that_class():
    labels = ["car", "bus", "truck", "bicycle"]
    clf = ZeroShotClassifier(one_hot_bank(labels), logit_scale=100.0, top_k=2)
    preds = clf.classify(torch.eye(4, 8), [50, 50, 50, 50])
    assert [p.label for p in preds] == labels
    assert all(not p.is_unknown and p.score > 0.99 and len(p.top_k) == 2 for p in preds)
    assert [p.top_k[0][0] for p in preds] == labels


def test_probabilities_are_the_scaled_cosine_softmax():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(5, 16), dim=-1)
    points = F.normalize(torch.randn(7, 16), dim=-1)
    clf = ZeroShotClassifier(TextBank(list("abcde"), text, "t", "d"), logit_scale=14.3)
    expected = torch.exp(14.3 * points @ text.T)
    torch.testing.assert_close(clf.probabilities(points), expected / expected.sum(1, keepdim=True))


def test_sparse_objects_are_unknown_and_never_read():
    clf = ZeroShotClassifier(one_hot_bank(["car", "bus"]), logit_scale=50.0, min_points=5)
    emb = torch.eye(3, 8)
    emb[1] = float("nan")  # the row of the 2-point object must not be touched
    preds = clf.classify(emb, torch.tensor([5, 2, 9]))
    assert preds[1] == Prediction("unknown", 0.0, [], True)
    assert preds[0].label == "car" and preds[2].label in ("car", "bus")
    assert all(np.isfinite(p.score) for p in preds)


def test_below_threshold_is_unknown_but_keeps_its_ranking():
    labels = ["car", "bus", "truck"]
    clf = ZeroShotClassifier(one_hot_bank(labels), logit_scale=1.0, score_threshold=0.6, top_k=5,
                             unknown_label="other")
    (pred,) = clf.classify(F.normalize(torch.tensor([[1.0, 0.2, 0.0] + [0.0] * 5]), dim=-1), [100])
    assert pred.is_unknown and pred.label == "other"
    assert [name for name, _ in pred.top_k] == ["car", "bus", "truck"]  # top_k clipped to 3 classes
    assert pred.score == pred.top_k[0][1] < 0.6


def test_set_bank_swaps_the_prompt_set():
    clf = ZeroShotClassifier(one_hot_bank(["car", "bus"]), logit_scale=100.0)
    emb = torch.eye(2, 8)
    assert [p.label for p in clf.classify(emb, [3, 3])] == ["car", "bus"]
    clf.set_bank(one_hot_bank(["pedestrian", "cone"]))
    assert clf.labels == ("pedestrian", "cone")
    assert [p.label for p in clf.classify(emb, [3, 3])] == ["pedestrian", "cone"]
    with pytest.raises(ConfigError, match="bank: new bank is 4-d"):
        clf.set_bank(one_hot_bank(["a"], dim=4))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"logit_scale": 0.0}, "logit_scale"), ({"logit_scale": float("nan")}, "logit_scale"),
    ({"top_k": 0}, "top_k"), ({"score_threshold": 1.5}, "score_threshold"), ({"min_points": 0}, "min_points"),
])
def test_invalid_settings_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ZeroShotClassifier(one_hot_bank(["a"]), **{"logit_scale": 10.0, **kwargs})


def test_mismatched_inputs_are_rejected():
    clf = ZeroShotClassifier(one_hot_bank(["a", "b"]), logit_scale=10.0)
    with pytest.raises(ConfigError, match=r"embeddings: expected shape \(B, 8\)"):
        clf.classify(torch.zeros(2, 5), [1, 1])
    with pytest.raises(ConfigError, match="num_points: 3 counts"):
        clf.classify(torch.zeros(2, 8), [1, 1, 1])
    assert clf.classify(torch.zeros(0, 8), []) == []


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 12), st.just(6)), elements=st.floats(-1, 1, width=32)),
       st.integers(1, 6), st.floats(1.0, 100.0))
def test_batched_classification_equals_row_by_row(raw, top_k, scale):
    text = F.normalize(torch.tensor(np.random.default_rng(1).normal(size=(5, 6)), dtype=torch.float32), dim=-1)
    clf = ZeroShotClassifier(TextBank(list("abcde"), text, "t", "d"), logit_scale=scale, top_k=top_k)
    emb = torch.from_numpy(raw)
    batch = clf.classify(emb, [10] * len(emb))
    probs = clf.probabilities(emb)
    for row, pred in enumerate(batch):
        (single,) = clf.classify(emb[row:row + 1], [10])
        assert single.label == pred.label and single.score == pytest.approx(pred.score, abs=1e-6)
        scores = [s for _, s in pred.top_k]
        assert scores == sorted(scores, reverse=True) and len(scores) == min(top_k, 5)
        assert pred.score == pytest.approx(float(probs[row].max()), abs=1e-6)


def test_real_minilm_bank_classifies_text_queries(tmp_path, monkeypatch):
    """Text-to-text sanity check of the whole ranking with the real MiniLM tower and nuScenes set."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(towers, "_DIGESTS", {})
    tower = towers.MiniLMTextTower()
    bank = build_text_bank(tower, load_prompt_set("nuscenes"))
    clf = ZeroShotClassifier(bank, logit_scale=100.0, top_k=3)
    queries = ["a city bus", "a traffic cone on the road", "a person walking", "a parked car"]
    preds = clf.classify(tower.encode(queries), [100] * 4)
    assert [p.label for p in preds] == ["bus", "traffic cone", "pedestrian", "car"]
