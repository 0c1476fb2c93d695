"""Streaming training data: .npz -> shard conversion (cached), keyed per-access randomness, sidecars, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blendclip_ros.errors import ConfigError
from blendclip_train.augment import AugmentConfig
from blendclip_train.npz_shards import cached_shards, convert_object_set
from blendclip_train.npz_shards import main as convert_main
from blendclip_train.curriculum import CurriculumBatchSampler
from blendclip_train.data import Access, Collate, EvalTriplets, StreamingTriplets
from blendclip_train.shards import (
    ShardReader,
    ShardSample,
    ShardSet,
    write_embeddings,
    write_shard,
)
from blendclip_train.triplets import REAL, SYNTHETIC, TripletDataset
from test.test_training_shards import jpeg
from test.test_training_triplets import SHAPES, tiny_object_set


def key(index: int, slot: int = 0, iteration: int = 0, epoch: int = 0, rank: int = 0, seed: int = 0) -> Access:
    return Access(index, seed, epoch, rank, iteration, slot)


def test_conversion_is_the_object_set_preprocessing_once(tmp_path):
    path = tiny_object_set(tmp_path / "cad.npz", per_class=3, points=(80, 200))
    shards = convert_object_set(path, tmp_path / "out", max_points=100, shard_size=4)
    assert [p.name for p in shards] == ["shard-000000.h5", "shard-000001.h5", "shard-000002.h5"]
    converted = ShardSet(tmp_path / "out")
    reference = TripletDataset([path], SYNTHETIC, max_points=100)
    assert len(converted) == len(reference) == 9 and ShardReader(shards[0]).domain == "synthetic"
    for i, sample in enumerate(converted):
        np.testing.assert_array_equal(sample.points, reference[i].points)  # FPS + normalisation as before
        assert sample.label == SHAPES[reference[i].label] and sample.captions == [reference[i].caption]
    assert max(len(s.points) for s in converted) == 100
    assert ShardReader(shards[0]).attrs["info"]["max_points"] == 100


def test_npz_is_converted_once_per_content(tmp_path):
    path = tiny_object_set(tmp_path / "cad.npz", per_class=2)
    first = cached_shards(path, tmp_path / "cache", max_points=64)
    stamp = (first / "shard-000000.h5").stat().st_mtime_ns
    assert cached_shards(path, tmp_path / "cache", max_points=64) == first
    assert (first / "shard-000000.h5").stat().st_mtime_ns == stamp  # not converted again
    assert cached_shards(path, tmp_path / "cache", max_points=32) != first
    tiny_object_set(path, per_class=3)  # new content, same name
    assert cached_shards(path, tmp_path / "cache", max_points=64) != first
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no staging left


def test_npz_image_embeddings_are_refused_not_dropped(tmp_path):
    path = tiny_object_set(tmp_path / "a.npz", extra={"image_embeddings": np.zeros((12, 4), np.float32)})
    with pytest.raises(ConfigError, match="image_embeddings"):
        convert_object_set(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_convert_cli(tmp_path, capsys):
    path = tiny_object_set(tmp_path / "lidar.npz", "lidar")
    assert convert_main([str(path), "--out", str(tmp_path / "shards"), "--max-points", "50"]) == 0
    assert "1 shard" in capsys.readouterr().out
    assert ShardReader(tmp_path / "shards" / "lidar" / "shard-000000.h5").domain == "real"
    assert convert_main([str(tmp_path / "missing.npz"), "--out", str(tmp_path / "x")]) == 2


def _big_clouds(tmp_path, embeddings: bool = False):
    """3 samples of 300 points, several captions and image views; optional sidecars."""
    rng = np.random.default_rng(0)
    samples = [ShardSample(key=f"k{i}", points=rng.normal(size=(300, 3)).astype(np.float32) * (i + 1) + i,
                           label=SHAPES[i], captions=[f"caption {i}.{c}" for c in range(3)],
                           images=[jpeg(10 * i + v) for v in range(i + 1)]) for i in range(3)]
    samples.append(ShardSample(key="empty", points=np.zeros((0, 3), np.float32), label="ball"))
    shard = write_shard(tmp_path / "s.h5", samples, domain="synthetic")
    if embeddings:
        reader = ShardReader(shard)
        write_embeddings(shard, "tower-abc", text=rng.normal(size=(reader.num_captions, 8)),
                         image=rng.normal(size=(reader.num_images, 8)), attrs={"tower": "test"})
    return shard, samples


def test_per_access_randomness_depends_on_the_key_only(tmp_path):
    shard, _ = _big_clouds(tmp_path)
    data = StreamingTriplets([shard], max_points=100)
    assert len(data) == 3 and data.dropped_empty == 1 and data.num_real == 0
    a, again = data[key(2, slot=5)], data[key(2, slot=5)]
    np.testing.assert_array_equal(a.points, again.points)
    assert a.text == again.text and a.label == 2 and a.domain == SYNTHETIC
    assert a.points.shape == (100, 3) and np.linalg.norm(a.points, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(a.points.mean(0), 0, atol=1e-6)
    other = data[key(2, slot=6)]
    assert not np.array_equal(a.points, other.points)
    assert len(np.unique(a.points, axis=0)) == 100  # drawn without replacement
    captions = {data.captions[data[key(1, slot=s)].text] for s in range(40)}
    assert captions == {f"caption 1.{c}" for c in range(3)}  # a random caption among several
    assert data[key(0, epoch=1)].points.shape == (100, 3)


def test_sidecar_embeddings_come_per_access_with_a_random_view(tmp_path):
    shard, _ = _big_clouds(tmp_path, embeddings=True)
    data = StreamingTriplets([shard], embeddings="tower-abc", max_points=100)
    assert data.embed_dim == 8 and data.has_images and data.captions == []
    reader = ShardReader(shard, "tower-abc")
    texts, views = set(), set()
    for s in range(60):
        item = data[key(2, slot=s)]
        rows = reader[2]
        text_row = int(np.flatnonzero((rows.text_embeddings == item.text).all(1))[0])
        view_row = int(np.flatnonzero((rows.image_embeddings == item.image).all(1))[0])
        texts.add(text_row)
        views.add(view_row)
    assert texts == {0, 1, 2} and views == {0, 1, 2}
    batch = Collate(None)([data[key(i, slot=i)] for i in range(3)])
    assert batch.text_index is None and batch.text_embeddings.shape == (3, 8)
    assert batch.image_mask.tolist() == [True, True, True] and batch.image_embeddings.shape == (3, 8)


def test_sidecars_must_cover_every_caption(tmp_path):
    shard = write_shard(tmp_path / "s.h5", [ShardSample("a", np.ones((5, 3), np.float32), "ball", ["x"]),
                                            ShardSample("b", np.ones((5, 3), np.float32), "ball", [])],
                        domain="real")
    write_embeddings(shard, "k", text=np.ones((1, 4)), image=None, attrs={})
    with pytest.raises(ConfigError, match="no caption"):
        StreamingTriplets([shard], embeddings="k")
    data = StreamingTriplets([shard])  # without sidecars: the class fallback caption
    assert data.captions[data[key(1)].text] == "a point cloud of a ball"


def test_pooled_index_space_and_labels(tmp_path):
    cad = cached_shards(tiny_object_set(tmp_path / "cad.npz", classes=("ball", "stick")), tmp_path / "c")
    lidar = cached_shards(tiny_object_set(tmp_path / "lidar.npz", "lidar", classes=("plate", "ball"), seed=2),
                          tmp_path / "c")
    data = StreamingTriplets([cad], [lidar])
    assert (data.num_synthetic, data.num_real) == (8, 8) and data.class_names == ["ball", "stick", "plate"]
    assert data[key(8)].domain == REAL and data.class_names[data[key(8)].label] == "plate"
    assert data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [0] * 4
    evaluation = EvalTriplets([lidar], max_points=20)
    assert evaluation.class_names == ["plate", "ball"] and len(evaluation) == 8
    assert evaluation[0].points.shape[0] <= 20
    np.testing.assert_array_equal(evaluation[3].points, evaluation[3].points)


def test_workers_build_the_same_batches_as_the_main_process(tmp_path):
    cad = cached_shards(tiny_object_set(tmp_path / "cad.npz", per_class=5), tmp_path / "c", max_points=64)
    lidar = cached_shards(tiny_object_set(tmp_path / "lidar.npz", "lidar", seed=3), tmp_path / "c")
    data = StreamingTriplets([cad], [lidar], max_points=48)

    def batches(workers: int) -> list:
        sampler = CurriculumBatchSampler(data.num_synthetic, data.num_real, 6, 5, epochs=2, r_max=0.5, static=True,
                                         seed=4, rank=1)
        loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=Collate(AugmentConfig()),
                                             num_workers=workers)
        return list(loader)

    inline, workers = batches(0), batches(2)
    assert len(inline) == len(workers) == 5
    for a, b in zip(inline, workers):
        assert torch.equal(a.points, b.points) and torch.equal(a.text_index, b.text_index)
        assert torch.equal(a.lengths, b.lengths) and int((a.domains == REAL).sum()) == 3
        assert a.key.rank == 1 and len(a.clouds()) == 6
