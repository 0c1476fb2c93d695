"""Checkpoint formats: BlendCLIP release, ULIP-1, Point-BERT init, project safetensors; strictness."""

from __future__ import annotations

import argparse
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from blendclip_ros.errors import CheckpointError
from blendclip_ros.model.checkpoint import (LoadedCheckpoint, detect_format, infer_encoder_config,
                                            load_checkpoint, save_checkpoint)
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel

# A small release-shaped encoder: 6 heads and default grouping, so every field is inferable.
SMALL = PointBertConfig(width=96, depth=2, heads=6, mlp_ratio=4.0, pointnet_dims=(32, 64, 128, 64),
                        pos_hidden=32)
CLOUDS = [torch.randn(n, 3, generator=torch.Generator().manual_seed(n)) * 0.4
          for n in (1, 20, 64, 500, 2000)]
TEXT_TOWER = {"kind": "open_clip", "model": "ViT-B-16", "pretrained": "datacomp_xl_s13b_b90k",
              "embed_dim": 512}


def _random_model(config: PointBertConfig = SMALL, seed: int = 0) -> BlendClipPointModel:
    """Every parameter and buffer random, so a wrong or partial load changes the outputs."""
    torch.manual_seed(seed)
    model = BlendClipPointModel(config).eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif tensor.is_floating_point() and not name.endswith("patch_padding"):
                tensor.normal_(0, 0.05)
    return model


def _embeddings(model: BlendClipPointModel) -> torch.Tensor:
    with torch.inference_mode():
        return model.encode(CLOUDS)


def _release_dict(model: BlendClipPointModel) -> dict:
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(9)
    state["module.open_clip_model.text_projection"] = torch.randn(512, 512, generator=gen)
    state["module.open_clip_model.token_embedding.weight"] = torch.randn(10, 512, generator=gen)
    state["module.open_clip_model.visual.proj"] = torch.randn(768, 512, generator=gen)
    return {"epoch": 17, "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
            "best_acc1": 46.2, "args": argparse.Namespace(lr=1e-3, model="ULIP2_PointBERT")}


def _ulip_dict(model: BlendClipPointModel) -> dict:
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()
             if k != "point_encoder.patch_padding"}
    gen = torch.Generator().manual_seed(10)
    for key, shape in {"visual.cls_token": (1, 1, 8), "transformer.resblocks.0.attn.in_proj_weight":
                       (24, 8), "token_embedding.weight": (5, 8), "positional_embedding": (77, 8),
                       "ln_final.weight": (8,), "image_projection": (8, 512),
                       "text_projection": (8, 512)}.items():
        state[f"module.{key}"] = torch.randn(shape, generator=gen)
    return {"epoch": 250, "state_dict": state}


def _pointbert_pretrained_dict(model: BlendClipPointModel) -> dict:
    base = {f"module.transformer_q.{k.removeprefix('point_encoder.')}": v.clone()
            for k, v in model.state_dict().items()
            if k.startswith("point_encoder.") and not k.endswith("patch_padding")}
    base["module.transformer_q.cls_head.0.weight"] = torch.randn(256, 96)
    base["module.transformer_q.lm_head.weight"] = torch.randn(8192, 96)
    base["module.transformer_q.mask_token"] = torch.randn(1, 1, 96)
    base["module.transformer_k.cls_token"] = torch.randn(1, 1, 96)
    base["module.dvae.codebook"] = torch.randn(16, 8)
    return {"base_model": base, "epoch": 300}


def test_release_format_round_trip(tmp_path):
    model = _random_model()
    path = tmp_path / "release.pt"
    torch.save(_release_dict(model), path)
    assert detect_format(path) == "blendclip_release"
    loaded = load_checkpoint(path, keep_text_weights=True)
    assert isinstance(loaded, LoadedCheckpoint) and loaded.format == "blendclip_release"
    assert loaded.encoder_config == SMALL
    assert loaded.text_tower["embed_dim"] == 512
    assert loaded.metadata["ignored"] == {"open_clip_model": 3}
    assert loaded.metadata["epoch"] == 17
    assert set(loaded.text_state_dict) == {"text_projection", "token_embedding.weight", "visual.proj"}
    assert not loaded.model.training
    torch.testing.assert_close(_embeddings(loaded.model), _embeddings(model), atol=0, rtol=0)
    torch.testing.assert_close(loaded.model.logit_scale, model.logit_scale)
    assert load_checkpoint(path).text_state_dict is None


