"""Public model families in their published checkpoint layouts: ULIP-2, OpenShape, Uni3D.

Every file here is built from the documented key names and shapes (the shared notes on public 3D
CLIP models and the authors' code), filled with random values, and saved the way the authors
save theirs; nothing is taken from this package's own modules.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from blendclip_ros.errors import CheckpointError
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.model.checkpoint import (
    convert_checkpoint,
    detect_format,
    load_checkpoint,
)
from blendclip_ros.model.interface import PointModel
from blendclip_ros.pipeline import ObjectClassifier
from blendclip_ros.text.bank import TextBank


def _bn(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (width,), f"{prefix}.bias": (width,), f"{prefix}.running_mean": (width,),
            f"{prefix}.running_var": (width,), f"{prefix}.num_batches_tracked": ()}


def _linear(prefix: str, out: int, inp: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (out, inp), **({f"{prefix}.bias": (out,)} if bias else {})}


def _tokenizer(prefix: str, channels: int, out: int) -> dict[str, tuple[int, ...]]:
    """PointBERT's mini-PointNet (ULIP ``dvae.Encoder``, Uni3D ``Encoder``)."""
    return {f"{prefix}.first_conv.0.weight": (128, channels, 1), f"{prefix}.first_conv.0.bias": (128,),
            **_bn(f"{prefix}.first_conv.1", 128),
            f"{prefix}.first_conv.3.weight": (256, 128, 1), f"{prefix}.first_conv.3.bias": (256,),
            f"{prefix}.second_conv.0.weight": (512, 512, 1), f"{prefix}.second_conv.0.bias": (512,),
            **_bn(f"{prefix}.second_conv.1", 512),
            f"{prefix}.second_conv.3.weight": (out, 512, 1), f"{prefix}.second_conv.3.bias": (out,)}


def ulip2_layout(channels: int = 6, depth: int = 18, embed: int = 1280) -> dict[str, tuple[int, ...]]:
    """ULIP-2 PointBERT (``ULIP_2_PointBERT_10k_colored_pointclouds.yaml``): width 384, 6 heads."""
    keys = {**_tokenizer("point_encoder.encoder", channels, 256),
            **_linear("point_encoder.reduce_dim", 384, 256),
            "point_encoder.cls_token": (1, 1, 384), "point_encoder.cls_pos": (1, 1, 384),
            **_linear("point_encoder.pos_embed.0", 128, 3), **_linear("point_encoder.pos_embed.2", 384, 128),
            "point_encoder.norm.weight": (384,), "point_encoder.norm.bias": (384,),
            "pc_projection": (768, embed), "logit_scale": ()}
    for i in range(depth):
        block = f"point_encoder.blocks.blocks.{i}"
        keys.update({f"{block}.norm1.weight": (384,), f"{block}.norm1.bias": (384,),
                     f"{block}.attn.qkv.weight": (1152, 384), **_linear(f"{block}.attn.proj", 384, 384),
                     f"{block}.norm2.weight": (384,), f"{block}.norm2.bias": (384,),
                     **_linear(f"{block}.mlp.fc1", 1536, 384), **_linear(f"{block}.mlp.fc2", 384, 1536)})
    return keys


def ppat_layout(dim: int, depth: int, mlp: int, sa_dim: int, prefix: str = "ppat.") -> dict[str, tuple[int, ...]]:
    """OpenShape ``PointPatchTransformer`` (``src/models/ppat.py``), 8 heads of 64, 6 input features."""
    keys = {f"{prefix}cls_token": (dim,)}
    for i, (inp, out) in enumerate([(9, 64), (64, 64), (64, sa_dim)]):
        keys.update({f"{prefix}sa.mlp_convs.{i}.weight": (out, inp, 1, 1), f"{prefix}sa.mlp_convs.{i}.bias": (out,),
                     **_bn(f"{prefix}sa.mlp_bns.{i}", out)})
    keys.update({f"{prefix}lift.0.weight": (dim, sa_dim + 3, 1), f"{prefix}lift.0.bias": (dim,),
                 f"{prefix}lift.2.weight": (dim,), f"{prefix}lift.2.bias": (dim,)})
    for i in range(depth):
        layer = f"{prefix}transformer.layers.{i}"
        keys.update({f"{layer}.0.norm.weight": (dim,), f"{layer}.0.norm.bias": (dim,),
                     f"{layer}.0.fn.to_qkv.weight": (3 * 512, dim), **_linear(f"{layer}.0.fn.to_out.0", dim, 512),
                     f"{layer}.1.norm.weight": (dim,), f"{layer}.1.norm.bias": (dim,),
                     **_linear(f"{layer}.1.fn.net.0", mlp, dim), **_linear(f"{layer}.1.fn.net.3", dim, mlp)})
    return keys


