"""ONNX export of the dense encoder and an onnxruntime model with the PointBERT ``encode`` interface.

The ONNX graph holds the dense part only: the mini-PointNet patch tokenizer, the positional
MLP, the transformer, the final norm, the (CLS, max-pool) readout and the projection. Sampling
and grouping (FPS, kNN) stay in torch on the caller's side, as Autoware keeps pre-processing
outside its ONNX models. Inputs have dynamic batch and patch axes:

``patches (B, P, group_size, 3)``  patch points relative to their centre
``centres (B, P, 3)``              patch centres
``valid   (B, P)``                 bool, True for real patches (each row has at least one)

and the output is ``embeddings (B, embed_dim)``, not normalised.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blendclip_ros.errors import ConfigError
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel, as_cloud_list
from blendclip_ros.model.sampling import bucket_by_size, group_counts, group_points, pad_clouds

OPSET = 18
INPUT_NAMES = ("patches", "centres", "valid")
OUTPUT_NAME = "embeddings"
#: Upper bound on tokenizer activation elements per onnxruntime call (bounded memory).
BLOCK_ELEMENTS = 1 << 24
#: Execution providers in order of preference for a CUDA device.
CUDA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class DenseEncoder(nn.Module):
    """The exportable dense part of a :class:`BlendClipPointModel` (shares its weights)."""

    def __init__(self, model: BlendClipPointModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, patches: Tensor, centres: Tensor, valid: Tensor) -> Tensor:
        encoder = self.model.point_encoder
        batch, count, size, _ = patches.shape
        tokens = encoder.reduce_dim(encoder.encoder._encode(patches.reshape(batch * count, size, 3)))
        tokens = tokens.reshape(batch, count, -1)
        tokens = torch.where(valid[..., None], tokens, encoder.patch_padding)
        x = torch.cat([encoder.cls_token.expand(batch, -1, -1), tokens], 1)
        pos = torch.cat([encoder.cls_pos.expand(batch, -1, -1), encoder.pos_embed(centres)], 1)
        mask = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)
        x = encoder.norm(encoder.blocks(x, pos, mask))
        pooled = x[:, 1:].masked_fill(~valid[..., None], -torch.inf).amax(1)
        return torch.cat([x[:, 0], pooled], -1) @ self.model.pc_projection


def dense_inputs(clouds: Sequence[Tensor], config: PointBertConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Grouped patches, centres and validity of eval-mode clouds (FPS from point 0), one row per cloud.

    Rows are padded to the largest patch count; the grouping is the one
    :meth:`PointBertEncoder.forward` uses, bucketed by point count.
    """
    lengths = torch.tensor([c.shape[0] for c in clouds], dtype=torch.long)
    counts = group_counts(lengths, config.group_size, config.max_groups)
    width = int(counts.max())
    first = clouds[0]
    patches = first.new_zeros(len(clouds), width, config.group_size, 3)
    centres = first.new_zeros(len(clouds), width, 3)
    valid = torch.zeros(len(clouds), width, dtype=torch.bool, device=first.device)
    for members in bucket_by_size(lengths):
        points, member_lengths = pad_clouds([clouds[i] for i in members.tolist()])
        neighbours, centre, ok = group_points(points, member_lengths, counts[members].to(first.device),
                                              config.group_size)
        rows = members.to(first.device)
        used = neighbours.shape[1]
        patches[rows, :used], centres[rows, :used], valid[rows, :used] = neighbours, centre, ok
    return patches, centres, valid


