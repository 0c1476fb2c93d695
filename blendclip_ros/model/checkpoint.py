"""Load and save point-model checkpoints.

Formats (the value of :func:`detect_format`):

* ``"blendclip_release"``: BlendCLIP ``torch.save`` dict, ``state_dict`` with ``module.``-prefixed
  ``point_encoder.*``, ``pc_projection``, ``logit_scale`` and the frozen ``open_clip_model.*``;
* ``"ulip_pointbert"``: ULIP-1 ``checkpoint_pointbert.pt`` (point encoder + 768x512 projection in
  SLIP's embedding space, plus the SLIP towers, which are ignored); an initialisation only;
* ``"pointbert_pretrained"``: ULIP's ``point_bert_pretrained.pt`` (``base_model`` with
  ``transformer_q.*``); encoder-only initialisation, projection and logit scale freshly initialised;
* ``"ulip2_pointbert"``: ULIP-2's xyz+rgb PointBERT (``state_dict``, ``module.``-prefixed
  ``point_encoder.*`` with a 6-channel tokenizer, depth 18, ``pc_projection`` 768x1280);
* ``"openshape_ppat"``: OpenShape's point-patch transformer as trained (``state_dict`` with
  ``module.ppat.*``, ``module.proj.*``; logit scale at ``ckpt['logit_scale']``);
* ``"openshape_pc_encoder"``: the OpenShape demo's ViT-L/14 and ViT-B/32 files (flat
  ``pc_encoder.*``: ``ppat.*`` + ``proj.*``, or the bare transformer);
* ``"uni3d"``: Uni3D's DeepSpeed file (``module`` with ``point_encoder.*``, half precision);
* ``"blendclip_ros"``: this project's single ``.safetensors`` file whose metadata entry
  ``"blendclip_ros"`` holds a JSON document with the family, encoder config, input convention,
  text tower and training info (:func:`convert_checkpoint` writes any format as one).

The family (``blendclip``, ``ulip2_pointbert``, ``openshape_ppat``, ``uni3d``; see
``model.families``) is detected from the keys and decides the model class, its input convention
and the text tower it was aligned to. OpenShape's SparseConv files need MinkowskiEngine and are
refused. Loading is strict by default: missing, unexpected or mis-shaped keys raise one
:class:`CheckpointError` naming the family and the keys.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from blendclip_ros.errors import CheckpointError, ConfigError
from blendclip_ros.geometry.preprocess import InputConvention
from blendclip_ros.model import families
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel
from blendclip_ros.model.ppat import OpenShapePointModel, PPATConfig
from blendclip_ros.model.uni3d import SCALES, Uni3DConfig, Uni3DPointModel

log = logging.getLogger(__name__)

FORMAT_NAME = "blendclip_ros"
FORMAT_VERSION = 1
RELEASE, ULIP, POINTBERT_PRETRAINED, PROJECT = (
    "blendclip_release", "ulip_pointbert", "pointbert_pretrained", FORMAT_NAME)
ULIP2, OPENSHAPE, OPENSHAPE_DEMO, UNI3D = (
    "ulip2_pointbert", "openshape_ppat", "openshape_pc_encoder", "uni3d")
TITLES = {families.BLENDCLIP: "BlendCLIP PointBERT", families.ULIP2: "ULIP-2 PointBERT",
          families.OPENSHAPE: "OpenShape point-patch transformer", families.UNI3D: "Uni3D"}
PointModelType = BlendClipPointModel | OpenShapePointModel | Uni3DPointModel
_CONFIGS = {families.BLENDCLIP: PointBertConfig, families.ULIP2: PointBertConfig,
            families.OPENSHAPE: PPATConfig, families.UNI3D: Uni3DConfig}
_MODELS = {families.BLENDCLIP: BlendClipPointModel, families.ULIP2: BlendClipPointModel,
           families.OPENSHAPE: OpenShapePointModel, families.UNI3D: Uni3DPointModel}
#: OpenShape's ``make(cfg)`` scalings: (dim, depth, mlp, sa_dim) -> (patches, radius, samples).
_PPAT_GROUPING = {(256, 6, 1024, 96): (64, 0.4, 256), (512, 6, 1024, 128): (64, 0.4, 256),
                  (512, 12, 1024, 128): (128, 0.35, 128), (512, 12, 1536, 256): (384, 0.2, 64),
                  (768, 12, 2304, 256): (512, 0.2, 64), (768, 24, 3072, 256): (512, 0.2, 64)}
#: The OpenShape demo's L/14 and B/32 encoders group 64 patches of 256 points within 0.4.
_PPAT_DEMO_GROUPING = (64, 0.4, 256)

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

    model: PointModelType
    encoder_config: PointBertConfig | PPATConfig | Uni3DConfig
    text_tower: dict[str, Any] | None
    metadata: dict[str, Any]
    format: str
    #: The release's frozen OpenCLIP weights (``open_clip_model.`` stripped), when requested.
    text_state_dict: dict[str, Tensor] | None = field(default=None, repr=False)
    family: str = families.BLENDCLIP
    variant: str = ""

    @property
    def convention(self) -> InputConvention:
        """How crops are prepared for this model (also ``model.input_convention``)."""
        return self.model.input_convention

    @property
    def text_space(self) -> str:
        """The text space of the tower the model was aligned to ("" when unknown)."""
        from blendclip_ros.text.towers import text_space_of

        return text_space_of(self.text_tower) if self.text_tower else ""


def save_checkpoint(path: str | os.PathLike, model: PointModelType, *,
                    text_tower: Mapping[str, Any] | None, training: Mapping[str, Any] | None = None,
                    labels: list[str] | None = None, family: str | None = None,
                    variant: str = "") -> Path:
    """Write ``model`` as one ``.safetensors`` file whose metadata says how to use it.

    ``family`` defaults to the model class's (a PointBERT is ``blendclip``); the model's
    ``input_convention`` is stored with it.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"path: expected a .safetensors file name, got {path.name!r}")
    family = family or _family_of(model)
    tower_dim = (text_tower or {}).get("embed_dim")
    if tower_dim is not None and tower_dim != model.config.embed_dim:
        raise CheckpointError(f"text_tower.embed_dim: {tower_dim} != the model's projection "
                              f"dimension {model.config.embed_dim}")
    document: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "family": family,
                                "variant": variant, "encoder": model.config.to_dict(),
                                "input": model.input_convention.to_dict(),
                                "text_tower": dict(text_tower) if text_tower is not None else None,
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


