"""blendclip-simulate: simulated driving data (nuScenes-format scenes, bags, object sets, pictures).

Subcommands: ``scene``, ``demo-bag``, ``objects``, ``pictures``, ``compare-real``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from blendclip_ros.errors import BlendClipError

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "data" / "demo"
# distance bins (m) for the real-vs-simulated point-count comparison
DISTANCE_BINS = (0.0, 15.0, 25.0, 40.0, 60.0, 100.0)


def _cmd_scene(args: argparse.Namespace) -> None:
    from blendclip_sim.lidar import preset
    from blendclip_sim.nuscenes_writer import write_nuscenes
    from blendclip_sim.scene import generate_scene

    scenes = [generate_scene(args.seed + i, duration=args.duration, density=args.density) for i in range(args.scenes)]
    if args.format == "truckscenes":
        from blendclip_sim.truckscenes_writer import write_truckscenes

        root = write_truckscenes(scenes, args.out, version=args.version, keyframe_hz=args.keyframe_hz)
        print(f"wrote {len(scenes)} scene(s) to {root} (load with TruckScenes('{args.version}', '{root}'))")
        return
    cameras = None
    if args.cameras:
        from blendclip_sim.cameras import nuscenes_rig

        try:
            width, height = (int(v) for v in args.cameras.lower().split("x"))
        except ValueError:
            raise BlendClipError(f"--cameras: expected WIDTHxHEIGHT, got {args.cameras!r}") from None
        cameras = nuscenes_rig(width, height)
    root = write_nuscenes(scenes, args.out, version=args.version, keyframe_hz=args.keyframe_hz,
                          sweeps_per_keyframe=args.sweeps, pattern=preset(args.lidar), cameras=cameras, progress=True)
    print(f"wrote {len(scenes)} scene(s) to {root} (load with NuScenes('{args.version}', '{root}', "
          "colormap=sim_colormap()))")


def _cmd_demo_bag(args: argparse.Namespace) -> None:
    import shutil

    from blendclip_sim.bag_export import write_demo_bag

    out = Path(args.out)
    if out.exists():
        if not args.force:
            raise BlendClipError(f"--out: {out} exists; pass --force to replace it")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_demo_bag(out, seed=args.seed, duration=args.duration, rate_hz=args.rate, progress=True)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")


def _cmd_objects(args: argparse.Namespace) -> None:
    from blendclip_sim.lidar import preset
    from blendclip_sim.object_sets import write_object_sets

    n = 150 if args.quick else args.per_class
    paths = write_object_sets(args.out, seed=args.seed, n_per_class=n, test_fraction=args.test_fraction,
                              cad_points=1024 if args.quick else args.cad_points,
                              lidar_views=1 if args.quick else args.views,
                              normal_noise=args.normal_noise, pattern=preset(args.lidar), progress=True,
                              **({} if args.mount_height is None else {"mount_height": args.mount_height}))
    for (domain, split), path in sorted(paths.items()):
        print(f"{domain:5s} {split:5s} -> {path}")


def _cmd_pictures(args: argparse.Namespace) -> None:
    from blendclip_sim.pictures import bev_picture, gallery_picture
    from blendclip_sim.scene import generate_scene, simulate_frame

    out = Path(args.out)
    scene = generate_scene(args.seed, duration=3.0, name=f"demo-{args.seed}")
    print(bev_picture(simulate_frame(scene, 1.0), out / "sim_bev.png"))
    for name in args.classes:
        print(gallery_picture(name, out / f"sim_gallery_{name.replace(' ', '_')}.png", seed=args.seed))


def _medians(mask: np.ndarray, distances: np.ndarray, counts: np.ndarray) -> str:
    """``count  median distance  median points`` of the boxes in ``mask`` (dashes when none)."""
    if not mask.any():
        return f"{0:4d} {'-':>6s} {'-':>7s}"
    return f"{mask.sum():4d} {np.median(distances[mask]):6.1f} {np.median(counts[mask]):7.1f}"


def point_count_table(distances: np.ndarray, counts: np.ndarray,
                      bins=DISTANCE_BINS) -> list[tuple[str, int, float, float]]:
    """(bin label, boxes, median points, fraction of boxes with <= 5 points) per distance bin."""
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (distances >= lo) & (distances < hi)
        if m.any():
            rows.append((f"{lo:.0f}-{hi:.0f} m", int(m.sum()), float(np.median(counts[m])),
                         float((counts[m] <= 5).mean())))
    return rows


def _cmd_compare_real(args: argparse.Namespace) -> None:
    from blendclip_ros.data.mmdet3d_info import load_mmdet3d_frame
    from blendclip_sim.scene import generate_scene, simulate_frame

    real = load_mmdet3d_frame(args.real)
    keep = np.array([lab != "ignore" for lab in real.labels])
    r_dist = np.linalg.norm(real.boxes[keep, :2], axis=1)
    r_cnt = real.num_lidar_pts[keep]
    s_dist, s_cnt, s_cls = [], [], []
    for i in range(args.scenes):
        frame = simulate_frame(generate_scene(args.seed + i, duration=1.0), 0.0)
        sensor = frame.ego_rotation @ np.array([0.943713, 0.0, 1.84023]) + frame.ego_translation
        for a in frame.annotations:
            if a.actor.obj.class_name in ("traffic sign", "animal", "other vehicle"):
                continue  # not nuScenes detection classes
            s_dist.append(np.linalg.norm(a.centre[:2] - sensor[:2]))
            s_cnt.append(a.num_lidar_pts)
            s_cls.append(a.actor.obj.class_name)
    s_dist, s_cnt, s_cls = np.array(s_dist), np.array(s_cnt), np.array(s_cls)
    r_cls = np.array([lab.replace("_", " ") for lab, k in zip(real.labels, keep) if k])
    print(f"real nuScenes keyframe: {keep.sum()} boxes; simulated: {len(s_cnt)} boxes in {args.scenes} scene(s)")
    print(f"{'':10s} {'real: n':>8s} {'median':>7s} {'<=5 pts':>8s} | {'sim: n':>7s} {'median':>7s} {'<=5 pts':>8s}")
    real_rows = {r[0]: r for r in point_count_table(r_dist, r_cnt)}
    sim_rows = {r[0]: r for r in point_count_table(s_dist, s_cnt)}
    for label in dict.fromkeys(list(real_rows) + list(sim_rows)):
        a = real_rows.get(label, (label, 0, float("nan"), float("nan")))
        b = sim_rows.get(label, (label, 0, float("nan"), float("nan")))
        print(f"{label:10s} {a[1]:8d} {a[2]:7.1f} {a[3]:8.0%} | {b[1]:7d} {b[2]:7.1f} {b[3]:8.0%}")
    print(f"{'all':10s} {len(r_cnt):8d} {np.median(r_cnt):7.1f} {(r_cnt <= 5).mean():8.0%} | "
          f"{len(s_cnt):7d} {np.median(s_cnt):7.1f} {(s_cnt <= 5).mean():8.0%}")
    for q in (25, 75, 90):
        print(f"  p{q}: real {np.percentile(r_cnt, q):.0f}, sim {np.percentile(s_cnt, q):.0f}")
    print("per class (boxes; median distance m; median points):")
    for name in sorted(set(r_cls) | set(s_cls)):
        rm, sm = r_cls == name, s_cls == name
        print(f"  {name:22s} real {_medians(rm, r_dist, r_cnt)} | sim {_medians(sm, s_dist, s_cnt)}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="blendclip-simulate", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("scene", help="write simulated scenes as a nuScenes-format dataset")
    s.add_argument("--out", required=True, type=Path, help="dataset root to create")
    s.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    s.add_argument("--seed", type=int, default=0, help="seed of the first scene (default 0)")
    s.add_argument("--duration", type=float, default=4.0, help="seconds per scene (default 4)")
    s.add_argument("--density", type=float, default=1.0, help="actor density multiplier (default 1)")
    s.add_argument("--keyframe-hz", type=float, default=2.0, help="sample rate (default 2, as nuScenes)")
    s.add_argument("--sweeps", type=int, default=0, help="sweeps between keyframes (9 = nuScenes' 20 Hz)")
    s.add_argument("--lidar", default="hdl32e", choices=["hdl32e", "hdl64e", "vls128"], help="beam pattern")
    s.add_argument("--version", default="v1.0-sim", help="version folder name (default v1.0-sim)")
    s.add_argument("--cameras", default=None, metavar="WxH",
                   help="also render the six nuScenes cameras at this size (e.g. 320x180); visibility from occlusion")
    s.add_argument("--format", choices=("nuscenes", "truckscenes"), default="nuscenes",
                   help="nuscenes (default) or truckscenes (a truck with six LiDARs, keyframes only)")
    s.set_defaults(func=_cmd_scene)

    from blendclip_sim.bag_export import DEMO_DURATION, DEMO_RATE_HZ, DEMO_SEED

    s = sub.add_parser("demo-bag", help="(re)generate the bundled MCAP demo bag, bit for bit")
    s.add_argument("--out", type=Path, default=DEMO_DIR, help=f"bag folder (default {DEMO_DIR})")
    s.add_argument("--seed", type=int, default=DEMO_SEED, help=f"scene seed (default {DEMO_SEED})")
    s.add_argument("--duration", type=float, default=DEMO_DURATION, help=f"seconds (default {DEMO_DURATION})")
    s.add_argument("--rate", type=float, default=DEMO_RATE_HZ, help=f"sweeps per second (default {DEMO_RATE_HZ})")
    s.add_argument("--force", action="store_true", help="replace an existing bag folder")
    s.set_defaults(func=_cmd_demo_bag)

    s = sub.add_parser("objects", help="write the CAD and LiDAR object sets (train/test by instance)")
    s.add_argument("--out", required=True, type=Path, help="folder for <domain>_<split>.npz")
    s.add_argument("--per-class", type=int, default=200, help="instances per class (default 200)")
    s.add_argument("--test-fraction", type=float, default=0.2, help="held-out instances (default 0.2)")
    s.add_argument("--cad-points", type=int, default=8192, help="points per CAD cloud (default 8192)")
    s.add_argument("--views", type=int, default=2, help="LiDAR views per instance (default 2)")
    s.add_argument("--normal-noise", type=float, default=0.0, help="CAD noise along normals, metres")
    s.add_argument("--lidar", default="hdl32e", choices=["hdl32e", "hdl64e", "vls128"],
                   help="beam pattern of the LiDAR views (default hdl32e)")
    s.add_argument("--mount-height", type=float, default=None,
                   help="LiDAR height above the ground, metres (default: nuScenes LIDAR_TOP, 1.84)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quick", action="store_true",
                   help="150 instances per class (1,950 objects), 1024 CAD points, 1 LiDAR view")
    s.set_defaults(func=_cmd_objects)

    s = sub.add_parser("pictures", help="bird's-eye view and CAD-vs-LiDAR galleries as PNG")
    s.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="output folder")
    s.add_argument("--seed", type=int, default=DEMO_SEED)
    s.add_argument("--classes", nargs="+", default=["car", "pedestrian", "traffic cone", "bus"])
    s.set_defaults(func=_cmd_pictures)

    s = sub.add_parser("compare-real", help="point counts per box: simulated vs the real nuScenes keyframe")
    s.add_argument("--real", type=Path,
                   default=REPO.parent / "shared/data/mmdet3d/demo/data/nuscenes/n015-2018-07-24-11-22-45+0800.pkl",
                   help="mmdet3d info .pkl of a real frame")
    s.add_argument("--scenes", type=int, default=5, help="simulated keyframes, one per scene (default 5)")
    s.add_argument("--seed", type=int, default=100)
    s.set_defaults(func=_cmd_compare_real)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BlendClipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
