"""Triplet shards: round trips, atomic writes, embedding sidecars, fork-safe lazy reading."""

from __future__ import annotations

import io
import multiprocessing
import pickle

import h5py
import numpy as np
import pytest
from PIL import Image

from blendclip_ros.errors import ConfigError, PointFileError
from blendclip_train.shards import (ShardReader, ShardSample, ShardSet, embedding_path, list_shards, write_embeddings,
                                    write_shard)


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def samples(n: int, channels: int = 3, seed: int = 0) -> list[ShardSample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(ShardSample(
            key=f"s{seed}-{i}", points=rng.normal(size=(int(rng.integers(1, 50)), channels)).astype(np.float32),
            label=["car", "bus", ""][i % 3], captions=[f"caption {i}.{k}" for k in range(i % 3)],
            images=[jpeg(i * 10 + k) for k in range(i % 2 + (i == 3))], meta={"i": i, "token": f"t{i}"}))
    return out


def test_round_trip_every_field(tmp_path) -> None:
    written = samples(7, channels=6)
    path = write_shard(tmp_path / "shard-000000.h5", written, domain="real", frame="box", info={"source": "test"})
    reader = ShardReader(path)
    assert len(reader) == 7 and reader.domain == "real"
    assert reader.attrs["point_channels"] == 6 and reader.attrs["frame"] == "box"
    assert reader.attrs["info"] == {"source": "test"} and reader.attrs["up_axis"] == "z"
    for i, expected in enumerate(written):
        got = reader[i]
        assert got.key == expected.key and got.label == expected.label and got.meta == expected.meta
        np.testing.assert_array_equal(got.points, expected.points)
        assert got.captions == expected.captions and got.images == expected.images
    assert Image.open(io.BytesIO(reader[3].images[1])).size == (24, 16)
    assert reader.labels() == [s.label for s in written]
    np.testing.assert_array_equal(reader.point_counts(), [len(s.points) for s in written])
    with pytest.raises(IndexError):
        reader[7]


def test_shard_set_indexes_across_files(tmp_path) -> None:
    a = write_shard(tmp_path / "a.h5", samples(3, seed=1), domain="synthetic")
    write_shard(tmp_path / "b.h5", samples(4, seed=2), domain="synthetic")
    write_shard(tmp_path / "c.h5", [], domain="synthetic")
    (tmp_path / "junk.h5.tmp").write_bytes(b"half written")
    assert list_shards(tmp_path) == [a, tmp_path / "b.h5", tmp_path / "c.h5"]
    dataset = ShardSet(tmp_path)
    assert len(dataset) == 7
    assert [s.key for s in dataset] == [f"s1-{i}" for i in range(3)] + [f"s2-{i}" for i in range(4)]
    assert dataset[4].key == "s2-1" and dataset.locate(3)[1] == 0
    assert len(dataset.point_counts()) == 7 and len(dataset.labels()) == 7


def test_bad_input_is_refused_and_leaves_nothing(tmp_path) -> None:
    with pytest.raises(ConfigError, match="duplicate"):
        write_shard(tmp_path / "x.h5", samples(2) + samples(1), domain="real")
    mixed = samples(1, channels=3) + samples(1, channels=6, seed=5)
    with pytest.raises(ConfigError, match="all alike"):
        write_shard(tmp_path / "x.h5", mixed, domain="real")
    with pytest.raises(ConfigError, match="domain"):
        write_shard(tmp_path / "x.h5", samples(1), domain="lidar")
    assert not list(tmp_path.iterdir())
    (tmp_path / "other.h5").write_bytes(b"")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(PointFileError, match="not a blendclip-shard"):
        ShardReader(tmp_path / "plain.h5")
    with pytest.raises(PointFileError, match="no such"):
        list_shards(tmp_path / "missing")


def test_embedding_sidecars_align_with_captions_and_images(tmp_path) -> None:
    written = samples(5)
    path = write_shard(tmp_path / "shard.h5", written, domain="synthetic")
    reader = ShardReader(path)
    text = np.arange(reader.num_captions * 4, dtype=np.float32).reshape(-1, 4)
    image = -np.arange(reader.num_images * 4, dtype=np.float32).reshape(-1, 4)
    with pytest.raises(ConfigError, match="text embeddings"):
        write_embeddings(path, "minilm-abc", text=text[:-1], image=image, attrs={"tower": "minilm"})
    sidecar = write_embeddings(path, "minilm-abc", text=text, image=image, attrs={"tower": "minilm"})
    assert sidecar == embedding_path(path, "minilm-abc") and list_shards(tmp_path) == [path]
    with_embeddings = ShardSet(tmp_path, embeddings="minilm-abc")
    row = 0
    for i, sample in enumerate(with_embeddings):
        assert sample.text_embeddings.shape == (len(written[i].captions), 4)
        np.testing.assert_array_equal(sample.text_embeddings, text[row:row + len(written[i].captions)])
        row += len(written[i].captions)
    assert with_embeddings[3].image_embeddings.shape == (2, 4)
    with pytest.raises(PointFileError, match="no 'other' embeddings"):
        ShardSet(tmp_path, embeddings="other")


def _read_key(args):
    dataset, index = args
    return dataset[index].key


def test_pickles_and_reads_in_forked_workers(tmp_path) -> None:
    write_shard(tmp_path / "s.h5", samples(6), domain="real")
    dataset = ShardSet(tmp_path)
    dataset[0]  # opened in the parent before forking
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone[5].key == "s0-5"
    with multiprocessing.get_context("fork").Pool(2) as pool:
        keys = pool.map(_read_key, [(dataset, i) for i in range(6)])
    assert keys == [f"s0-{i}" for i in range(6)]
