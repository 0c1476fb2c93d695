"""Encoder throughput: packed dynamic grouping vs BlendCLIP's pad-every-cloud-to-8192 layout.

Point counts follow a nuScenes-like log-normal mix (most objects under 50 points, a long tail up
to 8192). Both paths run the same random-weight model in eval mode under inference_mode on the
CPU; the script checks they give the same embeddings and prints objects/s and the speed-up.

    .venv/bin/python benchmarks/bench_encoder.py [--quick] [--batch 64] [--configs tiny full]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel

TARGET_SPEEDUP = 5.0


def point_counts(rng: np.random.Generator, size: int, max_points: int) -> np.ndarray:
    """Log-normal object sizes: median 25 points, ~65 % under 50, tail clipped at max_points."""
    counts = np.exp(rng.normal(math.log(25.0), 1.7, size))
    return np.clip(np.rint(counts), 1, max_points).astype(int)


def object_cloud(rng: np.random.Generator, n: int) -> torch.Tensor:
    """Points on the surface of a random box, centred and scaled into the unit sphere."""
    extent = rng.uniform(0.3, 3.0, 3)
    points = rng.uniform(-0.5, 0.5, (n, 3)) * extent
    face = rng.integers(0, 3, n)
    points[np.arange(n), face] = np.sign(rng.uniform(-1, 1, n)) * extent[face] / 2
    points -= points.mean(0)
    points /= max(np.linalg.norm(points, axis=1).max(), 1e-6)
    return torch.from_numpy(points.astype(np.float32))


def random_model(config: PointBertConfig, seed: int) -> BlendClipPointModel:
    torch.manual_seed(seed)
    model = BlendClipPointModel(config).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def timed(fn, clouds) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn(clouds)
    return out, time.perf_counter() - start


def bench_config(name: str, batches: int, batch_size: int, seed: int) -> float:
    config = PointBertConfig.named(name)
    model = random_model(config, seed)
    rng = np.random.default_rng(seed)
    data = [[object_cloud(rng, int(n)) for n in point_counts(rng, batch_size, config.max_points)]
            for _ in range(batches)]
    sizes = np.array([c.shape[0] for batch in data for c in batch])
    print(f"\n[{name}] {batches} batches x {batch_size} objects; points per object: "
          f"median {int(np.median(sizes))}, {np.mean(sizes < 50):.0%} under 50, "
          f"p99 {int(np.percentile(sizes, 99))}, max {sizes.max()}")
    packed_time = padded_time = 0.0
    max_diff = 0.0
    with torch.inference_mode():
        model.encode(data[0])  # warm-up (allocator, thread pool, kernels)
        model.encode_padded_reference(data[0][:2])
        for clouds in tqdm(data, desc=name, leave=False):
            packed, seconds = timed(model.encode, clouds)
            packed_time += seconds
            padded, seconds = timed(model.encode_padded_reference, clouds)
            padded_time += seconds
            max_diff = max(max_diff, float((packed - padded).abs().max()))
    objects = batches * batch_size
    speedup = padded_time / packed_time
    print(f"[{name}] packed (ours):        {objects / packed_time:9.1f} objects/s "
          f"({packed_time / batches * 1e3:8.1f} ms/batch)")
    print(f"[{name}] padded to {config.max_points} (BlendCLIP): {objects / padded_time:9.1f} "
          f"objects/s ({padded_time / batches * 1e3:8.1f} ms/batch)")
    print(f"[{name}] speed-up {speedup:.1f}x (target >= {TARGET_SPEEDUP:.0f}x: "
          f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}); "
          f"max |embedding difference| {max_diff:.2e}")
    return max_diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small run per config (CI)")
    parser.add_argument("--batch", type=int, default=64, help="objects per batch")
    parser.add_argument("--batches", type=int, default=None,
                        help="batches per config (default 6 for tiny, 2 for full; 1 with --quick)")
    parser.add_argument("--configs", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; load average "
          f"{os.getloadavg()[0]:.1f} (other processes distort timings, mostly of the packed path)")
    worst = 0.0
    for name in args.configs:
        batches = args.batches or (1 if args.quick else {"tiny": 6, "full": 2}[name])
        batch = min(args.batch, 16) if args.quick and name == "full" else args.batch
        worst = max(worst, bench_config(name, batches, batch, args.seed))
    if worst > 1e-4:
        raise SystemExit(f"packed and padded embeddings differ by {worst:.2e}")


if __name__ == "__main__":
    main()