def dense_calls(patches: Tensor, centres: Tensor, valid: Tensor,
                config: PointBertConfig) -> Iterator[tuple[Tensor, dict[str, np.ndarray]]]:
    """Rows and session feeds per call: buckets of similar patch counts, each cut to its widest row
    and split so the tokenizer's activations stay under :data:`BLOCK_ELEMENTS`."""
    counts = valid.sum(1)
    widest = 2 * max(config.pointnet_dims)
    for members in bucket_by_size(counts + 1):
        width = int(counts[members].max())
        for rows in members.split(max(1, BLOCK_ELEMENTS // (width * config.group_size * widest))):
            yield rows, {"patches": patches[rows, :width].numpy(), "centres": centres[rows, :width].numpy(),
                         "valid": valid[rows, :width].numpy()}


def export_onnx(model: BlendClipPointModel, path: Path | str, opset: int = OPSET) -> Path:
    """Write the model's dense encoder to ``path`` (dynamic batch and patch axes) and return it.

    The model's config and logit scale are stored in the file's metadata
    (``blendclip.config``, ``blendclip.logit_scale``) so :class:`OnnxPointModel` needs nothing else.
    """
    import onnx  # noqa: PLC0415 - optional dependency (extra "onnx")

    path = Path(path)
    model = model.float().cpu().eval()
    config = model.config
    example = dense_inputs([torch.randn(2 * config.group_size, 3), torch.randn(5 * config.group_size, 3)], config)
    dynamic = {"patches": {0: "batch", 1: "patches"}, "centres": {0: "batch", 1: "patches"},
               "valid": {0: "batch", 1: "patches"}, OUTPUT_NAME: {0: "batch"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter: 5-10x faster to export than torch.export's for this graph
        # and the same ONNX operators; its deprecation notices are not for users of the file.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(DenseEncoder(model).eval(), example, str(path), input_names=list(INPUT_NAMES),
                          output_names=[OUTPUT_NAME], dynamic_axes=dynamic, opset_version=opset,
                          dynamo=False)
    proto = onnx.load(str(path))
    meta = {"blendclip.config": json.dumps(config.to_dict()),
            "blendclip.logit_scale": repr(float(model.logit_scale.detach()))}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def providers_for(device: str | torch.device) -> list[str]:
    """onnxruntime execution providers for a torch device: TensorRT/CUDA first on CUDA when present."""
    import onnxruntime as ort  # noqa: PLC0415

    available = ort.get_available_providers()
    chosen = [p for p in CUDA_PROVIDERS if p in available] if torch.device(device).type == "cuda" else []
    return chosen + ["CPUExecutionProvider"]


class OnnxPointModel:
    """An exported dense encoder run by onnxruntime behind :meth:`BlendClipPointModel.encode`.

    Grouping runs in torch on the CPU; the session runs on the providers of the device given to
    :meth:`to` (CPU until then). ``threads`` sets onnxruntime's intra-op threads (0: torch's count).
    """

    def __init__(self, path: Path | str, threads: int = 0, device: str | torch.device = "cpu") -> None:
        import onnxruntime as ort  # noqa: PLC0415

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"onnx: no file {self.path}")
        self.threads = int(threads)
        self._ort = ort
        meta = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"]).get_modelmeta()
        try:
            self.config = PointBertConfig.from_dict(json.loads(meta.custom_metadata_map["blendclip.config"]))
            self.logit_scale = torch.tensor(float(meta.custom_metadata_map["blendclip.logit_scale"]))
        except KeyError as exc:
            raise ConfigError(f"onnx: {self.path} has no {exc.args[0]} metadata (not written by "
                              "blendclip-export)") from None
        self.device = torch.device("cpu")
        self._session = self._open(self.device)

    def _open(self, device: torch.device):
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle workers sleep instead of spinning: the node shares its cores with torch (grouping),
        # DDS and other processes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return self._ort.InferenceSession(str(self.path), options, providers=providers_for(device))

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    def to(self, device: str | torch.device) -> OnnxPointModel:
        """Run on ``device``'s providers from now on (returns self, like ``nn.Module.to``)."""
        device = torch.device(device)
        if device != self.device:
            self.device, self._session = device, self._open(device)
        return self

    def eval(self) -> OnnxPointModel:
        return self

    def encode(self, clouds: Sequence[Tensor], normalize: bool = True) -> Tensor:
        """Embeddings ``(B, embed_dim)`` of ``(N_i, 3)`` clouds, on :attr:`device`."""
        config = self.config
        clouds = as_cloud_list(clouds, config.max_points, torch.empty(0))
        out = torch.zeros(len(clouds), config.embed_dim)
        if clouds:
            for rows, feeds in dense_calls(*dense_inputs(clouds, config), config):
                out[rows] = torch.from_numpy(self._session.run([OUTPUT_NAME], feeds)[0])
        out = out.to(self.device)
        return F.normalize(out, dim=-1) if normalize else out


def cached_onnx(model: BlendClipPointModel, cache_dir: Path | str | None = None) -> Path:
    """The model exported once to a cache file named by a digest of its weights and config."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensor.detach().float().cpu().numpy()).tobytes())
    folder = Path(cache_dir) if cache_dir else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) \
        / "blendclip_ros" / "onnx"
    path = folder / f"encoder-{digest.hexdigest()[:16]}-opset{OPSET}.onnx"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:  # atomic: concurrent nodes never see half a file
            os.replace(export_onnx(model, Path(tmp) / path.name), path)
    return path


BACKENDS = ("torch", "onnxruntime")


def with_backend(model: BlendClipPointModel, backend: str, threads: int = 0) -> BlendClipPointModel | OnnxPointModel:
    """``model`` itself for ``torch``; for ``onnxruntime`` its export (cached) run by onnxruntime."""
    if backend == "torch":
        return model
    if backend != "onnxruntime":
        raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if type(model) is not BlendClipPointModel:
        raise ConfigError(f"backend: onnxruntime runs the BlendCLIP PointBERT encoder only, not a "
                          f"{type(model).__name__}; use backend torch")
    onnx_model = OnnxPointModel(cached_onnx(model), threads=threads)
    if hasattr(model, "input_convention"):  # how crops are prepared for it (set by the checkpoint loader)
        onnx_model.input_convention = model.input_convention
    return onnx_model
