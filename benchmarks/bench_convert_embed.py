#!/usr/bin/env python3
"""Conversion and embedding throughput (objects/s) of the synthetic pools.

Conversion: synthetic ULIP-2 Objaverse (10k points, rendered views as raw pixels), ULIP
ShapeNet-55 (8192 points, PNG views) and OpenShape (10k xyz+rgb, published embeddings) folders
are written in their published layouts, then converted into shards; the baseline is reading
the same source files without converting (``read only``), measured in the same run.

Embedding: ``blendclip-embed`` on the converted ULIP-2 shards with a randomly initialised
open_clip ViT-B-16 (same cost as the release's DataComp weights; text + every view) batched,
against the same towers fed one image at a time (the baseline), and MiniLM text only.

    python benchmarks/bench_convert_embed.py [--quick] [--objects 64] [--views 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import open_clip  # noqa: E402,F401  (imported before timing)
import torch  # noqa: E402

from blendclip_train.datasets.synthetic import convert  # noqa: E402
from blendclip_train.embed import embed_shards, make_towers  # noqa: E402
from blendclip_train.shards import ShardSet  # noqa: E402

PREFIX = "/export/einstein-vision/3d_vision/objaverse/render_images_split_100"


def write_sources(root: Path, objects: int, views: int, size: int) -> dict[str, Path]:
    """Small datasets in the three published layouts (random but well-formed content)."""
    rng = np.random.default_rng(0)
    ulip2, shapenet, openshape = root / "ulip2", root / "shapenet55", root / "openshape"
    (ulip2 / "objaverse_pc_parallel").mkdir(parents=True)
    (ulip2 / "rendered_images_split_100").mkdir()
    (shapenet / "shapenet_pc").mkdir(parents=True)
    (openshape / "objs").mkdir(parents=True)
    captions, lines = {}, []
    from PIL import Image

    png = shapenet / "view.png"
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(png)
    (shapenet / "rendered_images").mkdir()
    for k in range(objects):
        uid = f"{k:032x}"
        np.savez(ulip2 / "objaverse_pc_parallel" / f"{uid}_10000.npz",
                 point_cloud=rng.normal(size=(10000, 3)).astype(np.float32))
        with h5py.File(ulip2 / "rendered_images_split_100" / f"{uid}.hdf5", "w") as f:
            for v in range(views):
                f[f"{v:03d}"] = rng.integers(0, 255, (size, size, 4), dtype=np.uint8)
                captions[f"{PREFIX}/{uid}/{v:03d}"] = [f"a rendered object {k} seen from view {v}, caption {c}"
                                                       for c in range(3)]
        line = f"02691156-{uid}.npy"
        lines.append(line)
        np.save(shapenet / "shapenet_pc" / line, rng.normal(size=(8192, 3)).astype(np.float32))
        folder = shapenet / "rendered_images" / line[:-4]
        folder.mkdir()
        for v in range(views):
            shutil.copy(png, folder / f"{line[:-4]}_r_{12 * v:03d}.png")
        feat = {"original": rng.normal(size=1280).astype(np.float32)}
        np.save(openshape / "objs" / f"{uid}.npy", {
            "xyz": rng.normal(size=(10000, 3)).astype(np.float32), "rgb": rng.random((10000, 3)).astype(np.float32),
            "text": ["airplane"], "text_feat": [feat], "blip_caption": "a plane", "blip_caption_feat": feat,
            "msft_caption": "an airplane", "msft_caption_feat": feat, "retrieval_text": [],
            "image_feat": rng.normal(size=(12, 1280)).astype(np.float32)}, allow_pickle=True)
    (ulip2 / "merged_data.json").write_text(json.dumps(captions))
    (shapenet / "taxonomy.json").write_text(json.dumps([{"synsetId": "02691156", "name": "airplane,aeroplane"}]))
    (shapenet / "train.txt").write_text("\n".join(lines))
    return {"ulip2": ulip2, "shapenet55": shapenet, "openshape": openshape / "objs"}


def read_only(fmt: str, path: Path) -> float:
    """Seconds to read every source file once without converting (the baseline)."""
    start = time.perf_counter()
    if fmt == "ulip2":
        json.loads((path / "merged_data.json").read_text())
        for file in sorted((path / "objaverse_pc_parallel").glob("*.npz")):
            with np.load(file) as data:
                data["point_cloud"].sum()
            with h5py.File(path / "rendered_images_split_100" / f"{file.name.split('_')[0]}.hdf5", "r") as f:
                [f[k][()] for k in f]
    elif fmt == "shapenet55":
        for file in sorted((path / "shapenet_pc").glob("*.npy")):
            np.load(file).sum()
            [p.read_bytes() for p in (path / "rendered_images" / file.stem).glob("*.png")]
    else:
        for file in sorted(path.glob("*.npy")):
            np.load(file, allow_pickle=True).item()["xyz"].sum()
    return time.perf_counter() - start


def per_image_baseline(shards: Path, device: str, limit: int) -> tuple[float, int]:
    """Seconds for the open_clip towers fed one caption and one image per call (first ``limit`` objects)."""
    text, image, _, _ = make_towers("open_clip", device=device)
    samples = [s for _, s in zip(range(limit), ShardSet(shards))]
    text.encode(samples[0].captions[:1])
    image.encode(samples[0].images[:1])  # build both networks before timing
    start = time.perf_counter()
    for sample in samples:
        for caption in sample.captions:
            text.encode([caption])
        for data in sample.images:
            image.encode([data], batch_size=1)
    return time.perf_counter() - start, len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 objects, 1 small view (smoke run)")
    parser.add_argument("--objects", type=int, default=64, help="objects per source dataset")
    parser.add_argument("--views", type=int, default=4, help="rendered views per object")
    parser.add_argument("--size", type=int, default=512, help="rendered view side (pixels)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    objects, views, size = (3, 1, 64) if args.quick else (args.objects, args.views, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = write_sources(root, objects, views, size)
        print(f"{objects} objects per dataset, {views} views of {size}x{size} px; device {args.device}")
        print(f"{'conversion':<14} {'objects/s':>10} {'read only':>10} {'ratio':>6}")
        for fmt, path in sources.items():
            base = read_only(fmt, path)
            result = convert(fmt, path, root / "shards" / fmt, shard_size=max(1, objects // 2))
            assert result.objects == objects, result
            print(f"{fmt:<14} {objects / result.seconds:>10.1f} {objects / base:>10.1f} "
                  f"{result.seconds / base:>5.1f}x")
        ulip2 = root / "shards" / "ulip2"
        batched = embed_shards(ulip2, tower="open_clip", device=args.device, batch_size=64)
        limit = 1 if args.quick else min(objects, 8)
        single, counted = per_image_baseline(ulip2, args.device, limit)
        minilm = embed_shards(ulip2, tower="minilm", device=args.device)
        per_object = batched.seconds / objects
        print(f"embedding (ULIP-2 shards: {batched.captions} captions, {batched.images} views)")
        print(f"  open_clip ViT-B-16 text+image, batched: {objects / batched.seconds:8.2f} objects/s "
              f"({batched.images / batched.seconds:.1f} images/s; the lazy text tower is built inside)")
        print(f"  same towers, one item per call:       {counted / single:8.2f} objects/s "
              f"(baseline; batched is {single / counted / per_object:.1f}x)")
        print(f"  MiniLM text only:                      {objects / minilm.seconds:8.2f} objects/s")


if __name__ == "__main__":
    main()
