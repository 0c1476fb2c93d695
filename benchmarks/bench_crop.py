"""Points-in-boxes cropping: our grid-prefiltered pass vs the devkit loop and a one-pass floor.

Frames: the real nuScenes sweep (34,688 points, 69 boxes; skipped without the shared data)
and a synthetic 300k-point, 200-box frame (a LiDAR-like ring with objects). For each frame:

  (a) devkit   nuscenes.utils.geometry_utils.points_in_box, one call per box (baseline);
  (b) floor    one vectorised pass over the cloud's coordinates (``|p - c| <= h`` for a
               single axis-aligned box): the memory-bound cost of touching every point once;
  (c) ours     blendclip_ros.geometry.crop.points_in_boxes for all boxes.

The script checks that (c) returns exactly (a)'s index sets, and prints the best-of-repeats
times with the ratios ours/floor (target <= 3) and devkit/ours. Exit status 1 on a mismatch.

    .venv/bin/python benchmarks/bench_crop.py [--quick] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import points_in_box
from pyquaternion import Quaternion
from tqdm import tqdm

from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.crop import points_in_boxes

TARGET_FLOOR_RATIO = 3.0
NUSCENES_INFO = (Path(__file__).resolve().parents[2] / "shared/data/mmdet3d/demo/data/nuscenes"
                 / "n015-2018-07-24-11-22-45+0800.pkl")


def devkit_loop(points: np.ndarray, boxes: Boxes) -> list[np.ndarray]:
    """The devkit way: a Box (wlh = [w, l, h], w-first quaternion) and a mask per box."""
    xyz_t = points[:, :3].T
    out = []
    for center, (length, width, height), (x, y, z, w) in zip(boxes.centers, boxes.sizes, boxes.quaternions):
        box = Box(center, [width, length, height], Quaternion(w, x, y, z))
        out.append(np.flatnonzero(points_in_box(box, xyz_t)))
    return out


def one_pass_floor(points: np.ndarray, boxes: Boxes) -> np.ndarray:
    """A single vectorised pass over all points (one axis-aligned box test)."""
    return np.flatnonzero(np.all(np.abs(points[:, :3] - boxes.centers[0]) <= boxes.sizes[0] / 2, axis=1))


def synthetic_frame(n_points: int, n_boxes: int, seed: int = 0) -> tuple[np.ndarray, Boxes]:
    """A LiDAR-like frame: 70 % ground ring (density falling with range), 30 % on objects."""
    rng = np.random.default_rng(seed)
    n_boxes = max(n_boxes, 1)
    centers_r = rng.uniform(4.0, 60.0, n_boxes)
    centers_a = rng.uniform(-np.pi, np.pi, n_boxes)
    sizes = np.column_stack([rng.uniform(0.5, 12.0, n_boxes), rng.uniform(0.5, 3.0, n_boxes),
                             rng.uniform(0.8, 3.5, n_boxes)])
    centers = np.column_stack([centers_r * np.cos(centers_a), centers_r * np.sin(centers_a),
                               sizes[:, 2] / 2 - 1.8])
    boxes = Boxes.from_yaw(centers, sizes, rng.uniform(-np.pi, np.pi, n_boxes))
    n_ground = int(0.7 * n_points)
    radius = np.exp(rng.uniform(np.log(2.0), np.log(80.0), n_ground))
    angle = rng.uniform(-np.pi, np.pi, n_ground)
    ground = np.column_stack([radius * np.cos(angle), radius * np.sin(angle),
                              rng.normal(-1.8, 0.03, n_ground)])
    owner = rng.integers(0, n_boxes, n_points - n_ground)
    local = rng.uniform(-0.6, 0.6, (len(owner), 3)) * sizes[owner]  # some just outside the box
    objects = np.einsum("nij,nj->ni", boxes.rotation_matrices[owner], local) + centers[owner]
    xyz = np.vstack([ground, objects])
    intensity = rng.uniform(0, 255, (len(xyz), 1))
    points = np.hstack([xyz, intensity, rng.integers(0, 32, (len(xyz), 1))]).astype(np.float32)
    return points[rng.permutation(len(points))], boxes


def best_ms(fn: Callable[[], object], repeat: int, label: str) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs (after one warm-up run) in ms, and the last result."""
    result = fn()
    times = []
    for _ in tqdm(range(repeat), desc=label, leave=False, disable=repeat < 3):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times), result


def bench_frame(name: str, points: np.ndarray, boxes: Boxes, repeat: int, devkit_repeat: int) -> bool:
    devkit_ms, expected = best_ms(lambda: devkit_loop(points, boxes), devkit_repeat, f"{name} devkit")
    floor_ms, _ = best_ms(lambda: one_pass_floor(points, boxes), repeat * 4, f"{name} floor")
    ours_ms, got = best_ms(lambda: points_in_boxes(points, boxes), repeat * 4, f"{name} ours")
    identical = len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected))
    inside = sum(len(i) for i in got)
    ratio = ours_ms / floor_ms
    print(f"{name}: {len(points):,} points, {len(boxes)} boxes, {inside:,} points inside boxes")
    print(f"  (a) devkit per-box loop   {devkit_ms:9.2f} ms")
    print(f"  (b) one-pass floor        {floor_ms:9.2f} ms")
    print(f"  (c) points_in_boxes       {ours_ms:9.2f} ms   ours/floor {ratio:5.2f}x "
          f"(target <= {TARGET_FLOOR_RATIO:.0f}x: {'met' if ratio <= TARGET_FLOOR_RATIO else 'MISSED'})"
          f"   devkit/ours {devkit_ms / ours_ms:6.1f}x")
    print(f"  identical to the devkit: {'yes' if identical else 'NO'}")
    return identical


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small synthetic frame, few repeats (CI)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats per measurement")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else max(args.repeat, 1)
    ok = True
    if NUSCENES_INFO.is_file():
        from blendclip_ros.data.mmdet3d_info import load_mmdet3d_frame

        frame = load_mmdet3d_frame(NUSCENES_INFO)
        ok &= bench_frame("nuScenes sweep", frame.points, Boxes.from_mmdet3d(frame.boxes),
                          repeat, repeat)
    else:
        print(f"nuScenes sweep: skipped ({NUSCENES_INFO} not found)")
    n_points, n_boxes = (30_000, 20) if args.quick else (300_000, 200)
    points, boxes = synthetic_frame(n_points, n_boxes)
    ok &= bench_frame("synthetic frame", points, boxes, repeat, 1 if args.quick else 2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
