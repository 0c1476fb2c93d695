"""Model families on CPU: objects/s and frame latency at nuScenes-like point counts.

Each family's published architecture (random weights) classifies every box of the real nuScenes
sweep (34,688 points, 69 boxes; most objects under 50 points) through ``ObjectClassifier``, which
applies the family's own input convention: BlendCLIP encodes the crop as it is (<= 8192 points,
dynamic patch count), while ULIP-2, OpenShape and Uni3D resample every crop up to 10,000 points
and always tokenize 512 (OpenShape: 384) patches, as their authors do. "frame" is the latency of
one ``classify`` call on the whole frame (what the node's worker runs per frame, one torch
thread as the node's default ``model.threads``); objects/s = boxes encoded per second. The
baseline is BlendCLIP's encoder measured in the same run (ratio = frame latency / baseline).
Without the shared data a synthetic frame with the same log-normal object sizes is used.

    source scripts/env.sh && python benchmarks/bench_families.py [--quick] [--frames 3] [--threads 1]

``--quick``: the tiny variants only (BlendCLIP tiny, Uni3D-ti), 4 boxes, crops capped at 1024, one
timed frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blendclip_ros.geometry.boxes import Boxes  # noqa: E402
from blendclip_ros.model import families  # noqa: E402
from blendclip_ros.model.config import PointBertConfig  # noqa: E402
from blendclip_ros.model.pointbert import BlendClipPointModel  # noqa: E402
from blendclip_ros.model.ppat import OpenShapePointModel, PPATConfig  # noqa: E402
from blendclip_ros.model.uni3d import Uni3DConfig, Uni3DPointModel  # noqa: E402
from blendclip_ros.pipeline import ObjectClassifier  # noqa: E402
from blendclip_ros.text.bank import TextBank  # noqa: E402

NUSCENES_INFO = REPO.parent / "shared/data/mmdet3d/demo/data/nuscenes/n015-2018-07-24-11-22-45+0800.pkl"
ULIP2 = dict(width=384, depth=18, heads=6, in_channels=6, embed_dim=1280, dynamic_groups=False,
             fps_skip_near_origin=1e-3, max_points=10000)


def build(name: str) -> torch.nn.Module:
    """A random-weight model of one published architecture, with its family's input convention."""
    if name.startswith("blendclip"):
        return BlendClipPointModel(PointBertConfig.named(name.split("-")[1]))
    if name == "ulip2-xyzrgb":
        model = BlendClipPointModel(PointBertConfig(**ULIP2))
        model.input_convention = families.convention_for(families.ULIP2, "xyzrgb")
        return model
    if name == "openshape-vitg14":
        return OpenShapePointModel(PPATConfig())
    if name == "openshape-vitb32":
        return OpenShapePointModel(PPATConfig(mlp_dim=1024, sa_dim=128, patches=64, radius=0.4, samples=256,
                                              projected=False, embed_dim=512))
    return Uni3DPointModel(Uni3DConfig(scale=name.split("-")[1]))


def frame(quick: bool) -> tuple[np.ndarray, Boxes, str]:
    if NUSCENES_INFO.is_file():
        from blendclip_ros.data.mmdet3d_info import load_mmdet3d_frame

        sweep = load_mmdet3d_frame(NUSCENES_INFO)
        boxes = Boxes.from_mmdet3d(sweep.boxes)
        if quick:
            boxes = boxes.subset(np.arange(4))
        return sweep.points, boxes, f"real nuScenes sweep, {len(boxes)} boxes"
    rng = np.random.default_rng(0)
    count = 4 if quick else 69
    sizes = np.clip(np.rint(np.exp(rng.normal(math.log(25.0), 1.7, count))), 1, 8192).astype(int)
    centres = np.column_stack([rng.uniform(-40, 40, count), rng.uniform(-40, 40, count), np.zeros(count)])
    points = np.concatenate([c + rng.normal(0, 0.6, (n, 3)) for c, n in zip(centres, sizes)])
    points = np.column_stack([points, rng.uniform(0, 255, len(points))]).astype(np.float32)
    boxes = Boxes(centres, np.full((count, 3), 4.0), np.tile([0.0, 0.0, 0.0, 1.0], (count, 1)))
    return points, boxes, f"synthetic frame, {count} boxes"


def measure(name: str, points: np.ndarray, boxes: Boxes, frames: int, cap: int | None) -> dict:
    torch.manual_seed(0)
    model = build(name).eval()
    dim = model.config.embed_dim
    bank = TextBank(tuple(f"class {i}" for i in range(10)), F.normalize(torch.randn(10, dim), dim=-1), "random",
                    "none")
    convention = model.input_convention
    if cap is not None:
        convention = dataclasses.replace(convention, num_points=min(cap, convention.num_points))
    pipe = ObjectClassifier(model, bank, min_points=1, convention=convention)
    encoded = sum(len(i) >= 1 for i in pipe.crop(points, boxes))
    pipe.classify(points, boxes)  # warm-up
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        pipe.classify(points, boxes)
        times.append(time.perf_counter() - start)
    latency = float(np.median(times))
    return {"name": name, "latency": latency, "objects_per_s": encoded / latency, "encoded": encoded,
            "points": convention.num_points, "params": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny variants, 4 boxes, crops capped at 1024")
    parser.add_argument("--frames", type=int, default=3, help="timed frames per family (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the node's default is 1)")
    parser.add_argument("--families", nargs="*", default=None, help="subset of the families to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = 1 if args.quick else args.frames
    names = (["blendclip-tiny", "uni3d-tiny"] if args.quick else
             ["blendclip-full", "blendclip-tiny", "ulip2-xyzrgb", "openshape-vitg14", "openshape-vitb32",
              "uni3d-tiny", "uni3d-small"])
    names = args.families or names
    points, boxes, what = frame(args.quick)
    print(f"{what}; {args.threads} torch thread(s); {frames} timed frame(s) per family")
    print(f"{'family':18s} {'params':>9s} {'points':>7s} {'frame ms':>9s} {'objects/s':>10s} {'x baseline':>11s}")
    baseline = None
    for name in tqdm(names, desc="families", unit="family", file=sys.stderr):
        row = measure(name, points, boxes, frames, 1024 if args.quick else None)
        baseline = baseline or row
        print(f"{row['name']:18s} {row['params'] / 1e6:8.2f}M {row['points']:7d} {row['latency'] * 1e3:9.1f} "
              f"{row['objects_per_s']:10.1f} {row['latency'] / baseline['latency']:11.2f}", flush=True)
    print(f"baseline: {baseline['name']} ({baseline['encoded']} objects encoded per frame)")


if __name__ == "__main__":
    main()
