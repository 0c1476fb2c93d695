"""Training throughput: the streaming data pipeline alone vs training, 1 and 2 ranks; memory on a big set.

1. Data pipeline alone: samples/s of the curriculum sampler + shard reads + per-access subset
   (10,000 -> 8,192 points) + augmentation + collate, through a DataLoader with 0 and 2 workers.
2. Training: samples/s of ``blendclip_train.cli.train`` itself (tiny and full encoder, batch 64 per
   rank), one process and under ``torchrun --nproc_per_node=2`` (gloo), read from its ``log.csv``
   (step to step, data wait included, warm-up steps dropped). Target: the pipeline delivers at
   least 5x what one rank consumes. With CUDA: the same on the GPU(s), samples/s per GPU and the
   scaling efficiency (samples/s of N GPUs / N x one GPU).
3. Memory: peak RSS of the training process tree (main + workers) on a shard set larger than a
   stated RAM budget vs on a small set: streaming keeps it flat.

The baseline of every ratio is measured in the same run. Figures on a shared machine are noisy.

    .venv/bin/python benchmarks/bench_train.py [--quick] [--workers 2] [--budget-gib 1.0]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blendclip_train.augment import AugmentConfig
from blendclip_train.curriculum import CurriculumBatchSampler
from blendclip_train.data import Collate, StreamingTriplets
from blendclip_train.shards import (
    ShardReader,
    ShardSample,
    write_embeddings,
    write_shard,
)

TARGET_RATIO = 5.0
KEY = "bench-384"
DIM = 384  # MiniLM width: the sidecars stand in for caption embeddings, no text tower runs


def make_shards(folder: Path, objects: int, points: int, per_shard: int, seed: int, desc: str) -> float:
    """Random box-surface clouds with one caption each and text sidecars; returns the size in GiB."""
    rng = np.random.default_rng(seed)
    for start in tqdm(range(0, objects, per_shard), desc=desc, unit="shard", leave=False):
        count = min(per_shard, objects - start)
        extent = rng.uniform(0.3, 3.0, (count, 1, 3))
        clouds = (rng.uniform(-0.5, 0.5, (count, points, 3)) * extent).astype(np.float32)
        samples = [ShardSample(key=f"o{start + i}", points=clouds[i], label=f"class {(start + i) % 10}",
                               captions=[f"a thing of kind {(start + i) % 10}"]) for i in range(count)]
        shard = write_shard(folder / f"shard-{start // per_shard:06d}.h5", samples, domain="synthetic")
        write_embeddings(shard, KEY, text=rng.normal(size=(ShardReader(shard).num_captions, DIM)), image=None,
                         attrs={"tower": "bench"})
    return sum(p.stat().st_size for p in folder.rglob("*.h5")) / 2 ** 30


def data_rate(folder: Path, batch: int, batches: int, workers: int, max_points: int) -> float:
    """Samples/s of the data pipeline alone (sampler -> reads -> subset -> augment -> collate)."""
    data = StreamingTriplets([folder], embeddings=KEY, max_points=max_points)
    sampler = CurriculumBatchSampler(data.num_synthetic, 0, batch, batches + 1, epochs=1, r_max=0.0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=Collate(AugmentConfig()),
                                         num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start = time.perf_counter()
    count = sum(len(b) for b in iterator)
    return count / (time.perf_counter() - start)


class PeakRss:
    """Peak summed VmRSS of a process and its descendants, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _tree(self, pid: int) -> list[int]:
        pids = [pid]
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                pids += self._tree(int(child))
        return pids

    def _watch(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self._tree(self.pid):
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
                except OSError:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def train_rate(folder: Path, out: Path, *, encoder: str, batch: int, steps: int, ranks: int, threads: int,
               device: str, workers: int, max_points: int, cache: Path) -> tuple[float, int]:
    """(global samples/s, peak RSS bytes) of a real training run (torchrun when ``ranks`` > 1)."""
    launcher = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={ranks}"]
    argv = [*launcher, "-m", "blendclip_train.cli.train", "--synthetic", str(folder), "--embeddings", KEY,
            "--encoder", encoder, "--batch-size", str(batch), "--iterations", str(steps), "--epochs", "1",
            "--log-every", "1", "--threads", str(threads), "--device", device, "--workers", str(workers),
            "--max-points", str(max_points), "--quiet", "--cache-dir", str(cache), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = PeakRss(process.pid)
    _, stderr = process.communicate()
    peak = rss.stop()
    if process.returncode != 0:
        raise SystemExit(f"training run failed:\n{stderr[-3000:]}")
    with (out / "log.csv").open(newline="") as f:
        rates = [float(r["samples_per_s"]) for r in csv.DictReader(f) if r["kind"] == "step"]
    kept = rates[2:] if len(rates) > 3 else rates[1:] or rates
    return float(np.median(kept)), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets, tiny encoder, few steps (smoke test)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--budget-gib", type=float, default=1.0, help="stated RAM budget of the memory test")
    parser.add_argument("--no-memory", action="store_true", help="skip the big-set memory test")
    args = parser.parse_args()
    quick = args.quick
    points, max_points = (1200, 1024) if quick else (10_000, 8192)
    batch, steps = (16, 4) if quick else (64, 6)
    encoders = ["tiny"] if quick else ["tiny", "full"]
    cpus = os.cpu_count() or 1
    print(f"CPU cores {cpus}, torch {torch.__version__}, CUDA {torch.cuda.is_available()}; batch {batch} per rank, "
          f"{points} points per object -> {max_points} per access")

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        small = root / "small"
        size = make_shards(small, 256 if quick else 1024, points, 128, 0, "small set")
        print(f"\nset: {256 if quick else 1024} objects, {size:.3f} GiB of shards")
        print("\n1. data pipeline alone (samples/s)")
        rates = {}
        for workers in sorted({0, args.workers}):
            rates[workers] = data_rate(small, batch, 3 if quick else 8, workers, max_points)
            print(f"   workers {workers}: {rates[workers]:8.1f}")
        pipeline = max(rates.values())

        print("\n2. training (samples/s, global and per rank) vs the data pipeline")
        print(f"   {'device':6} {'encoder':7} {'ranks':>5} {'global':>9} {'per rank':>9} {'data/rank':>10}  target")
        configs = [("cpu", encoder, ranks) for encoder in encoders for ranks in (1, 2)]
        gpus = torch.cuda.device_count()
        if gpus:
            configs += [("cuda", encoder, n) for encoder in encoders for n in sorted({1, gpus})]
        results = {}
        for device, encoder, ranks in configs:
            threads = max(1, cpus // ranks) if device == "cpu" else 2
            rate, _ = train_rate(small, root / f"run-{device}-{encoder}-{ranks}", encoder=encoder, batch=batch,
                                 steps=steps, ranks=ranks, threads=threads, device=device, workers=args.workers,
                                 max_points=max_points, cache=root / "cache")
            results[device, encoder, ranks] = rate
            ratio = pipeline / (rate / ranks)
            print(f"   {device:6} {encoder:7} {ranks:5d} {rate:9.1f} {rate / ranks:9.1f} {ratio:9.1f}x  "
                  f"{'ok' if ratio >= TARGET_RATIO else 'BELOW'} (>= {TARGET_RATIO:.0f}x)")
        for (device, encoder, ranks), rate in results.items():
            if ranks > 1:
                one = results[device, encoder, 1]
                print(f"   scaling {device} {encoder}: {ranks} ranks {rate / (ranks * one):.2f} of linear "
                      f"({rate:.1f} vs {ranks} x {one:.1f} samples/s)")
        if gpus < 2:
            print("   (GPU scaling efficiency needs 2+ GPUs: " + (f"{gpus} here)" if gpus else "no CUDA here)"))

        if args.no_memory:
            return
        print(f"\n3. memory: peak RSS of training (main + {args.workers} workers), RAM budget "
              f"{args.budget_gib:.2f} GiB")
        big = root / "big"
        target = 0.02 if quick else 1.5 * args.budget_gib
        per_object = points * 12 / 2 ** 30
        big_size = make_shards(big, int(target / per_object) + 1, points, 512, 1, "big set")
        for name, folder, gib in (("small", small, size), ("big", big, big_size)):
            _, peak = train_rate(folder, root / f"rss-{name}", encoder="tiny", batch=batch, steps=steps * 2, ranks=1,
                                 threads=max(1, cpus // 2), device="cpu", workers=args.workers, max_points=max_points,
                                 cache=root / "cache")
            print(f"   {name:5} set {gib:7.3f} GiB on disk: peak RSS {peak / 2 ** 30:.3f} GiB "
                  f"({'within' if peak / 2 ** 30 <= args.budget_gib else 'OVER'} the budget)")


if __name__ == "__main__":
    main()