def convert_checkpoint(source: str | os.PathLike, target: str | os.PathLike, *,
                       trust_pickle: bool = False) -> Path:
    """Any supported checkpoint as a project ``.safetensors`` file (family named in its JSON)."""
    loaded = load_checkpoint(source, trust_pickle=trust_pickle)
    training = {key: loaded.metadata[key] for key in ("epoch", "best_acc1") if key in loaded.metadata}
    return save_checkpoint(target, loaded.model, text_tower=loaded.text_tower,
                           training={"converted_from": loaded.format, **training},
                           family=loaded.family, variant=loaded.variant)


def _family_of(model: PointModelType) -> str:
    if isinstance(model, OpenShapePointModel):
        return families.OPENSHAPE
    if isinstance(model, Uni3DPointModel):
        return families.UNI3D
    return families.BLENDCLIP


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                    strict: bool = True, overrides: Mapping[str, Any] | None = None,
                    keep_text_weights: bool = False,
                    trust_pickle: bool = False) -> LoadedCheckpoint:
    """Load any supported format into its family's point model, in eval mode on ``device``.

    The model's ``input_convention`` is the family's (points, order, up-axis, colour).
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
    if kind in (OPENSHAPE, OPENSHAPE_DEMO):
        loaded = _load_openshape(checkpoint, kind, path, strict, overrides)
    elif kind == UNI3D:
        loaded = _load_uni3d(checkpoint, path, strict, overrides)
    else:
        loaded = _load_pointbert(checkpoint, kind, path, strict, overrides, keep_text_weights)
    loaded.model.to(device).eval()
    return loaded


def _load_pointbert(checkpoint: Mapping[str, Any], kind: str, path: Path, strict: bool,
                    overrides: Mapping[str, Any] | None, keep_text_weights: bool) -> LoadedCheckpoint:
    """BlendCLIP release, ULIP-1/ULIP-2 xyz, ULIP-2 xyz+rgb and Point-BERT pre-training files."""
    family, variant = families.BLENDCLIP, "release" if kind == RELEASE else ""
    if kind == POINTBERT_PRETRAINED:
        state, metadata = _pointbert_pretrained_state(checkpoint["base_model"])
        allow_missing = _OPTIONAL_BUFFERS | {"pc_projection", "logit_scale"}
        metadata["initialised"] = ["pc_projection", "logit_scale"]
        text_tower, text_state = None, None
    else:
        state, text_state, metadata = _split_release_state(_strip_module(checkpoint["state_dict"]),
                                                           kind)
        allow_missing = _OPTIONAL_BUFFERS if kind in (ULIP, ULIP2) else frozenset()
        text_tower = families.text_tower_for(families.BLENDCLIP, "release") if kind == RELEASE else None
        if kind == ULIP:
            family, variant = families.ULIP2, "xyz"
            metadata["note"] = ("xyz PointBERT (ULIP-1 or ULIP-2 xyz): SLIP embedding space, not an "
                                "open_clip tower; classify with a prompt bank from that space")
        elif kind == ULIP2:
            family, variant = families.ULIP2, "xyzrgb"
            text_tower = families.text_tower_for(family, variant)
        for key in ("epoch", "best_acc1"):
            if isinstance(checkpoint.get(key), (int, float)):
                metadata[key] = checkpoint[key]
    ulip2 = {"dynamic_groups": False, "fps_skip_near_origin": 1e-3, "max_points": 10000}
    config = infer_encoder_config(state, {**(ulip2 if kind == ULIP2 else {}), **(overrides or {})})
    model = BlendClipPointModel(config)
    convention = families.convention_for(family, variant)
    if convention is not None:
        model.input_convention = convention.replace(num_points=min(convention.num_points,
                                                                   config.max_points))
    metadata["load_report"] = _fit_state_dict(model, state, allow_missing, strict, path, family)
    return LoadedCheckpoint(model=model, encoder_config=config, text_tower=text_tower,
                            metadata=metadata, format=kind, family=family, variant=variant,
                            text_state_dict=text_state if keep_text_weights else None)


def _load_openshape(checkpoint: Mapping[str, Any], kind: str, path: Path, strict: bool,
                    overrides: Mapping[str, Any] | None) -> LoadedCheckpoint:
    """OpenShape's trained files (``module.ppat``) and the demo's ``pc_encoder`` files."""
    metadata: dict[str, Any] = {}
    if kind == OPENSHAPE:
        state = _strip_module(checkpoint["state_dict"])
        scale = checkpoint.get("logit_scale")
        if isinstance(scale, Mapping):
            scale = next((v for k, v in scale.items() if k.endswith("logit_scale")), None)
        if isinstance(scale, Tensor) and "logit_scale" not in state:
            state["logit_scale"] = scale.reshape(())
        metadata["ignored"] = sorted(k for k in checkpoint if k not in ("state_dict", "logit_scale"))
    else:
        state = {k.removeprefix("pc_encoder."): v for k, v in checkpoint.items()
                 if k.startswith("pc_encoder.")}
        if not any(k.startswith("ppat.") for k in state):  # ViT-B/32: the bare transformer
            state = {f"ppat.{k}": v for k, v in state.items()}
        metadata["ignored"] = sorted(k for k in checkpoint if not k.startswith("pc_encoder."))
    state = {k: v.float() if isinstance(v, Tensor) and v.is_floating_point() else v
             for k, v in state.items()}
    config = _ppat_config(state, kind, path, overrides)
    variant = {1280: "vitg14", 768: "vitl14"}.get(config.embed_dim, "vitb32" if not config.projected else "")
    model = OpenShapePointModel(config)
    allow_missing = frozenset({"logit_scale"})
    metadata["load_report"] = _fit_state_dict(model, state, allow_missing, strict, path, families.OPENSHAPE)
    if "logit_scale" not in state:
        metadata["initialised"] = ["logit_scale"]
    text_tower = families.text_tower_for(families.OPENSHAPE, variant) if variant else None
    return LoadedCheckpoint(model=model, encoder_config=config, text_tower=text_tower,
                            metadata=metadata, format=kind, family=families.OPENSHAPE, variant=variant)


def _ppat_config(state: Mapping[str, Tensor], kind: str, path: Path,
                 overrides: Mapping[str, Any] | None) -> PPATConfig:
    needed = ["ppat.lift.0.weight", "ppat.sa.mlp_convs.0.weight", "ppat.transformer.layers.0.0.fn.to_qkv.weight",
              "ppat.transformer.layers.0.1.fn.net.0.weight"]
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f"{path}: OpenShape point-patch transformer: cannot infer the encoder, "
                              f"missing {_listing(missing)}")
    dim, lift_in = state["ppat.lift.0.weight"].shape[:2]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"ppat\.transformer\.layers\.(\d+)\.", k)))
    mlp = state["ppat.transformer.layers.0.1.fn.net.0.weight"].shape[0]
    sa_dim = lift_in - 3
    grouping = (_PPAT_DEMO_GROUPING if kind == OPENSHAPE_DEMO
                else _PPAT_GROUPING.get((dim, depth, mlp, sa_dim), _PPAT_DEMO_GROUPING))
    projected = "proj.weight" in state
    values = dict(dim=dim, depth=depth, heads=state["ppat.transformer.layers.0.0.fn.to_qkv.weight"].shape[0] // 192,
                  mlp_dim=mlp, sa_dim=sa_dim, in_channels=state["ppat.sa.mlp_convs.0.weight"].shape[1] - 3,
                  patches=grouping[0], radius=grouping[1], samples=grouping[2], projected=projected,
                  embed_dim=state["proj.weight"].shape[0] if projected else dim)
    try:
        return PPATConfig.from_dict({**values, **(overrides or {})})
    except ConfigError as error:
        raise CheckpointError(f"{path}: OpenShape point-patch transformer: invalid config ({error})") from None


def _load_uni3d(checkpoint: Mapping[str, Any], path: Path, strict: bool,
                overrides: Mapping[str, Any] | None) -> LoadedCheckpoint:
    """Uni3D's DeepSpeed file: ``module`` (or ``state_dict``) with ``point_encoder.*``, fp16 -> fp32."""
    root = checkpoint.get("module", checkpoint.get("state_dict", checkpoint))
    state = {k: v.float() if isinstance(v, Tensor) and v.is_floating_point() else v
             for k, v in _strip_module(root).items()}
    width_key, block = "point_encoder.cls_token", r"point_encoder\.visual\.blocks\.(\d+)\."
    if width_key not in state:
        raise CheckpointError(f"{path}: Uni3D: cannot infer the scale, missing [{width_key}]")
    width = state[width_key].shape[-1]
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(block, k))), default=-1)
    scale = next((name for name, (_, w, d) in SCALES.items() if (w, d) == (width, depth)), None)
    if scale is None and not (overrides or {}).get("scale"):
        raise CheckpointError(f"{path}: Uni3D: width {width} and depth {depth} match no scale "
                              f"({ {n: (w, d) for n, (_, w, d) in SCALES.items()} })")
    head = state.get("point_encoder.visual.head.weight")
    values = {"scale": scale, "head_classes": head.shape[0] if isinstance(head, Tensor) else 0}
    if "point_encoder.trans2embed.weight" in state:
        values["embed_dim"] = state["point_encoder.trans2embed.weight"].shape[0]
    try:
        config = Uni3DConfig.from_dict({**values, **(overrides or {})})
    except ConfigError as error:
        raise CheckpointError(f"{path}: Uni3D: invalid config ({error})") from None
    model = Uni3DPointModel(config)
    metadata = {"ignored": sorted(k for k in checkpoint if k != "module")}
    metadata["load_report"] = _fit_state_dict(model, state, frozenset(), strict, path, families.UNI3D)
    return LoadedCheckpoint(model=model, encoder_config=config, text_tower=families.text_tower_for(
        families.UNI3D, ""), metadata=metadata, format=UNI3D, family=families.UNI3D, variant=scale or "")


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
    for root_key in ("state_dict", "module"):
        if not isinstance(obj_or_path.get(root_key), Mapping):
            continue
        keys = list(_strip_module(obj_or_path[root_key]))
        if any(k.endswith(".kernel") for k in keys):
            raise CheckpointError("checkpoint: OpenShape SparseConv (MinkResNet) weights need "
                                  "MinkowskiEngine, which this package does not use; load an OpenShape "
                                  "PointBERT (point-patch transformer) file instead")
        if any(k.startswith("ppat.") for k in keys):
            return OPENSHAPE
        if any(k.startswith("point_encoder.visual.") for k in keys):
            return UNI3D
        if any(k.startswith("point_encoder.") for k in keys) and "pc_projection" in keys:
            first = _strip_module(obj_or_path[root_key]).get("point_encoder.encoder.first_conv.0.weight")
            if isinstance(first, Tensor) and first.dim() == 3 and first.shape[1] == 6:
                return ULIP2
            if any(k.startswith("open_clip_model.") for k in keys) \
                    or "point_encoder.patch_padding" in keys:
                return RELEASE
            return ULIP
    if any(isinstance(k, str) and k.startswith("pc_encoder.") for k in obj_or_path):
        return OPENSHAPE_DEMO
    if any(isinstance(k, str) and k.startswith("point_encoder.visual.") for k in obj_or_path):
        return UNI3D
    if isinstance(obj_or_path.get("base_model"), Mapping) and any(
            k.startswith("transformer_q.") for k in _strip_module(obj_or_path["base_model"])):
        return POINTBERT_PRETRAINED
    raise CheckpointError("checkpoint: unrecognised layout (top-level keys: "
                          f"{_listing(sorted(map(str, obj_or_path)))}); supported: BlendCLIP release, "
                          "ULIP/ULIP-2 PointBERT, OpenShape PointBERT, Uni3D, this project's .safetensors")


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
        in_channels=state["point_encoder.encoder.first_conv.0.weight"].shape[1],
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
    family = document.get("family", families.BLENDCLIP)
    if family not in _CONFIGS:
        raise CheckpointError(f"{path}: metadata.family {family!r} is not one of {list(_CONFIGS)}")
    config_type = _CONFIGS[family]
    try:
        config = config_type.from_dict({**document["encoder"], **(overrides or {})})
    except (ConfigError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: metadata.encoder is invalid for {TITLES[family]} ({error})") from None
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: cannot read the tensors ({error})") from None
    model = _MODELS[family](config)
    if isinstance(document.get("input"), Mapping):
        try:
            model.input_convention = InputConvention.from_dict(document["input"])
        except (ConfigError, TypeError) as error:
            raise CheckpointError(f"{path}: metadata.input is invalid ({error})") from None
    metadata = {k: v for k, v in document.items() if k not in ("encoder", "text_tower", "input")}
    metadata["load_report"] = _fit_state_dict(model, state, frozenset(), strict, path, family)
    return LoadedCheckpoint(model=model.to(device).eval(), encoder_config=config,
                            text_tower=document.get("text_tower"), metadata=metadata,
                            format=PROJECT, family=family, variant=str(document.get("variant", "")))


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
        if key.startswith("open_clip_model.") and kind in (RELEASE, ULIP2):
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


def _fit_state_dict(model: PointModelType, state: Mapping[str, Tensor], allow_missing: frozenset[str],
                    strict: bool, path: Path, family: str = families.BLENDCLIP) -> dict[str, list[str]]:
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
        raise CheckpointError(f"{path}: {TITLES[family]} state dict does not fit the model: "
                              + "; ".join(problems))
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


def main(argv: list[str] | None = None) -> int:
    """``python -m blendclip_ros.model.checkpoint SOURCE TARGET.safetensors``: convert a checkpoint."""
    from blendclip_ros.cli.support import Parser, run_cli

    parser = Parser(prog="python -m blendclip_ros.model.checkpoint",
                    description="Convert any supported checkpoint into this project's .safetensors format.")
    parser.add_argument("source", type=Path, help="checkpoint file (release, ULIP-2, OpenShape, Uni3D, ...)")
    parser.add_argument("target", type=Path, help="output .safetensors file")
    parser.add_argument("--trust-pickle", action="store_true", help="allow arbitrary objects (trusted files only)")

    def run(args: argparse.Namespace) -> int:
        loaded = load_checkpoint(convert_checkpoint(args.source, args.target, trust_pickle=args.trust_pickle))
        print(f"{args.target}: {TITLES[loaded.family]} {loaded.variant}".rstrip())
        return 0

    return run_cli(parser.prog, parser, run, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