def test_ulip1_format_loads_without_patch_padding(tmp_path):
    model = _random_model(seed=1)
    path = tmp_path / "checkpoint_pointbert.pt"
    torch.save(_ulip_dict(model), path)
    assert detect_format(path) == "ulip_pointbert"
    loaded = load_checkpoint(path)
    assert loaded.format == "ulip_pointbert" and loaded.text_tower is None
    assert loaded.metadata["ignored"] == {"slip": 7}
    assert "SLIP" in loaded.metadata["note"]
    torch.testing.assert_close(_embeddings(loaded.model), _embeddings(model), atol=0, rtol=0)


def test_pointbert_pretrained_is_an_encoder_only_init(tmp_path):
    model = _random_model(seed=2)
    path = tmp_path / "point_bert_pretrained.pt"
    torch.save(_pointbert_pretrained_dict(model), path)
    assert detect_format(path) == "pointbert_pretrained"
    loaded = load_checkpoint(path, overrides={"embed_dim": 384})
    assert loaded.metadata["initialised"] == ["pc_projection", "logit_scale"]
    assert loaded.metadata["ignored"] == {"pretraining_heads": 3, "outside_transformer_q": 2}
    assert loaded.model.pc_projection.shape == (192, 384)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model.point_encoder(CLOUDS), model.point_encoder(CLOUDS),
                                   atol=0, rtol=0)


def test_project_format_round_trip(tmp_path):
    config = PointBertConfig.named("tiny")
    model = _random_model(config, seed=3)
    path = save_checkpoint(tmp_path / "model.safetensors", model, text_tower=TEXT_TOWER,
                           training={"epochs": 3, "lr": 1e-3}, labels=["car", "pedestrian"])
    assert detect_format(path) == "blendclip_ros"
    loaded = load_checkpoint(path)
    assert loaded.format == "blendclip_ros"
    assert loaded.encoder_config == config  # heads=4 and max_groups=128 come from the metadata
    assert loaded.text_tower == TEXT_TOWER
    assert loaded.metadata["training"] == {"epochs": 3, "lr": 1e-3}
    assert loaded.metadata["labels"] == ["car", "pedestrian"]
    assert loaded.metadata["version"] == 1
    torch.testing.assert_close(_embeddings(loaded.model), _embeddings(model), atol=0, rtol=0)
    assert not list(tmp_path.glob("*.tmp"))


def test_strict_load_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    checkpoint = _release_dict(_random_model())
    state = checkpoint["state_dict"]
    del state["module.point_encoder.norm.bias"]
    state["module.point_encoder.extra_head.weight"] = torch.zeros(3)
    state["module.pc_projection"] = torch.zeros(192, 256 + 1)
    path = tmp_path / "broken.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, overrides={"embed_dim": 512})
    message = str(info.value)
    assert "missing [point_encoder.norm.bias]" in message
    assert "unexpected [point_encoder.extra_head.weight]" in message
    assert "mis-shaped [pc_projection (192, 257) vs model (192, 512)]" in message


def test_non_strict_load_reports_what_it_skipped(tmp_path):
    model = _random_model()
    checkpoint = _release_dict(model)
    del checkpoint["state_dict"]["module.point_encoder.norm.bias"]
    checkpoint["state_dict"]["module.point_encoder.extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pt"
    torch.save(checkpoint, path)
    loaded = load_checkpoint(path, strict=False)
    assert loaded.metadata["load_report"] == {"missing": ["point_encoder.norm.bias"],
                                              "unexpected": ["point_encoder.extra_head.weight"],
                                              "misshaped": []}
    torch.testing.assert_close(loaded.model.pc_projection, model.pc_projection)


def test_release_with_a_misshaped_tokenizer_is_refused_naming_the_family(tmp_path):
    checkpoint = _release_dict(_random_model())
    checkpoint["state_dict"]["module.point_encoder.reduce_dim.weight"] = torch.zeros(96, 7)
    path = tmp_path / "bad.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"BlendCLIP PointBERT state dict does not fit.*"
                                              r"reduce_dim\.weight \(96, 7\) vs model \(96, 64\)"):
        load_checkpoint(path)


