"""Synthetic-pool converters on small files written here in each published layout."""

from __future__ import annotations

import io
import json

import h5py
import numpy as np
import pytest
from PIL import Image

from blendclip_ros.errors import ConfigError, PointFileError
from blendclip_train.cli.convert import main as convert_main
from blendclip_train.datasets.common import y_up_to_z_up
from blendclip_train.datasets.synthetic import OPENSHAPE_EMBEDDINGS, convert
from blendclip_train.shards import ShardReader, ShardSet, embedding_path

ULIP2_PREFIX = "/export/einstein-vision/3d_vision/objaverse/render_images_split_100"


def y_up_cloud(n: int, seed: int) -> np.ndarray:
    """A tall object in y-up coordinates: its long axis is y."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)) * [0.1, 1.0, 0.2]).astype(np.float32)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_ulip2(root, uids=("a1b2", "c3d4", "e5f6"), views=3):
    """ULIP-2 Objaverse as the release reads it; the last uid has no rendered views."""
    (root / "objaverse_pc_parallel").mkdir(parents=True)
    (root / "rendered_images_split_100").mkdir()
    captions, pixels = {}, {}
    for k, uid in enumerate(uids):
        np.savez(root / "objaverse_pc_parallel" / f"{uid}_10000.npz", point_cloud=y_up_cloud(40 + k, k))
        if k == len(uids) - 1:
            continue
        with h5py.File(root / "rendered_images_split_100" / f"{uid}.hdf5", "w") as f:
            for v in range(views):
                rgba = np.random.default_rng(10 * k + v).integers(0, 255, (8, 6, 4), dtype=np.uint8)
                f[f"{v:03d}"] = rgba if v % 2 == 0 else rgba[:, :, :3].transpose(2, 0, 1)  # HWC RGBA / CHW RGB
                pixels[(uid, v)] = rgba[:, :, :3]
                key = f"{ULIP2_PREFIX}/{uid}/{v:03d}" + (".png" if v == 1 else "")
                captions[key] = [f"{uid} view {v} caption {c}" for c in range(2)]
    (root / "merged_data.json").write_text(json.dumps(captions))
    return pixels


def test_ulip2_objaverse_layout(tmp_path):
    pixels = write_ulip2(tmp_path / "objaverse")
    result = convert("ulip2", tmp_path / "objaverse", tmp_path / "out", shard_size=1)
    assert result.objects == 2 and len(result.shards) == 2 and result.skipped == {"no rendered views": 1}
    reader = ShardReader(result.shards[0])
    assert reader.domain == "synthetic" and reader.attrs["up_axis"] == "z"
    assert reader.attrs["info"]["axis_conversion"].startswith("rot_x(+90 deg)")
    sample = reader[0]
    assert sample.key == "a1b2" and sample.label == ""
    np.testing.assert_allclose(sample.points, y_up_to_z_up(y_up_cloud(40, 0)))
    assert np.abs(sample.points[:, 2]).std() > 3 * np.abs(sample.points[:, 1]).std()  # the long axis is now z
    assert sample.captions == [f"a1b2 view {v} caption {c}" for v in range(3) for c in range(2)]
    assert sample.meta == {"uid": "a1b2", "views": ["000", "001", "002"], "caption_view": [0, 0, 1, 1, 2, 2]}
    for v, data in enumerate(sample.images):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels[("a1b2", v)])
    limited = convert("ulip2", tmp_path / "objaverse", tmp_path / "few", max_views=2, limit=1)
    assert limited.objects == 1 and ShardReader(limited.shards[0])[0].meta["views"] == ["000", "002"]


def test_ulip2_public_layout_and_missing_captions(tmp_path):
    root = tmp_path / "gcs"
    (root / "u1").mkdir(parents=True)
    (root / "rendered_images_split_100").mkdir()
    np.savez(root / "u1" / "u1_8192.npz", y_up_cloud(10, 1))  # arr_0
    with h5py.File(root / "rendered_images_split_100" / "u1.hdf5", "w") as f:
        f["000"] = np.zeros((4, 4), np.uint8)  # grey
    (root / "merged_data.json").write_text(json.dumps({f"{ULIP2_PREFIX}/u1/000": ["grey thing"]}))
    sample = ShardReader(convert("ulip2", root, tmp_path / "out").shards[0])[0]
    assert sample.captions == ["grey thing"] and len(sample.points) == 10
    assert Image.open(io.BytesIO(sample.images[0])).mode == "RGB"
    (root / "merged_data.json").write_text("{}")
    result = convert("ulip2", root, tmp_path / "out2")
    assert result.objects == 0 and result.skipped == {"views without captions": 1, "no captions": 1}


def write_shapenet(root):
    (root / "shapenet_pc").mkdir(parents=True)
    (root / "rendered_images" / "02691156-m1").mkdir(parents=True)
    (root / "taxonomy.json").write_text(json.dumps([
        {"synsetId": "02691156", "name": "airplane,aeroplane,plane", "children": [], "numInstances": 2},
        {"synsetId": "03001627", "name": "chair", "children": [], "numInstances": 1}]))
    (root / "train.txt").write_text("02691156-m1.npy\n03001627-m3.npy\n")
    (root / "test.txt").write_text("02691156-m2.npy\n")
    for k, line in enumerate(["02691156-m1.npy", "02691156-m2.npy", "03001627-m3.npy"]):
        np.save(root / "shapenet_pc" / line, y_up_cloud(64, k))
    images = {}
    for name in ("000", "012_depth0001", "348"):
        images[name] = png(np.full((5, 5, 3), len(images) * 40, np.uint8))
        (root / "rendered_images" / "02691156-m1" / f"02691156-m1_r_{name}.png").write_bytes(images[name])
    (root / "rendered_images" / "02691156-m2_r_000.png").write_bytes(images["000"])  # the release's flat folder
    return images


def test_shapenet55_layout(tmp_path):
    images = write_shapenet(tmp_path / "shapenet-55")
    result = convert("shapenet55", tmp_path / "shapenet-55", tmp_path / "out")
    data = ShardSet(tmp_path / "out")
    assert [s.key for s in data] == ["02691156-m2", "02691156-m1", "03001627-m3"]
    plane = data[1]
    assert plane.label == "airplane" and plane.captions == ["airplane", "aeroplane", "plane"]
    assert plane.images == [images["000"], images["012_depth0001"], images["348"]]  # bytes copied verbatim
    assert data[0].images == [images["000"]] and data[2].images == [] and data[2].captions == ["chair"]
    assert result.skipped == {"no rendered views (kept)": 1}
    np.testing.assert_allclose(plane.points, y_up_to_z_up(y_up_cloud(64, 0)))


def write_openshape(root, n=3, dim=8):
    """Per-object dicts as OpenShape publishes them, a split with the authors' absolute paths."""
    rng = np.random.default_rng(0)
    split, truth = [], {}
    for k in range(n):
        folder = root / "Objaverse" / "000-000"
        folder.mkdir(parents=True, exist_ok=True)
        uid = f"uid{k}"
        def feat() -> dict[str, np.ndarray]:
            return {"original": rng.normal(size=dim).astype(np.float32),
                    "prompt_avg": rng.normal(size=dim).astype(np.float32)}

        data = {"xyz": y_up_cloud(30, k), "rgb": rng.random((30, 3)).astype(np.float32),
                "text": [f"name {k}"], "text_feat": [feat()],
                "blip_caption": f"blip {k}" if k != 1 else "", "blip_caption_feat": feat(),
                "msft_caption": f"msft {k}", "msft_caption_feat": feat(),
                "retrieval_text": [f"retrieved {k}"], "retrieval_text_feat": [feat()],
                "image_feat": rng.normal(size=(12, dim)).astype(np.float32)}
        if k == 0:
            data["thumbnail_feat"] = rng.normal(size=dim).astype(np.float32)
        if k == 2:
            del data["text_feat"]
        np.save(folder / f"{uid}.npy", data, allow_pickle=True)
        truth[uid] = data
        split.append({"id": uid, "data_path": f"/mnt/data/objaverse-processed/merged_for_training_final/"
                                              f"Objaverse/000-000/{uid}.npy", "dataset": "Objaverse", "group": "a"})
    split.append({"id": "gone", "data_path": "/mnt/nowhere/gone.npy", "dataset": "ABO", "group": "b"})
    (root / "train_all.json").write_text(json.dumps(split))
    return truth


