"""torch vs onnxruntime on the CPU at equal thread counts: objects/s, FLOP efficiency, node latency.

Objects follow bench_encoder.py's nuScenes-like size mix. For each encoder config:
  encode      objects/s of ``encode`` (grouping in torch + the dense encoder) per backend
  dense       the dense encoder alone (tokenizer MLP, transformer, projection) on the same
              grouped inputs, in the same buckets: torch modules vs the onnxruntime session
  GFLOP/s     the dense encoder's FLOPs at the batch's real token counts (no padding counted)
              divided by its time, against a plain float32 matrix product of the same FLOPs
              timed in the same run (the machine's practical limit); "x of matmul" = how many
              times slower than that limit (goal: within 2x for the full encoder)
Then, with the real sweep in ../shared/data, the classifier node's latency per backend through
bench_node_latency.py (node model.threads = the bare baseline's torch threads).

    source scripts/env.sh && python benchmarks/bench_onnx.py [--quick] [--threads 1] [--configs tiny full]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encoder import object_cloud, point_counts, random_model  # noqa: E402

from blendclip_ros.model.config import PointBertConfig  # noqa: E402
from blendclip_ros.model.onnx_backend import (INPUT_NAMES, DenseEncoder, OnnxPointModel, dense_calls,  # noqa: E402
                                              dense_inputs, export_onnx)

GOAL_MATMUL_RATIO = 2.0
MATMUL_SIZE = 512


def dense_flops(config: PointBertConfig, patch_counts: np.ndarray) -> float:
    """Multiply-adds x 2 of the dense encoder for objects with these real patch counts."""
    h1, local, h2, out = config.pointnet_dims
    w, hidden, m = config.width, config.mlp_hidden, config.group_size
    per_patch = m * 2 * (3 * h1 + h1 * local + 2 * local * h2 + h2 * out) \
        + 2 * (out * w + 3 * config.pos_hidden + config.pos_hidden * w)
    tokens = patch_counts.astype(float) + 1
    per_block = 2 * tokens * (3 * w * w + w * w + 2 * w * hidden) + 4 * tokens ** 2 * w
    per_object = per_patch * patch_counts + config.depth * per_block + 2 * 2 * w * config.embed_dim
    return float(per_object.sum())


def matmul_timer(flops: float):
    """A function timing square float32 products totalling ``flops`` (the limit, re-measured often)."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    repeats = max(1, round(flops / (2 * MATMUL_SIZE ** 3)))
    scale = flops / (2 * MATMUL_SIZE ** 3 * repeats)
    a @ b

    def run() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        return (time.perf_counter() - start) * scale

    return run


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def bench_config(name: str, batches: int, batch_size: int, threads: int, repeats: int,
                 folder: Path) -> dict[str, float]:
    """Times every section ``repeats`` times, each between two matmul timings of the same FLOPs;
    a section's figure is its best time and its best ratio to the neighbouring matmul (the machine
    is shared: the ratio of neighbours is steadier than either time)."""
    config = PointBertConfig.named(name)
    model = random_model(config, 0)
    onnx_model = OnnxPointModel(export_onnx(model, folder / f"{name}.onnx"), threads=threads)
    dense = DenseEncoder(model).eval()
    rng = np.random.default_rng(0)
    data = [[object_cloud(rng, int(n)) for n in point_counts(rng, batch_size, config.max_points)]
            for _ in range(batches)]
    grouped = [dense_inputs(clouds, config) for clouds in data]
    calls = [feeds for g in grouped for _, feeds in dense_calls(*g, config)]  # what encode runs, per backend
    torch_calls = [[torch.from_numpy(feeds[k]) for k in INPUT_NAMES] for feeds in calls]
    flops = sum(dense_flops(config, g[2].sum(1).numpy()) for g in grouped)
    matmul = matmul_timer(flops)
    session = onnx_model._session
    sections = {
        "torch encode": lambda: [model.encode(c) for c in data],
        "onnxruntime encode": lambda: [onnx_model.encode(c) for c in data],
        "torch dense": lambda: [dense(*call) for call in torch_calls],
        "onnxruntime dense": lambda: [session.run(None, feeds) for feeds in calls],
    }
    times = {key: [] for key in sections}
    ratios = {key: [] for key in sections}
    limits = []
    with torch.inference_mode():
        difference = max(float((model.encode(c) - onnx_model.encode(c)).abs().max()) for c in data)  # + warm-up
        for _ in tqdm(range(repeats), desc=name, leave=False):
            for key, section in sections.items():
                before, seconds, after = matmul(), timed(section), matmul()
                limits.append(min(before, after))
                times[key].append(seconds)
                ratios[key].append(seconds / min(before, after))
    limit = min(limits)
    objects = batches * batch_size
    patches = np.concatenate([g[2].sum(1).numpy() for g in grouped])
    print(f"\n[{name}] {objects} objects, {int(patches.sum())} real patches (median {int(np.median(patches))}); "
          f"dense encoder {flops / 1e9:.2f} GFLOP at real token counts; max |embedding difference| "
          f"torch vs onnxruntime {difference:.1e}")
    print(f"[{name}] matmul {MATMUL_SIZE}x{MATMUL_SIZE} float32, same FLOPs: best {limit * 1e3:8.1f} ms = "
          f"{flops / limit / 1e9:7.1f} GFLOP/s (the limit, timed before and after every section)")
    figures = {"difference": difference}
    for key in sections:
        seconds = min(times[key])
        rate = f"{objects / seconds:9.1f} objects/s" if "encode" in key else " " * 19
        figures[key] = min(ratios[key])
        print(f"[{name}] {key:19} {seconds * 1e3:8.1f} ms  {rate}  {flops / seconds / 1e9:7.1f} GFLOP/s = "
              f"{figures[key]:5.2f}x of matmul")
    ratio = min(times["torch encode"]) / min(times["onnxruntime encode"])
    print(f"[{name}] onnxruntime encode = {ratio:.2f}x torch's objects/s at {threads} threads each "
          "(encode includes FPS and kNN grouping in torch, not counted in the FLOPs)")
    if name == "full":
        best = min(figures["torch dense"], figures["onnxruntime dense"])
        print(f"[{name}] goal: dense encoder within {GOAL_MATMUL_RATIO:.0f}x of matmul: best {best:.2f}x "
              f"({'met' if best <= GOAL_MATMUL_RATIO else 'NOT met'})")
    return figures


