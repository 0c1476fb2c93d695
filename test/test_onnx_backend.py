"""ONNX export of the dense encoder and the onnxruntime backend: embeddings equal to torch within 1e-4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from blendclip_ros.cli.export import main as export_main  # noqa: E402
from blendclip_ros.errors import ConfigError  # noqa: E402
from blendclip_ros.geometry.boxes import Boxes  # noqa: E402
from blendclip_ros.model.checkpoint import load_checkpoint  # noqa: E402
from blendclip_ros.model.config import PointBertConfig  # noqa: E402
from blendclip_ros.model.onnx_backend import (OnnxPointModel, cached_onnx, export_onnx, providers_for,  # noqa: E402
                                              with_backend)
from blendclip_ros.model.pointbert import BlendClipPointModel  # noqa: E402
from blendclip_ros.pipeline import ObjectClassifier  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "data" / "checkpoints" / "blendclip_tiny_sim.safetensors"
SIM_PROMPTS = REPO / "data" / "checkpoints" / "sim_classes.yaml"
TOLERANCE = 1e-4
#: Point counts that cover one patch, the < group_size repeat path, every bucket and the cap.
SIZES = (1, 7, 31, 32, 33, 100, 257, 1000, 3000, 8192)


def random_model(name: str, seed: int = 0) -> BlendClipPointModel:
    """A random-init model with non-trivial BatchNorm statistics (eval mode)."""
    torch.manual_seed(seed)
    model = BlendClipPointModel(PointBertConfig.named(name)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def clouds(seed: int = 1, sizes=SIZES) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, generator=generator) * torch.rand(3, generator=generator) for n in sizes]


def max_difference(model, onnx_model, inputs) -> float:
    with torch.inference_mode():
        expected = model.encode(inputs, normalize=False)
    got = onnx_model.encode(inputs, normalize=False)
    assert got.shape == expected.shape
    return float((got - expected).abs().max())


@pytest.mark.parametrize("name", ["tiny", "full"])
def test_random_encoder_matches_torch_on_every_batch_and_patch_count(name, tmp_path):
    model = random_model(name)
    onnx_model = OnnxPointModel(export_onnx(model, tmp_path / f"{name}.onnx"))
    assert onnx_model.config == model.config
    assert float(onnx_model.logit_scale) == pytest.approx(float(model.logit_scale.detach()))
    assert max_difference(model, onnx_model, clouds()) < TOLERANCE
    # dynamic axes: other batch sizes and patch counts than the export example, batch of one
    assert max_difference(model, onnx_model, clouds(2, (5000, 64))) < TOLERANCE
    assert max_difference(model, onnx_model, clouds(3, (700,))) < TOLERANCE
    normalised = onnx_model.encode(clouds(4, (50, 60)))
    np.testing.assert_allclose(normalised.norm(dim=1).numpy(), 1.0, atol=1e-6)
    assert onnx_model.encode([]).shape == (0, model.config.embed_dim)


def test_the_graph_has_dynamic_batch_and_patch_axes_and_no_grouping(tmp_path):
    import onnx

    proto = onnx.load(str(export_onnx(random_model("tiny"), tmp_path / "tiny.onnx")))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims == {"patches": ["batch", "patches", 32, 3], "centres": ["batch", "patches", 3],
                    "valid": ["batch", "patches"]}
    ops = {node.op_type for node in proto.graph.node}
    assert "TopK" not in ops and "ArgMax" not in ops  # kNN and FPS stay outside the graph


def test_shipped_checkpoint_matches_torch(tmp_path):
    model = load_checkpoint(CHECKPOINT).model.eval()
    onnx_model = OnnxPointModel(export_onnx(model, tmp_path / "sim.onnx"))
    assert max_difference(model, onnx_model, clouds(5)) < TOLERANCE


def test_backend_selection_and_providers(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = random_model("tiny")
    assert with_backend(model, "torch") is model
    first = cached_onnx(model)
    assert first.parent == tmp_path / "blendclip_ros" / "onnx" and cached_onnx(model) == first
    assert cached_onnx(random_model("tiny", seed=1)) != first  # other weights, other file
    onnx_model = with_backend(model, "onnxruntime", threads=2)
    assert onnx_model.path == first and onnx_model.providers == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="backend"):
        with_backend(model, "tensorflow")
    from blendclip_ros.model.uni3d import Uni3DConfig, Uni3DPointModel

    with pytest.raises(ConfigError, match="BlendCLIP PointBERT encoder only, not a Uni3DPointModel"):
        with_backend(Uni3DPointModel(Uni3DConfig()), "onnxruntime")
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    cuda = providers_for("cuda")
    assert cuda[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in cuda) == ("CUDAExecutionProvider" in ort.get_available_providers())
    with pytest.raises(ConfigError, match="no file"):
        OnnxPointModel(tmp_path / "missing.onnx")


def test_pipeline_on_onnxruntime_labels_like_torch(nuscenes_frame, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    boxes = Boxes.from_mmdet3d(nuscenes_frame.boxes)
    results = {}
    for backend in ("torch", "onnxruntime"):
        classifier = ObjectClassifier.from_config(CHECKPOINT, prompts=SIM_PROMPTS, min_points=3,
                                                  backend=backend, cache_dir=tmp_path / "text")
        results[backend] = classifier.classify(nuscenes_frame.points[:, :3], boxes)
    assert "onnxruntime" in classifier.description
    encoded = [(a, b) for a, b in zip(results["torch"], results["onnxruntime"]) if a.prediction.top_k]
    assert len(encoded) > 20
    for a, b in encoded:
        assert a.num_points == b.num_points and a.prediction.label == b.prediction.label
        assert a.prediction.score == pytest.approx(b.prediction.score, abs=1e-4)


def test_export_cli_writes_a_checked_file_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "sim.onnx"
    assert export_main([str(out), "--checkpoint", str(CHECKPOINT)]) == 0
    assert "max |difference|" in capsys.readouterr().err
    meta = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert json.loads(meta["blendclip.config"]) == load_checkpoint(CHECKPOINT).model.config.to_dict()
    assert export_main([str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert export_main([str(tmp_path / "x.pt")]) == 2
    assert export_main([str(tmp_path / "y.onnx"), "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("blendclip-export: error:") for line in err)


def test_classify_cli_backend_flag(nuscenes_frame, tmp_path):
    rows = nuscenes_frame.boxes[:8]
    (tmp_path / "boxes.json").write_text(json.dumps([
        {"id": f"b{i}", "center": r[:3].tolist(), "size": r[3:6].tolist(), "yaw": float(r[6])}
        for i, r in enumerate(rows)]))
    np.save(tmp_path / "points.npy", nuscenes_frame.points[:, :3].astype(np.float32))
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        done = subprocess.run([sys.executable, "-m", "blendclip_ros.cli.classify", "--points",
                               str(tmp_path / "points.npy"), "--boxes", str(tmp_path / "boxes.json"),
                               "--checkpoint", str(CHECKPOINT), "--prompts", str(SIM_PROMPTS),
                               "--backend", backend], capture_output=True, text=True, timeout=300, cwd=REPO,
                              env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        outputs[backend] = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["label"] for o in outputs["torch"]] == [o["label"] for o in outputs["onnxruntime"]]
    for a, b in zip(outputs["torch"], outputs["onnxruntime"]):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