def test_openshape_layout_with_published_embeddings(tmp_path):
    truth = write_openshape(tmp_path / "openshape")
    result = convert("openshape", tmp_path / "openshape" / "train_all.json", tmp_path / "out", max_views=4)
    assert result.objects == 3 and result.skipped == {"missing object file": 1} and len(result.sidecars) == 1
    reader = ShardReader(result.shards[0], embeddings=OPENSHAPE_EMBEDDINGS)
    assert embedding_path(result.shards[0], OPENSHAPE_EMBEDDINGS) == result.sidecars[0]
    first, second, third = reader[0], reader[1], reader[2]
    assert reader.attrs["point_channels"] == 6
    np.testing.assert_allclose(first.points[:, :3], y_up_to_z_up(truth["uid0"]["xyz"]))
    np.testing.assert_allclose(first.points[:, 3:], truth["uid0"]["rgb"])
    assert first.captions == ["name 0", "blip 0", "msft 0", "retrieved 0"]
    assert first.meta["caption_source"] == ["text", "blip_caption", "msft_caption", "retrieval_text"]
    assert second.captions == ["name 1", "msft 1", "retrieved 1"]  # empty BLIP caption left out
    np.testing.assert_allclose(first.text_embeddings[1], truth["uid0"]["blip_caption_feat"]["original"])
    np.testing.assert_allclose(second.text_embeddings[1], truth["uid1"]["msft_caption_feat"]["original"])
    assert np.isnan(third.text_embeddings[0]).all() and np.isfinite(third.text_embeddings[1:]).all()
    assert first.images == [b""] * 5 and len(second.images) == 4  # 4 of 12 views (+ thumbnail for uid0)
    np.testing.assert_allclose(first.image_embeddings[:4], truth["uid0"]["image_feat"][[0, 4, 7, 11]])
    np.testing.assert_allclose(first.image_embeddings[4], truth["uid0"]["thumbnail_feat"])
    folder = convert("openshape", tmp_path / "openshape" / "Objaverse", tmp_path / "byfolder")
    assert folder.objects == 3 and [s.key for s in ShardSet(tmp_path / "byfolder")] == ["uid0", "uid1", "uid2"]


