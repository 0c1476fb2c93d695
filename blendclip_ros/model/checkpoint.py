"""Load and save point-model checkpoints.

Formats (the value of :func:`detect_format`):

* ``"blendclip_release"``: BlendCLIP ``torch.save`` dict, ``state_dict`` with ``module.``-prefixed
  ``point_encoder.*``, ``pc_projection``, ``logit_scale`` and the frozen ``open_clip_model.*``;
* ``"ulip_pointbert"``: ULIP-1 ``checkpoint_pointbert.pt`` (point encoder + 768x512 projection in
  SLIP's embedding space, plus the SLIP towers, which are ignored); an initialisation only;
* ``"pointbert_pretrained"``: ULIP's ``point_bert_pretrained.pt`` (``base_model`` with
  ``transformer_q.*``); encoder-only initialisation, projection and logit scale freshly initialised;
* ``"blendclip_ros"``: this project's single ``.safetensors`` file whose metadata entry
  ``"blendclip_ros"`` holds a JSON document with the encoder config, text tower and training info.

Loading is strict by default: missing, unexpected or mis-shaped keys raise :class:`CheckpointError`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from blendclip_ros.errors import CheckpointError, ConfigError
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel

log = logging.getLogger(__name__)

FORMAT_NAME = "blendclip_ros"
FORMAT_VERSION = 1
RELEASE, ULIP, POINTBERT_PRETRAINED, PROJECT = (
    "blendclip_release", "ulip_pointbert", "pointbert_pretrained", FORMAT_NAME)

#: Heads cannot be read from weight shapes; every released PointBERT uses 6.
DEFAULT_HEADS = 6
#: Top-level parameters of ULIP-1's SLIP image/text towers, ignored for the point model.
_SLIP_PREFIXES = ("visual.", "transformer.", "token_embedding.", "positional_embedding",
                  "ln_final.", "image_projection", "text_projection")
#: Point-BERT pre-training heads inside ``transformer_q`` that the encoder does not use.
_POINTBERT_HEADS = ("cls_head.", "lm_head.", "mask_token")
#: Buffers older formats lack; they keep the model's value (``patch_padding`` is all zeros).
_OPTIONAL_BUFFERS = frozenset({"point_encoder.patch_padding"})
_MAX_LISTED_KEYS = 20


@dataclass
class LoadedCheckpoint:
    """A loaded point model and what the checkpoint says about how to use it."""

    model: BlendClipPointModel
    encoder_config: PointBertConfig
    text_tower: dict[str, Any] | None
    metadata: dict[str, Any]
    format: str
    #: The release's frozen OpenCLIP weights (``open_clip_model.`` stripped), when requested.
    text_state_dict: dict[str, Tensor] | None = field(default=None, repr=False)


def save_checkpoint(path: str | os.PathLike, model: BlendClipPointModel, *,
                    text_tower: Mapping[str, Any], training: Mapping[str, Any] | None = None,
                    labels: list[str] | None = None) -> Path:
    """Write ``model`` as one ``.safetensors`` file whose metadata says how to use it."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"path: expected a .safetensors file name, got {path.name!r}")
    tower_dim = text_tower.get("embed_dim")
    if tower_dim is not None and tower_dim != model.config.embed_dim:
        raise CheckpointError(f"text_tower.embed_dim: {tower_dim} != the model's projection "
                              f"dimension {model.config.embed_dim}")
    document: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                                "encoder": model.config.to_dict(), "text_tower": dict(text_tower),
                                "training": dict(training or {})}
    if labels is not None:
        document["labels"] = list(labels)
    try:
        metadata = {FORMAT_NAME: json.dumps(document)}
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"text_tower/training: not JSON-serialisable ({error})") from None
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                    strict: bool = True, overrides: Mapping[str, Any] | None = None,
                    keep_text_weights: bool = False,
                    trust_pickle: bool = False) -> LoadedCheckpoint:
    """Load any supported format into a :class:`BlendClipPointModel` in eval mode on ``device``.

    ``overrides`` sets encoder-config fields the weights cannot tell (``heads``, grouping sizes,
    ``embed_dim`` of a freshly initialised projection). ``strict=False`` loads what fits and
    reports the rest in ``metadata["load_report"]``. ``torch.save`` files are read with
    ``weights_only=True``; ``trust_pickle=True`` is needed for files holding other Python
    objects and must only be used for trusted files.
    """
    path = Path(path)
    if _is_safetensors(path):
        return _load_project(path, device, strict, overrides)
    checkpoint = _torch_load(path, trust_pickle)
    kind = detect_format(checkpoint)
    if kind == POINTBERT_PRETRAINED:
        state, metadata = _pointbert_pretrained_state(checkpoint["base_model"])
        allow_missing = _OPTIONAL_BUFFERS | {"pc_projection", "logit_scale"}
        metadata["initialised"] = ["pc_projection", "logit_scale"]
        text_tower, text_state = None, None
    else:
        state, text_state, metadata = _split_release_state(_strip_module(checkpoint["state_dict"]),
                                                           kind)
        allow_missing = _OPTIONAL_BUFFERS if kind == ULIP else frozenset()
        text_tower = ({"kind": "open_clip", "model": "ViT-B-16",
                       "pretrained": "datacomp_xl_s13b_b90k", "embed_dim": 512}
                      if kind == RELEASE else None)
        if kind == ULIP:
            metadata["note"] = "SLIP embedding space: an initialisation, not a usable classifier"
        for key in ("epoch", "best_acc1"):
            if isinstance(checkpoint.get(key), (int, float)):
                metadata[key] = checkpoint[key]
    config = infer_encoder_config(state, overrides)
    model = BlendClipPointModel(config)
    metadata["load_report"] = _fit_state_dict(model, state, allow_missing, strict, path)
    return LoadedCheckpoint(model=model.to(device).eval(), encoder_config=config,
                            text_tower=text_tower, metadata=metadata, format=kind,
                            text_state_dict=text_state if keep_text_weights else None)