def node_latency(threads: int, quick: bool, encoders: list[str]) -> None:
    """bench_node_latency.py's runs with model.backend torch and onnxruntime (equal threads)."""
    import bench_node_latency as node  # noqa: PLC0415 - needs rclpy only here

    if not node.NUSCENES_INFO.is_file():
        print(f"\nnode latency skipped: real sweep not found at {node.NUSCENES_INFO}")
        return
    env = node.peer_environment(None)
    env["OMP_NUM_THREADS"] = str(threads)
    frame = node.real_frame()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for encoder in encoders:
            for backend in ("torch", "onnxruntime"):
                bare = node.bare_pipeline_ms(encoder, *frame, repeats=3 if quick else 10, backend=backend)
                runs.append(node.run_once(env, encoder, "real", 20.0, 5.0 if quick else 15.0, bare, (0, 0),
                                          Path(tmp), backend=backend, threads=threads))
    node.print_table(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches, tiny node run only (CI smoke)")
    parser.add_argument("--configs", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    parser.add_argument("--batch", type=int, default=64, help="objects per batch")
    parser.add_argument("--batches", type=int, default=None, help="batches per config (default 4; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and onnxruntime intra-op threads (default 1, the node's model.threads)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per section (best kept; 2 with --quick)")
    parser.add_argument("--no-node", action="store_true", help="skip the node latency runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, onnxruntime CPU, {args.threads} threads each, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} (other processes distort timings)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            batch = min(args.batch, 16) if args.quick else args.batch
            bench_config(name, args.batches or (1 if args.quick else 4), batch, args.threads,
                         2 if args.quick else args.repeats, Path(tmp))
    if not args.no_node:
        node_latency(args.threads, args.quick, ["tiny"] if args.quick else args.configs)


if __name__ == "__main__":
    main()
