"""blendclip-embed on real (randomly initialised) open_clip towers and MiniLM; the image term of the loss."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from blendclip_ros.text.towers import OpenClipTextTower
from blendclip_train.cli.embed import main as embed_main
from blendclip_train.embed import OpenClipImageTower, embed_shards, embedding_key
from blendclip_train.losses import contrastive_loss
from blendclip_train.shards import (
    ShardReader,
    ShardSample,
    ShardSet,
    embedding_path,
    write_shard,
)
from test.test_training_shards import jpeg


def shard_folder(root, n_shards=2, per_shard=3):
    for s in range(n_shards):
        samples = []
        for i in range(per_shard):
            k = s * per_shard + i
            images = [jpeg(k), jpeg(k + 100)] + ([b""] if k == 1 else [])  # one embedding-only view
            samples.append(ShardSample(key=f"o{k}", points=np.random.default_rng(k).normal(size=(20, 3)),
                                       captions=[f"a chair number {k}", f"seat {k}"][:1 + k % 2], images=images))
        write_shard(root / f"pool-{s:06d}.h5", samples, domain="synthetic")
    return root


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    root = shard_folder(tmp_path_factory.mktemp("embed"))
    return root, embed_shards(root, tower="open_clip", model="ViT-B-16", weights=None, device="cpu", batch_size=4)


def test_open_clip_sidecars_align_with_captions_and_images(embedded):
    root, result = embedded
    assert re.fullmatch(r"open_clip-ViT-B-16-[0-9a-f]{12}", result.key)
    assert len(result.written) == 2 and result.objects == 6 and result.captions == 9 and result.images == 13
    data = ShardSet(root, embeddings=result.key)
    sample = data[1]
    assert sample.text_embeddings.shape == (2, 512) and sample.image_embeddings.shape == (3, 512)
    assert np.isnan(sample.image_embeddings[2]).all()  # zero-length image entry
    real = np.concatenate([s.image_embeddings for s in data])
    real = real[np.isfinite(real).all(1)]
    np.testing.assert_allclose(np.linalg.norm(real, axis=1), 1.0, atol=1e-5)
    texts = OpenClipTextTower("ViT-B-16", None, seed=0).encode(sample.captions).numpy()
    np.testing.assert_allclose(sample.text_embeddings, texts, atol=1e-5)
    tower = OpenClipImageTower("ViT-B-16", None, seed=0)
    again = tower.encode([data[4].images[1], data[4].images[0]]).numpy()
    np.testing.assert_allclose(again, data[4].image_embeddings[[1, 0]], atol=1e-4)
    assert not np.allclose(data[4].image_embeddings[0], data[4].image_embeddings[1])


def test_embedding_is_resumable(embedded):
    root, result = embedded
    first, second = (embedding_path(s, result.key) for s in sorted(root.glob("*.h5")))
    stamp = first.stat().st_mtime_ns
    second.unlink()
    again = embed_shards(root, tower="open_clip", model="ViT-B-16", device="cpu")
    assert again.key == result.key and again.skipped == [first.parent.parent.parent / first.name]
    assert again.written == [second] and first.stat().st_mtime_ns == stamp


def test_minilm_writes_text_only(tmp_path):
    root = shard_folder(tmp_path, n_shards=1)
    result = embed_shards(root, tower="minilm", device="cpu")
    assert result.key.startswith("minilm-all-MiniLM-L6-v2-") and result.images == 0
    sample = ShardReader(root / "pool-000000.h5", embeddings=result.key)[2]
    assert sample.text_embeddings.shape == (1, 384) and sample.image_embeddings is None


def test_image_embeddings_change_the_loss_and_the_gradients(embedded):
    """The point-image term: the same step with the sidecar's image rows differs from one without."""
    root, result = embedded
    data = ShardSet(root, embeddings=result.key)
    texts = torch.from_numpy(np.stack([s.text_embeddings[0] for s in data]))
    images = torch.from_numpy(np.stack([s.image_embeddings[0] for s in data]))
    torch.manual_seed(0)
    projection = torch.nn.Linear(3, 512)
    clouds = torch.from_numpy(np.stack([s.points.mean(0) for s in data])).float()
    grads, losses = [], []
    for with_images in (False, True):
        projection.zero_grad()
        loss = contrastive_loss(projection(clouds), texts, torch.tensor(np.log(1 / 0.07)),
                                images if with_images else None)
        loss.total.backward()
        losses.append(loss)
        grads.append(projection.weight.grad.clone())
    assert losses[0].point_image is None and losses[1].point_image is not None
    assert float(losses[1].total.detach()) == pytest.approx(losses[0].point_text + losses[1].point_image, rel=1e-5)
    assert not torch.allclose(grads[0], grads[1])


def test_cli(tmp_path, capsys):
    root = shard_folder(tmp_path, n_shards=1, per_shard=1)
    assert embed_main([str(root), "--tower", "minilm", "--device", "cpu"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["written"] == 1 and doc["captions"] == 1
    assert embed_main([str(root), "--tower", "minilm", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_existing"] == 1
    assert embed_main([str(root), "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert embed_main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("blendclip-embed: error:") for line in err)
    assert embedding_key("x", "random-init") != embedding_key("x", "random-init-2")


def test_training_on_a_converted_ulip2_set_trains_the_point_image_term(tmp_path):
    """ULIP-2 layout -> blendclip-convert -> blendclip-embed -> blendclip-train with the sidecar key."""
    import csv

    from blendclip_train.datasets.synthetic import convert
    from blendclip_train.trainer import TrainConfig, train
    from test.test_training_convert import write_ulip2

    write_ulip2(tmp_path / "objaverse", uids=("a1", "b2", "c3", "d4", "e5"))
    convert("ulip2", tmp_path / "objaverse", tmp_path / "shards")
    key = embed_shards(tmp_path / "shards", tower="open_clip", device="cpu").key
    config = TrainConfig(synthetic=[tmp_path / "shards"], out_dir=tmp_path / "run", embeddings=key,
                         text_tower={"type": "open_clip", "model": "ViT-B-16", "weights": None}, epochs=1,
                         iterations_per_epoch=2, batch_size=4, log_every=1, progress=False,
                         cache_dir=tmp_path / "cache")
    result = train(config)
    assert result.last.is_file()
    with (tmp_path / "run" / "log.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "step"]
    assert len(rows) == 2 and all(float(r["loss_point_image"]) > 0 for r in rows)
