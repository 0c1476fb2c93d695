"""LiDAR simulator throughput (rays/s) against a brute-force baseline measured in the same run.

* full street scene: HDL-32E sweeps (34,688 rays) through the scene caster (sphere culling per object
  + clustered BVH + batched Möller-Trumbore);
* small scene (a few objects merged into one mesh, rays from the sensor): clustered BVH vs the
  naive vectorised all-rays x all-triangles pass, same rays, same answers.

    python benchmarks/bench_lidar.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from blendclip_sim.lidar import hdl32e
from blendclip_sim.mesh import merge, rot_z
from blendclip_sim.objects import make_object
from blendclip_sim.raycast import build_bvh, intersect, intersect_brute_force
from blendclip_sim.scene import generate_scene, simulate_frame


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and rays (CI smoke run)")
    args = ap.parse_args()
    repeats = 1 if args.quick else 3

    scene = generate_scene(2026, duration=3.0)
    n_tri = sum(len(a.obj.mesh.faces) for a in scene.actors) + sum(len(s.bvh.face) for s in scene.statics)
    rays = hdl32e().n_rays
    simulate_frame(scene, 0.0)  # warm-up
    t_scene = _best_of(lambda: simulate_frame(scene, 0.5), repeats)
    print(f"street scene: {len(scene.actors)} actors + {len(scene.statics)} static meshes, ~{n_tri:,} triangles")
    print(f"  HDL-32E sweep ({rays:,} rays, incl. sensor model and annotation): {t_scene * 1e3:.0f} ms "
          f"= {rays / t_scene:,.0f} rays/s ({1 / t_scene:.1f} sweeps/s; the real sensor spins at 20 Hz)")

    rng = np.random.default_rng(0)
    parts = []
    for i, name in enumerate(["car", "truck", "pedestrian", "bus", "traffic cone", "bicycle"]):
        o = make_object(name, i)
        offset = (rng.uniform(-15, 15), rng.uniform(-15, 15), o.size[2] / 2)
        parts.append(o.mesh.transformed(rot_z(rng.uniform(0, 6.3)), offset))
    mesh = merge(parts)
    dirs, _ = hdl32e().rays()
    n = 3000 if args.quick else 12000
    dirs = dirs[rng.choice(len(dirs), n, replace=False)]
    origins = np.tile([0.0, 0.0, 1.84], (n, 1))
    bvh = build_bvh(mesh)
    t_fast = _best_of(lambda: intersect(bvh, origins, dirs), repeats)
    t_slow = _best_of(lambda: intersect_brute_force(mesh, origins, dirs), 1)
    same = np.array_equal(np.isfinite(intersect(bvh, origins, dirs).t),
                          np.isfinite(intersect_brute_force(mesh, origins, dirs).t))
    print(f"small scene: {len(mesh.faces):,} triangles, {n:,} rays (answers identical: {same})")
    print(f"  clustered BVH : {n / t_fast:12,.0f} rays/s")
    print(f"  brute force   : {n / t_slow:12,.0f} rays/s (baseline)")
    print(f"  speed-up      : {t_slow / t_fast:.1f}x")


if __name__ == "__main__":
    main()
