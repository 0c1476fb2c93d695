"""Training throughput: the streaming data pipeline alone vs training, 1 and 2 ranks; memory on a big set.

1. Data pipeline alone: samples/s of the curriculum sampler + shard reads + per-access subset
   (10,000 -> 8,192 points) + augmentation + collate, through a DataLoader with 0 and 2 workers.
2. Training: samples/s of ``blendclip_train.cli.train`` itself (tiny and full encoder, batch 64 per
   rank), one process and under ``torchrun --nproc_per_node=2`` (gloo), read from its ``log.csv``
   (step to step, data wait included, warm-up steps dropped). Target: the pipeline delivers at
   least 5x what one rank consumes. With CUDA: the same on the GPU(s), samples/s per GPU and the
   scaling efficiency (samples/s of N GPUs / N x one GPU).
3. Memory: peak memory of the training process tree (main + workers; summed PSS, and the main
   process's RSS) on a shard set larger than a stated RAM budget vs on a small set: streaming
   keeps it flat.

The baseline of every ratio is measured in the same run. Figures on a shared machine are noisy.

    .venv/bin/python benchmarks/bench_train.py [--quick] [--workers 2] [--budget-gib 2.0]
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

from blendclip_train.augment import AugmentConfig  # noqa: E402
from blendclip_train.curriculum import CurriculumBatchSampler  # noqa: E402
from blendclip_train.data import Collate, StreamingTriplets  # noqa: E402
from blendclip_train.shards import (  # noqa: E402
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


class PeakMemory:
    """Peak memory of a process tree, sampled every 50 ms: summed PSS (shared pages such as the torch
    libraries counted once, split between the processes) and the peak RSS of the main process."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.main_rss, self._stop = pid, 0, 0, threading.Event()
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

    @staticmethod
    def _field(path: str, name: str) -> int:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _watch(self) -> None:
        while not self._stop.is_set():
            total = sum(self._field(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in self._tree(self.pid))
            self.peak = max(self.peak, total)
            self.main_rss = max(self.main_rss, self._field(f"/proc/{self.pid}/status", "VmRSS:"))
            time.sleep(0.05)

    def stop(self) -> tuple[int, int]:
        """(peak summed PSS, peak RSS of the main process) in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak, self.main_rss


def train_rate(folder: Path, out: Path, *, encoder: str, batch: int, steps: int, ranks: int, threads: int,
               device: str, workers: int, max_points: int, cache: Path) -> tuple[float, tuple[int, int]]:
    """(global samples/s, (peak PSS, peak main RSS) bytes) of a real training run (torchrun when ``ranks`` > 1)."""
    launcher = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={ranks}"]
    argv = [*launcher, "-m", "blendclip_train.cli.train", "--synthetic", str(folder), "--embeddings", KEY,
            "--encoder", encoder, "--batch-size", str(batch), "--iterations", str(steps), "--epochs", "1",
            "--log-every", "1", "--threads", str(threads), "--device", device, "--workers", str(workers),
            "--max-points", str(max_points), "--quiet", "--cache-dir", str(cache), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(process.pid)
    _, stderr = process.communicate()
    peak = memory.stop()
    if process.returncode != 0:
        raise SystemExit(f"training run failed:\n{stderr[-3000:]}")
    with (out / "log.csv").open(newline="") as f:
        rates = [float(r["samples_per_s"]) for r in csv.DictReader(f) if r["kind"] == "step"]
    kept = rates[1:] or rates  # the first step includes worker start-up
    return float(np.median(kept)), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets, tiny encoder, few steps (smoke test)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--budget-gib", type=float, default=2.0,
                        help="stated RAM budget of the memory test (default 2; the big set is 1.5x it)")
    parser.add_argument("--encoders", nargs="+", choices=("tiny", "full"), default=None,
                        help="encoders to train (default tiny and full; --quick: tiny)")
    parser.add_argument("--full-ranks", type=int, nargs="+", default=[1, 2],
                        help="rank counts for the full encoder on CPU (default 1 2)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (first one dropped)")
    parser.add_argument("--points", type=int, default=None,
                        help="points per stored object (default 10000; the access subset is min(8192, this))")
    parser.add_argument("--no-memory", action="store_true", help="skip the big-set memory test")
    parser.add_argument("--memory-only", action="store_true", help="only the big-set memory test")
    args = parser.parse_args()
    quick = args.quick
    points = args.points or (600 if quick else 10_000)
    max_points = 512 if quick else min(8192, points)
    batch = 8 if quick else 64
    steps = args.steps or (2 if quick else 4)
    encoders = args.encoders or (["tiny"] if quick else ["tiny", "full"])
    cpus = os.cpu_count() or 1
    print(f"CPU cores {cpus}, torch {torch.__version__}, CUDA {torch.cuda.is_available()}; batch {batch} per rank, "
          f"{points} points per object -> {max_points} per access")

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        small = root / "small"
        objects = 128 if quick else 1024
        size = make_shards(small, objects, points, 128, 0, "small set")
        print(f"\nset: {objects} objects, {size:.3f} GiB of shards")
        if args.memory_only:
            return memory(root, args, size, points, batch, steps, max_points)
        print("\n1. data pipeline alone (samples/s)")
        rates = {}
        for workers in sorted({0, args.workers}):
            rates[workers] = data_rate(small, batch, 3 if quick else 8, workers, max_points)
            print(f"   workers {workers}: {rates[workers]:8.1f}")
        pipeline = max(rates.values())

        print("\n2. training (samples/s, global and per rank) vs the data pipeline")
        print(f"   {'device':6} {'encoder':7} {'ranks':>5} {'global':>9} {'per rank':>9} {'data/rank':>10}  target")
        configs = [("cpu", encoder, ranks) for encoder in encoders
                   for ranks in ((1, 2) if encoder == "tiny" else args.full_ranks)]
        gpus = torch.cuda.device_count()
        if gpus:
            configs += [("cuda", encoder, n) for encoder in encoders for n in sorted({1, gpus})]
        results = {}
        for device, encoder, ranks in configs:
            threads = 1 if device == "cpu" else 2  # one core per rank: ranks x 1 thread, workers beside
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

        if not args.no_memory:
            memory(root, args, size, points, batch, steps, max_points)


def memory(root: Path, args: argparse.Namespace, size: float, points: int, batch: int, steps: int,
           max_points: int) -> None:
    """Peak memory of a tiny-encoder training run on the small set and on a set larger than the budget."""
    print(f"\n3. memory: peak of training (main + {args.workers} workers, tiny encoder, batch 16), RAM budget "
          f"{args.budget_gib:.2f} GiB")
    big = root / "big"
    target = 0.02 if args.quick else 1.5 * args.budget_gib
    per_object = points * 12 / 2 ** 30
    big_size = make_shards(big, int(target / per_object) + 1, points, 512, 1, "big set")
    for name, folder, gib in (("small", root / "small", size), ("big", big, big_size)):
        _, (pss, rss) = train_rate(folder, root / f"rss-{name}", encoder="tiny", batch=16, steps=steps, ranks=1,
                                   threads=1, device="cpu", workers=args.workers, max_points=max_points,
                                   cache=root / "cache")
        print(f"   {name:5} set {gib:7.3f} GiB on disk: peak PSS {pss / 2 ** 30:.3f} GiB (all processes), "
              f"peak RSS of the main process {rss / 2 ** 30:.3f} GiB "
              f"({'within' if pss / 2 ** 30 <= args.budget_gib else 'OVER'} the budget)")


if __name__ == "__main__":
    main()
