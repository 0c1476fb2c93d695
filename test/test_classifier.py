"""ZeroShotClassifier (softmax over a prompt set, top-k, unknowns, bank swaps) and the ObjectClassifier pipeline."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from blendclip_ros.classifier import Prediction, ZeroShotClassifier
from blendclip_ros.errors import ConfigError, PointCloudError
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.crop import points_in_boxes
from blendclip_ros.geometry.preprocess import preprocess_crop
from blendclip_ros.model.checkpoint import save_checkpoint
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel
from blendclip_ros.pipeline import ObjectClassifier, UntrainedModelWarning
from blendclip_ros.text import towers
from blendclip_ros.text.bank import TextBank, build_text_bank
from blendclip_ros.text.prompts import PromptSet, load_prompt_set


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
        # a one-row matmul may round differently from the batched one: float32 logits up to 100
        # carry ~1e-5 absolute error, so probabilities agree to that, not to 1e-6
        assert single.label == pred.label and single.score == pytest.approx(pred.score, abs=2e-5)
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


# --- ObjectClassifier pipeline on the real nuScenes sweep -----------------------------------------

NUSCENES_LABELS = ("barrier", "bicycle", "bus", "car", "construction vehicle",
                   "motorcycle", "pedestrian", "traffic cone", "trailer", "truck")


class CountingModel(BlendClipPointModel):
    """The real point model, recording the batch size of every encode call."""

    def __init__(self, config):
        super().__init__(config)
        self.batches: list[int] = []

    def encode(self, clouds, normalize=True, **kwargs):
        self.batches.append(len(clouds))
        return super().encode(clouds, normalize, **kwargs)


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(towers, "_DIGESTS", {})
    return tmp_path / "xdg"


@pytest.fixture(scope="module")
def nuscenes_bank(tmp_path_factory) -> TextBank:
    return build_text_bank(towers.MiniLMTextTower(), load_prompt_set("nuscenes"),
                           cache_dir=tmp_path_factory.mktemp("bank"))


def tiny_model(seed: int = 0, embed_dim: int = 384, cls=BlendClipPointModel) -> BlendClipPointModel:
    torch.manual_seed(seed)
    return cls(dataclasses.replace(PointBertConfig.named("tiny"), embed_dim=embed_dim))


def test_pipeline_encodes_every_occupied_box_in_one_batch(nuscenes_frame, nuscenes_bank):
    boxes = Boxes.from_mmdet3d(nuscenes_frame.boxes)
    model = tiny_model(cls=CountingModel)
    pipe = ObjectClassifier(model, nuscenes_bank, min_points=3, top_k=4)
    results = pipe.classify(nuscenes_frame.points, boxes)
    counts = [len(i) for i in points_in_boxes(nuscenes_frame.points, boxes)]
    assert len(results) == 69 and [r.num_points for r in results] == counts
    occupied = [i for i, n in enumerate(counts) if n >= 3]
    assert model.batches == [len(occupied)] and 0 < len(occupied) < 69
    for i, r in enumerate(results):
        if i in occupied:
            assert r.prediction.label in NUSCENES_LABELS and len(r.prediction.top_k) == 4
        else:
            assert r.prediction.is_unknown and r.prediction.top_k == []
    # The batched embedding of a box equals encoding that box alone.
    big = max(occupied, key=lambda i: counts[i])
    alone = preprocess_crop(nuscenes_frame.points[points_in_boxes(nuscenes_frame.points, boxes.subset([big]))[0]])
    with torch.inference_mode():
        single = model.encode([torch.from_numpy(alone)])
    probs = pipe.classifier.probabilities(single)
    assert results[big].prediction.score == pytest.approx(float(probs.max()), abs=1e-5)


def test_from_config_without_checkpoint_is_seeded_and_warns(nuscenes_frame, xdg):
    boxes = Boxes.from_mmdet3d(nuscenes_frame.boxes[:20])
    with pytest.warns(UntrainedModelWarning, match="random-initialised"):
        first = ObjectClassifier.from_config(seed=0)
    with pytest.warns(UntrainedModelWarning):
        again = ObjectClassifier.from_config(seed=0, prompts=["car", "pedestrian", "barrier"])
    with pytest.warns(UntrainedModelWarning):
        other = ObjectClassifier.from_config(seed=1)
    assert first.labels == NUSCENES_LABELS and again.labels == ("car", "pedestrian", "barrier")
    assert first.model.config.embed_dim == 384 and first.classifier.bank.tower_name.startswith("minilm")
    again.set_bank(first.classifier.bank)
    a, b, c = (p.classify(nuscenes_frame.points, boxes) for p in (first, again, other))
    assert [r.prediction for r in a] == [r.prediction for r in b]
    assert [r.prediction.score for r in a] != [r.prediction.score for r in c]


def test_from_config_with_a_project_checkpoint_reproduces_the_model(tmp_path, nuscenes_frame, xdg):
    model = tiny_model(seed=3)
    path = save_checkpoint(tmp_path / "m.safetensors", model, text_tower={"type": "minilm", "embed_dim": 384})
    boxes = Boxes.from_mmdet3d(nuscenes_frame.boxes[:15])
    loaded = ObjectClassifier.from_config(path, prompts="truckscenes")
    direct = ObjectClassifier(model, loaded.classifier.bank)
    assert loaded.labels[0] == "animal"
    assert [r.prediction for r in loaded.classify(nuscenes_frame.points, boxes)] == \
        [r.prediction for r in direct.classify(nuscenes_frame.points, boxes)]


def test_from_config_with_a_release_checkpoint_uses_its_openclip_weights(tmp_path, xdg):
    """A BlendCLIP release file (module.-prefixed point model + frozen open_clip_model.*)."""
    config = PointBertConfig(width=96, depth=1, heads=6, pointnet_dims=(16, 32, 64, 64), pos_hidden=32,
                             max_groups=64, embed_dim=512)
    model = BlendClipPointModel(config)
    text_tower = towers.OpenClipTextTower(seed=5)
    text_tower.load()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state.update({f"module.open_clip_model.{k}": v for k, v in text_tower._model.state_dict().items()})
    path = tmp_path / "checkpoint_best.pt"
    torch.save({"epoch": 9, "state_dict": state, "best_acc1": 0.4}, path)
    pipe = ObjectClassifier.from_config(path, prompts=["car", "truck"])
    assert "checkpoint_best.pt" in pipe.classifier.bank.tower_name
    expected = build_text_bank(text_tower, PromptSet.from_labels(["car", "truck"]), use_cache=False)
    torch.testing.assert_close(pipe.classifier.bank.embeddings, expected.embeddings)
    assert pipe.classifier.logit_scale == pytest.approx(math.exp(model.logit_scale.item()))


def test_pipeline_rejects_mismatched_parts(nuscenes_bank):
    with pytest.raises(ConfigError, match="bank: 384-d text embeddings"):
        ObjectClassifier(tiny_model(embed_dim=512), nuscenes_bank)
    pipe = ObjectClassifier(tiny_model(), nuscenes_bank)
    with pytest.raises(PointCloudError, match=r"points: expected shape \(N, >=3\)"):
        pipe.classify(np.zeros((10, 2), np.float32), Boxes.empty())
    assert pipe.classify(np.zeros((10, 3), np.float32), Boxes.empty()) == []
    with pytest.raises(ConfigError, match="max_points"):
        ObjectClassifier(tiny_model(), nuscenes_bank, max_points=-1)
    with pytest.raises(ConfigError, match="max_points"):
        ObjectClassifier(tiny_model(), nuscenes_bank, max_points=10000)  # above the model's 8192
    assert ObjectClassifier(tiny_model(), nuscenes_bank, max_points=0).max_points == 8192  # the family's


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_cuda_request_falls_back_to_cpu(nuscenes_bank):
    with pytest.warns(RuntimeWarning, match="CUDA is unavailable"):
        pipe = ObjectClassifier(tiny_model(), nuscenes_bank, device="cuda")
    assert pipe.device == torch.device("cpu") and pipe.classifier.bank.embeddings.device.type == "cpu"


def test_live_prompt_swap_and_settings(nuscenes_frame, xdg):
    boxes = Boxes.from_mmdet3d(nuscenes_frame.boxes)
    with pytest.warns(UntrainedModelWarning):
        pipe = ObjectClassifier.from_config(seed=0, top_k=3)
    before = pipe.classify(nuscenes_frame.points, boxes)
    pipe.set_prompts(PromptSet.from_labels(["car", "bus"]))
    pipe.update(top_k=1, min_points=10, box_margin=0.5, max_points=64)
    after = pipe.classify(nuscenes_frame.points, boxes)
    assert pipe.labels == ("car", "bus")
    assert all(a.num_points >= b.num_points for a, b in zip(after, before))
    assert sum(a.num_points for a in after) > sum(b.num_points for b in before)
    for r in after:
        if r.num_points < 10:
            assert r.prediction.is_unknown and r.prediction.top_k == []
        else:
            assert r.prediction.label in ("car", "bus") and len(r.prediction.top_k) == 1
    with pytest.raises(ConfigError, match="box_margin"):
        pipe.update(box_margin=float("nan"))
    with pytest.raises(ConfigError, match="max_points"):
        pipe.update(max_points=10**6)