def uni3d_tiny_layout() -> dict[str, tuple[int, ...]]:
    """Uni3D-ti: tokenizer to 512, timm ``eva02_tiny_patch14_224`` (192 wide, 12 blocks, 3 heads,
    packed SwiGLU ``mlp.fc1`` [1024, 192] / ``mlp.fc2`` [192, 512]), 1024-d projection."""
    p = "point_encoder."
    keys = {**_tokenizer(f"{p}encoder", 6, 512), **_linear(f"{p}encoder2trans", 192, 512),
            **_linear(f"{p}trans2embed", 1024, 192), f"{p}cls_token": (1, 1, 192), f"{p}cls_pos": (1, 1, 192),
            **_linear(f"{p}pos_embed.0", 128, 3), **_linear(f"{p}pos_embed.2", 192, 128),
            f"{p}visual.cls_token": (1, 1, 192), f"{p}visual.pos_embed": (1, 257, 192),
            f"{p}visual.patch_embed.proj.weight": (192, 3, 14, 14), f"{p}visual.patch_embed.proj.bias": (192,),
            f"{p}visual.fc_norm.weight": (192,), f"{p}visual.fc_norm.bias": (192,), "logit_scale": ()}
    for i in range(12):
        block = f"{p}visual.blocks.{i}"
        keys.update({f"{block}.norm1.weight": (192,), f"{block}.norm1.bias": (192,),
                     f"{block}.attn.q_bias": (192,), f"{block}.attn.v_bias": (192,),
                     f"{block}.attn.qkv.weight": (576, 192), **_linear(f"{block}.attn.proj", 192, 192),
                     f"{block}.norm2.weight": (192,), f"{block}.norm2.bias": (192,),
                     **_linear(f"{block}.mlp.fc1", 1024, 192), **_linear(f"{block}.mlp.fc2", 192, 512)})
    return keys


def random_state(layout: dict[str, tuple[int, ...]], seed: int,
                 dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = (torch.rand(shape, generator=gen) + 0.5).to(dtype)
        elif key.endswith(("norm.weight", "norm1.weight", "norm2.weight", "lift.2.weight")) or key == "logit_scale":
            state[key] = (1 + 0.1 * torch.randn(shape, generator=gen)).to(dtype)
        else:
            state[key] = (torch.randn(shape, generator=gen) * 0.05).to(dtype)
    return state


def ulip2_file(path, channels: int = 6, drop: str | None = None):
    state = random_state(ulip2_layout(channels), 1)
    if drop:
        del state[drop]
    torch.save({"epoch": 10, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path


def openshape_file(path):
    state = random_state({**ppat_layout(512, 12, 1536, 256), **_linear("proj", 1280, 512)}, 2)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()},
                "logit_scale": {"module.logit_scale": torch.tensor(4.2)},
                "text_proj": {}, "image_proj": {}, "epoch": 3, "step": 9000, "best_lvis_acc": 0.468}, path)
    return path


def uni3d_file(path, extra: dict | None = None):
    state = random_state(uni3d_tiny_layout(), 3, torch.float16)
    state.update(extra or {})
    torch.save({"module": state}, path)
    return path


CLOUD6 = torch.cat([torch.randn(700, 3, generator=torch.Generator().manual_seed(5)) * 0.3,
                    torch.full((700, 3), 0.4)], 1)


