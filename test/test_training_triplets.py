"""Triplet datasets over object-set files: normalisation, class union, captions, images, collate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blendclip_ros.errors import ConfigError, PointFileError
from blendclip_sim.object_sets import ObjectSet, load_object_set
from blendclip_train.triplets import REAL, SYNTHETIC, TripletDataset

SHAPES = ("ball", "stick", "plate")


def shape_cloud(shape: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """A few metres wide cloud of a simple, well separable shape (box frame, z up)."""
    if shape == "ball":
        v = rng.normal(size=(n, 3))
        return 0.8 * v / np.linalg.norm(v, axis=1, keepdims=True)
    if shape == "stick":
        return np.c_[rng.uniform(-2, 2, n), rng.normal(0, 0.03, n), rng.normal(0, 0.03, n)]
    return np.c_[rng.uniform(-1, 1, n), rng.uniform(-1, 1, n), rng.normal(0, 0.01, n)]


def tiny_object_set(path: Path, domain: str = "cad", split: str = "train", per_class: int = 4,
                    classes: tuple[str, ...] = SHAPES, points: tuple[int, int] = (40, 300), seed: int = 0,
                    captions: bool = True, extra: dict | None = None) -> Path:
    """Write a small object set (``per_class`` objects of each shape) in the simulator's format."""
    rng = np.random.default_rng(seed)
    clouds, labels, texts = [], [], []
    for label, name in enumerate(classes):
        for k in range(per_class):
            n = int(rng.integers(*points))
            clouds.append((shape_cloud(name, n, rng) + rng.normal(0, 0.5, 3)).astype(np.float32))
            labels.append(label)
            texts.append(f"a point cloud of a {'small big'.split()[k % 2]} {name}" if captions else "")
    sizes = np.array([len(c) for c in clouds])
    objects = ObjectSet(domain, split, tuple(classes), np.concatenate(clouds), np.r_[0, np.cumsum(sizes)],
                        np.array(labels), np.arange(len(labels)), sizes, np.full(len(labels), np.nan, np.float32),
                        np.zeros(len(labels), np.float32), np.ones((len(labels), 3), np.float32),
                        np.array(texts, dtype=str), np.array([""] * len(labels)))
    objects.save(path)
    if extra:
        with np.load(path) as z:
            arrays = dict(z)
        np.savez(path, **arrays, **extra)
    return path


def test_items_are_normalised_slices_with_their_caption_and_label(tmp_path):
    path = tiny_object_set(tmp_path / "a.npz")
    objects = load_object_set(path)
    data = TripletDataset([path], SYNTHETIC)
    assert len(data) == len(objects) and data.class_names == list(SHAPES)
    for i in range(len(data)):
        item = data[i]
        assert item.points.shape == (objects.num_points[i], 3) and item.points.dtype == np.float32
        np.testing.assert_allclose(item.points.mean(0), 0, atol=1e-5)
        assert np.linalg.norm(item.points, axis=1).max() == pytest.approx(1.0, abs=1e-5)
        assert item.caption == objects.captions[i] and data.captions[item.caption_index] == item.caption
        assert item.label == objects.labels[i] and item.domain == SYNTHETIC and item.image_embedding is None
    assert len(data.captions) == 2 * len(SHAPES)  # "small"/"big" per shape, deduplicated


def test_cap_reduces_large_clouds_and_empty_objects_are_dropped(tmp_path):
    path = tiny_object_set(tmp_path / "a.npz", points=(100, 120))
    objects = load_object_set(path)
    offsets = objects.offsets.copy()
    offsets[2] = offsets[1]  # object 1 loses its points to object 2's neighbour range
    broken = ObjectSet(**{**objects.__dict__, "offsets": offsets, "num_points": np.diff(offsets)})
    broken.save(tmp_path / "b.npz")
    data = TripletDataset([tmp_path / "b.npz"], REAL, max_points=50)
    assert data.dropped_empty == 1 and len(data) == len(objects) - 1
    assert data.num_points.max() == 50


def test_class_names_are_the_union_in_order_and_can_be_fixed(tmp_path):
    a = tiny_object_set(tmp_path / "a.npz", classes=("ball", "stick"))
    b = tiny_object_set(tmp_path / "b.npz", classes=("plate", "stick"), seed=1)
    data = TripletDataset([a, b], SYNTHETIC)
    assert data.class_names == ["ball", "stick", "plate"]
    second = load_object_set(b)
    remapped = data.labels[len(load_object_set(a)):]
    np.testing.assert_array_equal(remapped, np.array([2, 1])[second.labels])
    fixed = TripletDataset([a], SYNTHETIC, class_names=["stick", "ball", "plate"])
    np.testing.assert_array_equal(fixed.labels, 1 - load_object_set(a).labels)
    with pytest.raises(ConfigError, match="class_names"):
        TripletDataset([b], SYNTHETIC, class_names=["ball"])


def test_missing_captions_fall_back_to_the_class_template(tmp_path):
    data = TripletDataset([tiny_object_set(tmp_path / "a.npz", captions=False)], REAL)
    assert sorted(data.captions) == [f"a point cloud of a {s}" for s in sorted(SHAPES)]


def test_image_embeddings_are_optional_per_file(tmp_path):
    images = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    images[3] = np.nan  # object 3 has no image
    with_images = tiny_object_set(tmp_path / "a.npz", extra={"image_embeddings": images})
    without = tiny_object_set(tmp_path / "b.npz", seed=1)
    data = TripletDataset([with_images, without], SYNTHETIC)
    assert [data[i].image_embedding is not None for i in (0, 3, 12, 5)] == [True, False, False, True]
    np.testing.assert_array_equal(data[0].image_embedding, images[0])
    tiny_object_set(tmp_path / "c.npz", extra={"image_embeddings": images[:5]})
    with pytest.raises(PointFileError, match="image_embeddings"):
        TripletDataset([tmp_path / "c.npz"], SYNTHETIC)


def test_bad_arguments_are_typed_errors(tmp_path):
    with pytest.raises(ConfigError, match="domain"):
        TripletDataset([tiny_object_set(tmp_path / "a.npz")], 5)
    with pytest.raises(ConfigError, match="paths"):
        TripletDataset([], SYNTHETIC)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(PointFileError):
        TripletDataset([tmp_path / "bad.npz"], SYNTHETIC)