def test_bad_sources_give_one_line_errors(tmp_path, capsys):
    with pytest.raises(PointFileError, match="no objaverse_pc_parallel"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "merged_data.json").write_text("{}")
        convert("ulip2", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ConfigError, match="format"):
        convert("modelnet", tmp_path / "empty", tmp_path / "out")
    write_shapenet(tmp_path / "sn")
    convert("shapenet55", tmp_path / "sn", tmp_path / "out")
    with pytest.raises(ConfigError, match="already holds shards"):
        convert("shapenet55", tmp_path / "sn", tmp_path / "out")
    (tmp_path / "sn" / "shapenet_pc" / "03001627-m3.npy").write_bytes(b"junk")
    assert convert_main(["shapenet55:" + str(tmp_path / "sn"), "--out", str(tmp_path / "o2")]) == 2
    assert convert_main(["nosuch:" + str(tmp_path), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("blendclip-convert: error:") for line in err)
    assert "FORMAT:PATH" in err[1]


def test_cli_prints_what_it_wrote(tmp_path, capsys):
    write_shapenet(tmp_path / "sn")
    assert convert_main([f"shapenet55:{tmp_path / 'sn'}", "--out", str(tmp_path / "out"), "--shard-size", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["objects"] == 3 and doc["shards"] == 2 and doc["objects_per_second"] > 0