def detect_format(obj_or_path: Mapping[str, Any] | str | os.PathLike) -> str:
    """Name of the checkpoint format of a loaded ``torch.save`` dict or of a file."""
    if isinstance(obj_or_path, (str, os.PathLike)):
        path = Path(obj_or_path)
        if _is_safetensors(path):
            _read_document(path)
            return PROJECT
        obj_or_path = _torch_load(path, trust_pickle=False)
    if not isinstance(obj_or_path, Mapping):
        raise CheckpointError(f"checkpoint: expected a dict, got {type(obj_or_path).__name__}")
    if isinstance(obj_or_path.get("state_dict"), Mapping):
        keys = list(_strip_module(obj_or_path["state_dict"]))
        if any(k.startswith("point_encoder.") for k in keys) and "pc_projection" in keys:
            if any(k.startswith("open_clip_model.") for k in keys) \
                    or "point_encoder.patch_padding" in keys:
                return RELEASE
            return ULIP
    if isinstance(obj_or_path.get("base_model"), Mapping) and any(
            k.startswith("transformer_q.") for k in _strip_module(obj_or_path["base_model"])):
        return POINTBERT_PRETRAINED
    raise CheckpointError("checkpoint: unrecognised layout (top-level keys: "
                          f"{_listing(sorted(map(str, obj_or_path)))})")


def infer_encoder_config(state: Mapping[str, Tensor],
                         overrides: Mapping[str, Any] | None = None) -> PointBertConfig:
    """Encoder config from weight shapes (width, depth, MLP, tokenizer, projection).

    Heads default to 6; ``overrides`` replaces any field (e.g. heads, grouping sizes).
    """
    needed = ["point_encoder.cls_token", "point_encoder.blocks.blocks.0.mlp.fc1.weight",
              "point_encoder.pos_embed.0.weight"] + [
        f"point_encoder.encoder.{conv}.{i}.weight"
        for conv in ("first_conv", "second_conv") for i in (0, 3)]
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f"state_dict: cannot infer the encoder, missing {_listing(missing)}")
    width = state["point_encoder.cls_token"].shape[-1]
    block_ids = {int(m.group(1)) for k in state
                 if (m := re.match(r"point_encoder\.blocks\.blocks\.(\d+)\.", k))}
    conv = [state[f"point_encoder.encoder.{c}.{i}.weight"].shape[0]
            for c in ("first_conv", "second_conv") for i in (0, 3)]
    values: dict[str, Any] = dict(
        width=width, depth=max(block_ids) + 1, heads=DEFAULT_HEADS,
        mlp_ratio=state["point_encoder.blocks.blocks.0.mlp.fc1.weight"].shape[0] / width,
        pointnet_dims=tuple(conv), pos_hidden=state["point_encoder.pos_embed.0.weight"].shape[0])
    if "pc_projection" in state and state["pc_projection"].dim() == 2:
        values["embed_dim"] = state["pc_projection"].shape[1]
    values["pointnet_dims"] = list(values["pointnet_dims"])
    try:
        return PointBertConfig.from_dict({**values, **(overrides or {})})
    except ConfigError as error:
        raise CheckpointError(f"state_dict: inferred encoder config is invalid ({error})") from None