def _encode(model, cloud=CLOUD6):
    with torch.inference_mode():
        return model.encode([cloud], normalize=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {"ulip2": ulip2_file(root / "ULIP-2-PointBERT-10k-colored-pc-pretrained.pt"),
            "openshape": openshape_file(root / "openshape-vitg14.pt"),
            "uni3d": uni3d_file(root / "uni3d-ti.pt")}


@pytest.mark.parametrize(("name", "fmt", "family", "variant", "dim", "tower", "up", "channels"), [
    ("ulip2", "ulip2_pointbert", "ulip2_pointbert", "xyzrgb", 1280, "ViT-bigG-14", "y", 6),
    ("openshape", "openshape_ppat", "openshape_ppat", "vitg14", 1280, "ViT-bigG-14", "z", 6),
    ("uni3d", "uni3d", "uni3d", "tiny", 1024, "EVA02-E-14-plus", "y", 6),
])
def test_published_layouts_load_strictly_with_their_conventions(files, name, fmt, family, variant, dim, tower,
                                                                up, channels):
    path = files[name]
    assert detect_format(path) == fmt
    loaded = load_checkpoint(path)
    assert (loaded.family, loaded.variant) == (family, variant)
    assert isinstance(loaded.model, PointModel) and not loaded.model.training
    assert loaded.model.config.embed_dim == dim and loaded.text_tower["model"] == tower
    assert loaded.text_space.startswith(f"open_clip:{tower}:")
    convention = loaded.convention
    assert (convention.up_axis, convention.channels, convention.num_points, convention.gray) == (up, channels,
                                                                                                 10000, 0.4)
    assert convention.resample_up and convention.order == "sample_then_normalize"
    assert loaded.metadata["load_report"] == {"missing": [], "unexpected": [], "misshaped": []}
    embedding = _encode(loaded.model)
    assert embedding.shape == (1, dim) and torch.isfinite(embedding).all()
    state = torch.load(path, weights_only=False)
    root = state.get("state_dict", state.get("module"))
    first = next(k for k in root if "first_conv.0.weight" in k or "mlp_convs.0.weight" in k)
    model_key = first.removeprefix("module.")
    torch.testing.assert_close(loaded.model.state_dict()[model_key], root[first].float())


def test_uni3d_half_precision_file_is_float32_and_head_keys_are_part_of_the_layout(tmp_path):
    loaded = load_checkpoint(uni3d_file(tmp_path / "ti.pt"))
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert sum(p.numel() for p in loaded.model.parameters()) == 6_384_449  # Uni3D-ti's 6.38 M
    with_head = uni3d_file(tmp_path / "head.pt", {"point_encoder.visual.head.weight": torch.zeros(1000, 192),
                                                  "point_encoder.visual.head.bias": torch.zeros(1000)})
    assert load_checkpoint(with_head).encoder_config.head_classes == 1000


def test_openshape_demo_layouts_and_logit_scale(tmp_path, files):
    g14 = load_checkpoint(files["openshape"])
    assert float(g14.model.logit_scale.detach()) == pytest.approx(4.2)
    assert round(sum(p.numel() for p in g14.model.parameters()) / 1e6, 2) == 32.33  # as the 388 MB file
    assert (g14.encoder_config.patches, g14.encoder_config.radius, g14.encoder_config.samples) == (384, 0.2, 64)
    l14 = random_state({**ppat_layout(512, 12, 1024, 128, "pc_encoder.ppat."),
                        **_linear("pc_encoder.proj", 768, 512)}, 4)
    torch.save(l14, tmp_path / "l14.pt")
    b32 = random_state(ppat_layout(512, 12, 1024, 128, "pc_encoder."), 5)
    torch.save(b32, tmp_path / "b32.pt")
    for name, variant, dim, tower in (("l14", "vitl14", 768, "ViT-L-14"), ("b32", "vitb32", 512, "ViT-B-32")):
        loaded = load_checkpoint(tmp_path / f"{name}.pt")
        assert loaded.format == "openshape_pc_encoder" and loaded.variant == variant
        assert loaded.text_tower["model"] == tower and loaded.text_tower["pretrained"] == "openai"
        assert (loaded.encoder_config.patches, loaded.encoder_config.samples) == (64, 256)
        assert _encode(loaded.model).shape == (1, dim)


def test_ulip2_xyz_file_and_the_pointnet2_conventions(tmp_path, files):
    loaded = load_checkpoint(files["ulip2"])
    config = loaded.encoder_config
    assert (config.depth, config.in_channels, config.dynamic_groups, config.fps_skip_near_origin) == (18, 6, False,
                                                                                                        1e-3)
    xyz = load_checkpoint(ulip2_file(tmp_path / "ULIP-2-PointBERT-8k-xyz.pt", channels=3))
    assert xyz.format == "ulip_pointbert" and (xyz.family, xyz.variant) == ("ulip2_pointbert", "xyz")
    assert xyz.text_tower is None and xyz.convention.channels == 3 and xyz.convention.up_axis == "y"
    assert _encode(xyz.model, CLOUD6[:, :3]).shape == (1, 1280)


@pytest.mark.parametrize("name, drop, family", [
    ("ulip2", "module.point_encoder.blocks.blocks.17.mlp.fc2.bias", "ULIP-2 PointBERT"),
    ("openshape", "module.ppat.transformer.layers.11.1.fn.net.3.weight", "OpenShape point-patch transformer"),
    ("uni3d", "point_encoder.visual.blocks.3.attn.v_bias", "Uni3D"),
])
def test_partial_files_give_one_error_naming_the_family_and_the_keys(tmp_path, files, name, drop, family):
    checkpoint = torch.load(files[name], weights_only=False)
    root = checkpoint.get("state_dict", checkpoint.get("module"))
    del root[drop]
    path = tmp_path / "partial.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert family in message and drop.removeprefix("module.") in message and "\n" not in message


def test_sparseconv_and_unknown_layouts_are_refused(tmp_path):
    torch.save({"state_dict": {"module.conv0p1s1.kernel": torch.zeros(125, 6, 32)}}, tmp_path / "spconv.pt")
    with pytest.raises(CheckpointError, match="MinkowskiEngine"):
        load_checkpoint(tmp_path / "spconv.pt")
    torch.save({"weights": {"a": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="unrecognised layout.*Uni3D"):
        load_checkpoint(tmp_path / "other.pt")


def test_converted_files_name_their_family_and_give_the_same_embeddings(tmp_path, files):
    from blendclip_ros.model.checkpoint import main

    assert main([str(files["openshape"]), str(tmp_path / "openshape.safetensors")]) == 0
    assert load_checkpoint(tmp_path / "openshape.safetensors").variant == "vitg14"
    assert main([str(files["openshape"]), str(tmp_path / "openshape.pt")]) == 2
    for name in ("ulip2", "uni3d"):
        original = load_checkpoint(files[name])
        target = convert_checkpoint(files[name], tmp_path / f"{name}.safetensors")
        with safe_open(str(target), framework="pt") as handle:
            document = json.loads(handle.metadata()["blendclip_ros"])
        assert document["family"] == original.family and document["input"]["up_axis"] == "y"
        converted = load_checkpoint(target)
        assert converted.family == original.family and converted.convention == original.convention
        assert converted.text_space == original.text_space
        torch.testing.assert_close(_encode(converted.model), _encode(original.model), atol=0, rtol=0)


def test_encode_crops_applies_the_family_convention(files, nuscenes_frame):
    loaded = load_checkpoint(files["uni3d"])
    bank = TextBank(("car", "pedestrian"), torch.nn.functional.normalize(torch.randn(2, 1024), dim=-1),
                    "test", "none", loaded.text_space)
    pipe = ObjectClassifier(loaded.model, bank, max_points=512, min_points=1)
    boxes = Boxes.from_mmdet3d(nuscenes_frame.boxes)
    index_lists = pipe.crop(nuscenes_frame.points, boxes)
    keep = [i for i, idx in enumerate(index_lists) if len(idx) >= 1][:4]
    sub = boxes.subset(keep)
    embeddings = pipe.encode_crops(nuscenes_frame.points, sub, [index_lists[i] for i in keep])
    from blendclip_ros.geometry.preprocess import preprocess_crops
    crops = preprocess_crops(nuscenes_frame.points, [index_lists[i] for i in keep], sub, max_points=512,
                             convention=loaded.convention)
    assert all(c.shape == (512, 6) for c in crops)  # resampled up, gray 0.4 colour
    np.testing.assert_array_equal(crops[0][:, 3:], 0.4)
    with torch.inference_mode():
        expected = loaded.model.encode([torch.from_numpy(c) for c in crops])
    torch.testing.assert_close(embeddings, expected)
