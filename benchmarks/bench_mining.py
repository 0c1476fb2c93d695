"""Mining throughput: annotations per second on a simulated nuScenes-format dataset with 10 sweeps.

The dataset (written once, not timed): ``--scenes`` simulated scenes at 2 Hz keyframes with 9
sweeps between them (nuScenes' 20 Hz, so every keyframe after the first fuses 10 sweeps) and six
rendered cameras. Each arm mines the whole dataset into a fresh shard folder with
``run_mining`` (the code behind ``blendclip-mine``):

  (a) 1 worker, points only (baseline)   (b) 2 workers, points only
  (c) 1 worker, points + image crops     (d) 2 workers, points + image crops

and prints annotations/s, triplets/s and images, with ratios against (a) and the 2-worker
speed-up per mode (target: near 2x on two free cores). Scaling needs idle cores: on a shared
machine the 2-worker figures are bounded by the cores actually available (printed).

    .venv/bin/python benchmarks/bench_mining.py [--quick] [--scenes 4] [--duration 2.0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from blendclip_sim.cameras import nuscenes_rig
from blendclip_sim.nuscenes_writer import write_nuscenes
from blendclip_sim.scene import generate_scene
from blendclip_train.mining import NUSCENES, CropRules, MiningConfig, run_mining, scene_units


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 scenes of 1 s, 160x90 cameras")
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--duration", type=float, default=2.0, help="seconds per scene (2 keyframes per second)")
    p.add_argument("--camera-size", default="320x180")
    args = p.parse_args()
    scenes, duration, size = (2, 1.0, "160x90") if args.quick else (args.scenes, args.duration, args.camera_size)
    width, height = (int(v) for v in size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="bench_mining_"))
    try:
        t = time.perf_counter()
        write_nuscenes([generate_scene(100 + i, duration=duration) for i in range(scenes)], work / "data",
                       sweeps_per_keyframe=9, cameras=nuscenes_rig(width, height))
        print(f"dataset: {scenes} scenes x {duration:g} s, 9 sweeps between keyframes, six {size} cameras "
              f"(written in {time.perf_counter() - t:.1f} s, not timed)")
        nusc = NUSCENES.open(work / "data", "v1.0-sim")
        units = scene_units(nusc, NUSCENES)
        annotations = sum(len(nusc.get("sample", tok)["anns"]) for u in units for tok in u.sample_tokens)
        cores = len(os.sched_getaffinity(0))
        print(f"{len(units)} scenes, {sum(len(u.sample_tokens) for u in units)} keyframes, {annotations} annotations; "
              f"{cores} cores available, load average {os.getloadavg()[0]:.1f}")
        crops = CropRules(min_size=20 if args.quick else 50)
        rows = {}
        for name, workers, rules in (("a 1 worker, points", 1, None), ("b 2 workers, points", 2, None),
                                     ("c 1 worker, points+crops", 1, crops), ("d 2 workers, points+crops", 2, crops)):
            out = work / name[0]
            t = time.perf_counter()
            summary = run_mining(nusc, NUSCENES, units, out, MiningConfig(sweeps=10, crops=rules), workers=workers,
                                 progress=False)
            elapsed = time.perf_counter() - t
            rows[name] = (elapsed, summary)
        base = rows["a 1 worker, points"][0]
        print(f"{'arm':28s} {'seconds':>8s} {'ann/s':>8s} {'triplets/s':>10s} {'images':>7s} {'vs (a)':>7s}")
        for name, (elapsed, summary) in rows.items():
            print(f"{name:28s} {elapsed:8.2f} {annotations / elapsed:8.1f} {summary['triplets'] / elapsed:10.1f} "
                  f"{summary['images']:7d} {base / elapsed:6.2f}x")
        print(f"2-worker speed-up: points {rows['a 1 worker, points'][0] / rows['b 2 workers, points'][0]:.2f}x, "
              f"points+crops {rows['c 1 worker, points+crops'][0] / rows['d 2 workers, points+crops'][0]:.2f}x "
              "(target ~2x with two idle cores)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