def test_project_format_with_wrong_tensor_fails(tmp_path):
    model = _random_model(PointBertConfig.named("tiny"))
    path = save_checkpoint(tmp_path / "model.safetensors", model, text_tower=TEXT_TOWER)
    with open(path, "rb") as handle:
        header_len = struct.unpack("<Q", handle.read(8))[0]
        metadata = json.loads(handle.read(header_len))["__metadata__"]
    tensors = {k: v for k, v in model.state_dict().items() if k != "logit_scale"}
    save_file(tensors, tmp_path / "missing.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match=r"missing \[logit_scale\]"):
        load_checkpoint(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("document, message", [
    (None, "has no 'blendclip_ros' entry"),
    ("{not json", "is not JSON"),
    (json.dumps({"format": "other", "version": 1}), "metadata.format is not 'blendclip_ros'"),
    (json.dumps({"format": "blendclip_ros", "version": 7, "encoder": {}}), "version 7"),
    (json.dumps({"format": "blendclip_ros", "version": 1, "encoder": {"width": -1}}),
     "metadata.encoder is invalid for BlendCLIP PointBERT .width:"),
])
def test_project_format_metadata_errors(tmp_path, document, message):
    path = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(1)}, path,
              metadata=None if document is None else {"blendclip_ros": document})
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match="cannot load as a torch checkpoint"):
        load_checkpoint(garbage)
    truncated = tmp_path / "truncated.safetensors"
    save_checkpoint(tmp_path / "ok.safetensors", _random_model(PointBertConfig.named("tiny")),
                    text_tower=TEXT_TOWER)
    truncated.write_bytes((tmp_path / "ok.safetensors").read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="too short"):
        load_checkpoint(empty)


class _Payload:
    """A class outside torch's safe globals: weights-only loading must refuse it."""

    def __init__(self) -> None:
        self.value = 3


def test_pickled_objects_need_explicit_trust(tmp_path):
    checkpoint = _release_dict(_random_model())
    checkpoint["args"] = _Payload()
    path = tmp_path / "pickled.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        load_checkpoint(path)
    assert load_checkpoint(path, trust_pickle=True).format == "blendclip_release"


def test_detect_format_on_dicts():
    model = _random_model()
    assert detect_format(_release_dict(model)) == "blendclip_release"
    assert detect_format(_ulip_dict(model)) == "ulip_pointbert"
    assert detect_format(_pointbert_pretrained_dict(model)) == "pointbert_pretrained"
    with pytest.raises(CheckpointError, match=r"unrecognised layout \(top-level keys: \[model\]\)"):
        detect_format({"model": {}})
    with pytest.raises(CheckpointError, match="expected a dict"):
        detect_format([1, 2])  # type: ignore[arg-type]


def test_infer_config_needs_the_key_tensors():
    with pytest.raises(CheckpointError, match=r"missing \[point_encoder.cls_token"):
        infer_encoder_config({"pc_projection": torch.zeros(768, 512)})
    state = {k: v for k, v in _random_model(PointBertConfig.named("tiny")).state_dict().items()}
    with pytest.raises(CheckpointError, match="width: 128 is not divisible by heads=6"):
        infer_encoder_config(state)
    tiny = PointBertConfig.named("tiny")
    inferred = infer_encoder_config(state, {"heads": 4, "max_groups": 128})
    assert inferred == PointBertConfig.from_dict({**tiny.to_dict(), "drop_path": 0.1})


def test_save_checkpoint_validates_its_inputs(tmp_path):
    model = _random_model(PointBertConfig.named("tiny"))
    with pytest.raises(CheckpointError, match="path: expected a .safetensors file name"):
        save_checkpoint(tmp_path / "model.pt", model, text_tower=TEXT_TOWER)
    with pytest.raises(CheckpointError, match="text_tower.embed_dim: 384 != the model's projection"):
        save_checkpoint(tmp_path / "m.safetensors", model, text_tower={"embed_dim": 384})
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "m.safetensors", model, text_tower=TEXT_TOWER,
                        training={"optimizer": object()})
