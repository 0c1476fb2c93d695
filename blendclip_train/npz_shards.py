"""Object-set ``.npz`` files -> triplet shards, once: normalisation and farthest point sampling at conversion.

Every cloud is centred on its mean and scaled to radius 1, and clouds above ``max_points`` are
reduced by seeded farthest point sampling (the object-set reader's preprocessing), so training
never samples above ``max_points`` again. Labels become class names, non-empty captions are kept
(an object without one gets none: the trainer supplies ``"a point cloud of a {class}"``), and the
per-object fields (instance id, distance, occlusion, box size, image path) go into ``meta``.

:func:`cached_shards` converts a file once into a cache folder keyed by its SHA-256 and
``max_points``; the folder appears complete or not at all (written beside, then renamed), so
concurrent ranks and killed conversions are safe.

``python -m blendclip_train.npz_shards SET.npz --out FOLDER [--max-points 8192] [--shard-size 2048]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np

from blendclip_ros.cli.support import Parser, positive_int, run_cli
from blendclip_ros.errors import ConfigError
from blendclip_ros.geometry.preprocess import preprocess_crops
from blendclip_ros.text.towers import cache_root, file_digest

from .shards import SUFFIX, ShardSample, list_shards, write_shard

SHARD_SIZE = 2048
IMAGE_KEY = "image_embeddings"
DOMAIN = {"cad": "synthetic", "synthetic": "synthetic"}  # any other object-set domain is real


def convert_object_set(path: str | os.PathLike, out_dir: str | os.PathLike, *, max_points: int = 8192,
                       shard_size: int = SHARD_SIZE, seed: int = 0) -> list[Path]:
    """Write the objects of one ``.npz`` object set as shards ``shard-000000.h5 ...`` into ``out_dir``."""
    from blendclip_sim.object_sets import load_object_set

    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        if IMAGE_KEY in z.files:
            raise ConfigError(f"{path}: carries {IMAGE_KEY}; shards keep image embeddings as sidecars of real "
                              "images (write shards with images, then embed them)")
    objects = load_object_set(path)
    domain = DOMAIN.get(objects.domain, "real")
    info = {"source": path.name, "sha256": file_digest(path), "max_points": max_points, "fps_seed": seed,
            "object_set": {"domain": objects.domain, "split": objects.split}}
    out_dir = Path(out_dir)
    written = []
    for number, start in enumerate(range(0, len(objects), shard_size)):
        rows = np.arange(start, min(start + shard_size, len(objects)))
        clouds = preprocess_crops(objects.points, [np.arange(objects.offsets[i], objects.offsets[i + 1]) for i in rows],
                                  max_points=max_points, seed=seed)
        samples = [ShardSample(
            key=f"{path.stem}-{i:07d}", points=cloud, label=objects.class_names[int(objects.labels[i])],
            captions=[str(objects.captions[i]).strip()] if str(objects.captions[i]).strip() else [],
            meta={"instance_id": int(objects.instance_ids[i]), "distance": _number(objects.distance[i]),
                  "occlusion": _number(objects.occlusion[i]), "box_size": objects.box_size[i].tolist(),
                  "image_path": str(objects.image_paths[i])})
            for i, cloud in zip(rows, clouds)]
        written.append(write_shard(out_dir / f"shard-{number:06d}{SUFFIX}", samples, domain=domain,
                                   frame="object", info=info))
    return written


def cached_shards(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *,
                  max_points: int = 8192) -> Path:
    """The shard folder of a ``.npz`` object set, converting it on first use (keyed by file digest)."""
    path = Path(path)
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "shards"
    folder = root / f"{path.stem}-{file_digest(path)[:16]}-{max_points}"
    if folder.is_dir():
        return folder
    staging = root / f".{folder.name}.{uuid.uuid4().hex[:8]}"
    try:
        convert_object_set(path, staging, max_points=max_points)
        try:
            staging.rename(folder)
        except OSError:
            if not folder.is_dir():  # another process finished first: keep theirs
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def resolve_sources(paths: list[Path], cache_dir: str | os.PathLike | None = None, *,
                    max_points: int = 8192) -> list[Path]:
    """Shard files/folders as given, ``.npz`` object sets replaced by their cached conversion."""
    out = []
    for path in paths:
        if path.suffix == ".npz":
            if not path.is_file():
                raise ConfigError(f"{path}: no such object-set file")
            out.append(cached_shards(path, cache_dir, max_points=max_points))
        else:
            list_shards(path)  # a clear error for a missing or empty source
            out.append(path)
    return out


def _number(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m blendclip_train.npz_shards",
               description="Convert object-set .npz files into triplet shards (normalised, FPS to --max-points).")
    p.add_argument("inputs", type=Path, nargs="+", help="object-set .npz file(s)")
    p.add_argument("--out", type=Path, required=True, help="output folder (one subfolder per input)")
    p.add_argument("--max-points", type=positive_int, default=8192, help="FPS cap per cloud (default 8192)")
    p.add_argument("--shard-size", type=positive_int, default=SHARD_SIZE, help="samples per shard")
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> int:
        for path in args.inputs:
            shards = convert_object_set(path, args.out / path.stem, max_points=args.max_points,
                                        shard_size=args.shard_size)
            print(f"{path} -> {len(shards)} shard(s) in {args.out / path.stem}")
        return 0

    return run_cli("blendclip_train.npz_shards", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