def _load_project(path: Path, device: str | torch.device, strict: bool,
                  overrides: Mapping[str, Any] | None) -> LoadedCheckpoint:
    document = _read_document(path)
    try:
        config = PointBertConfig.from_dict(document["encoder"])
    except (ConfigError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: metadata.encoder is invalid ({error})") from None
    config = _config_with_overrides(config, overrides, path)
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: cannot read the tensors ({error})") from None
    model = BlendClipPointModel(config)
    metadata = {k: v for k, v in document.items() if k not in ("encoder", "text_tower")}
    metadata["load_report"] = _fit_state_dict(model, state, frozenset(), strict, path)
    return LoadedCheckpoint(model=model.to(device).eval(), encoder_config=config,
                            text_tower=document.get("text_tower"), metadata=metadata,
                            format=PROJECT)


def _read_document(path: Path) -> dict[str, Any]:
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    if FORMAT_NAME not in metadata:
        raise CheckpointError(f"{path}: safetensors metadata has no {FORMAT_NAME!r} entry "
                              f"(keys: {sorted(metadata)})")
    try:
        document = json.loads(metadata[FORMAT_NAME])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: metadata.{FORMAT_NAME} is not JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: metadata.format is not {FORMAT_NAME!r}")
    if document.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: metadata.version {document.get('version')!r} is not "
                              f"supported (expected {FORMAT_VERSION})")
    return document


def _is_safetensors(path: Path) -> bool:
    """True if the file starts with a safetensors header (u64 length, then a JSON object)."""
    if not path.is_file():
        raise CheckpointError(f"path: checkpoint file not found: {path}")
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise CheckpointError(f"{path}: file is too short to be a checkpoint ({len(head)} bytes)")
    header_len = struct.unpack("<Q", head[:8])[0]
    return head[8:9] == b"{" and 0 < header_len <= path.stat().st_size - 8


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    try:
        if trust_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"path: checkpoint file not found: {path}") from None
    except Exception as error:  # torch.load raises many unrelated types on corrupt input
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        hint = ("; if the file is trusted and holds other Python objects, pass trust_pickle=True"
                if "weights_only" in str(error) or "global" in str(error).lower() else "")
        raise CheckpointError(f"{path}: cannot load as a torch checkpoint ({message}){hint}") \
            from None


def _strip_module(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def _split_release_state(state: dict[str, Any], kind: str
                         ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]:
    """Point-model keys, OpenCLIP weights (release) and counts of keys set aside."""
    point: dict[str, Tensor] = {}
    text: dict[str, Tensor] = {}
    ignored: dict[str, int] = {}
    for key, value in state.items():
        if key.startswith("open_clip_model.") and kind == RELEASE:
            text[key.removeprefix("open_clip_model.")] = value
            ignored["open_clip_model"] = ignored.get("open_clip_model", 0) + 1
        elif kind == ULIP and key.startswith(_SLIP_PREFIXES):
            ignored["slip"] = ignored.get("slip", 0) + 1
        else:
            point[key] = value
    return point, text, {"ignored": ignored}


def _pointbert_pretrained_state(base: Mapping[str, Any]
                                ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``transformer_q.*`` minus the pre-training heads, renamed to ``point_encoder.*``."""
    state: dict[str, Tensor] = {}
    ignored = {"pretraining_heads": 0, "outside_transformer_q": 0}
    for key, value in _strip_module(base).items():
        if not key.startswith("transformer_q."):
            ignored["outside_transformer_q"] += 1
        elif key.removeprefix("transformer_q.").startswith(_POINTBERT_HEADS):
            ignored["pretraining_heads"] += 1
        else:
            state["point_encoder." + key.removeprefix("transformer_q.")] = value
    return state, {"ignored": ignored}


def _config_with_overrides(config: PointBertConfig, overrides: Mapping[str, Any] | None,
                           path: Path) -> PointBertConfig:
    if not overrides:
        return config
    try:
        return PointBertConfig.from_dict({**config.to_dict(), **overrides})
    except ConfigError as error:
        raise CheckpointError(f"{path}: overrides: {error}") from None


def _fit_state_dict(model: BlendClipPointModel, state: Mapping[str, Tensor],
                    allow_missing: frozenset[str], strict: bool, path: Path) -> dict[str, list[str]]:
    """Load ``state`` into ``model``; strict mode raises on any key or shape mismatch."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and k not in allow_missing)
    unexpected = sorted(k for k in state if k not in expected)
    misshaped = sorted(k for k in state if k in expected and (
        not isinstance(state[k], Tensor) or tuple(state[k].shape) != tuple(expected[k].shape)))
    if strict and (missing or unexpected or misshaped):
        problems = []
        if missing:
            problems.append(f"missing {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected {_listing(unexpected)}")
        if misshaped:
            problems.append("mis-shaped " + _listing(
                [f"{k} {_shape(state[k])} vs model {tuple(expected[k].shape)}" for k in misshaped]))
        raise CheckpointError(f"{path}: state dict does not fit the model: " + "; ".join(problems))
    fitting = {k: v for k, v in state.items() if k in expected and k not in misshaped}
    model.load_state_dict({**expected, **fitting}, strict=True)
    report = {"missing": missing, "unexpected": unexpected, "misshaped": misshaped}
    if any(report.values()):
        log.warning("%s: non-strict load skipped %d missing, %d unexpected, %d mis-shaped keys",
                    path, len(missing), len(unexpected), len(misshaped))
    return report


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return f"[{shown}{f', ... (+{more} more)' if more > 0 else ''}]"
