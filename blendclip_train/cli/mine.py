"""blendclip-mine: mine real object triplets from a nuScenes-format dataset into an object-set .npz.

Every annotated box of every LIDAR_TOP keyframe with at least --min-points points inside becomes
one object (10 nuScenes detection classes; void categories dropped). See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blendclip_ros.cli.support import Parser, UsageError, positive_int, run_cli

PROG = "blendclip-mine"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Mine object triplets (points, caption) from a nuScenes-format dataset "
                                      "into the object-set .npz format read by blendclip-train.")
    p.add_argument("--dataroot", required=True, type=Path, help="dataset root (holds the version folder)")
    p.add_argument("--version", default="v1.0-trainval", help="table folder name (default v1.0-trainval)")
    p.add_argument("--out", required=True, type=Path, help="output .npz file")
    p.add_argument("--split", default="all",
                   help="devkit scene split (train, val, mini_train, mini_val, ...) or 'all' (default)")
    p.add_argument("--scene", action="append", default=None, metavar="NAME",
                   help="only this scene (repeatable); combined with --split as an intersection")
    p.add_argument("--sweeps", type=positive_int, default=1,
                   help="LiDAR sweeps per keyframe: 1 = keyframe only, 10 = keyframe + 9 previous (BlendCLIP)")
    p.add_argument("--no-motion-compensation", action="store_true",
                   help="with --sweeps > 1: crop older sweeps with the keyframe box (moving objects smear)")
    p.add_argument("--min-points", type=positive_int, default=1, help="keep boxes with at least this many points")
    p.add_argument("--frame", choices=("box", "centred"), default="box",
                   help="box: points in the box frame (default, as the simulated sets); "
                        "centred: mean-centred in LiDAR axes")
    p.add_argument("--eval-ranges", action="store_true",
                   help="keep only boxes within the class's nuScenes evaluation range (50/40/30 m)")
    p.add_argument("--captions", type=Path, default=None,
                   help="JSON object: sample-annotation or instance token -> caption (VLM captions); "
                        "others get 'a point cloud of a {class}'")
    p.add_argument("--max-samples", type=positive_int, default=None, help="stop after this many keyframes")
    p.add_argument("--split-label", default=None,
                   help="split name written into the file (default: --split, or 'train' for 'all')")
    return p


def run(args: argparse.Namespace) -> int:
    from blendclip_ros.data.nuscenes_frames import open_nuscenes
    from blendclip_train.mining import DETECTION_CLASSES, MiningConfig, mine_object_set, scene_sample_tokens

    if args.out.suffix != ".npz":
        raise UsageError(f"--out: expected a .npz file name, got {args.out.name!r}")
    if args.no_motion_compensation and args.sweeps == 1:
        raise UsageError("--no-motion-compensation: only meaningful with --sweeps > 1")
    captions = _captions(args.captions) if args.captions else None
    config = MiningConfig(sweeps=args.sweeps, min_points=args.min_points, frame=args.frame,
                          motion_compensation=not args.no_motion_compensation, eval_ranges=args.eval_ranges,
                          split=args.split_label or (args.split if args.split != "all" else "train"))
    nusc = open_nuscenes(args.dataroot, args.version)
    tokens = scene_sample_tokens(nusc, args.split, args.scene)
    if args.max_samples is not None:
        tokens = tokens[:args.max_samples]
    objects = mine_object_set(nusc, tokens, config, captions=captions, progress=True)
    objects.save(args.out)
    counts = {name: int((objects.labels == i).sum()) for i, name in enumerate(DETECTION_CLASSES)}
    print(json.dumps({"out": str(args.out), "samples": len(tokens), "objects": len(objects),
                      "points": int(objects.num_points.sum()), "per_class": counts}))
    return 0


def _captions(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--captions: cannot read {path} as JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise UsageError(f"--captions: {path} must hold one JSON object of token -> caption strings")
    return data


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
