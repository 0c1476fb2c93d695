"""blendclip-mine: mine real (points, image crops, captions) triplets into a folder of triplet shards.

nuScenes and TruckScenes are read through their devkits (one shard per scene, --workers processes,
--shard i/n slices, reruns resume); an mmdet3d info file (one real frame) with --dataset mmdet3d.
See docs/mining.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blendclip_ros.cli.support import Parser, UsageError, positive_int, run_cli

PROG = "blendclip-mine"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Mine real object triplets (points, image crops, captions) into a folder "
                                      "of triplet shards read by blendclip-train --real and blendclip-evaluate --data.")
    p.add_argument("--dataset", choices=("nuscenes", "truckscenes", "mmdet3d"), default="nuscenes",
                   help="nuscenes (default) or truckscenes through their devkits; mmdet3d: one info-file frame")
    p.add_argument("--dataroot", required=True, type=Path,
                   help="dataset root (holds the version folder); for mmdet3d the info .pkl")
    p.add_argument("--version", default="v1.0-trainval", help="table folder name (default v1.0-trainval)")
    p.add_argument("--out", required=True, type=Path, help="output folder of shards (one per scene)")
    p.add_argument("--split", default="all", help="devkit scene split (train, val, mini_val, ...) or 'all' (default)")
    p.add_argument("--scene", action="append", default=None, metavar="NAME",
                   help="only this scene (repeatable); with --split: the intersection")
    p.add_argument("--eval", action="store_true",
                   help="evaluation set: the devkit's filter_eval_boxes (class ranges from the ego, 0-point boxes "
                        "and bikes in racks removed)")
    p.add_argument("--sweeps", type=positive_int, default=10,
                   help="nuScenes LiDAR sweeps per keyframe (default 10 = keyframe + 9 previous, motion compensated)")
    p.add_argument("--min-points", type=positive_int, default=1, help="keep boxes with at least this many points")
    p.add_argument("--frame", choices=("box", "centred"), default="box",
                   help="box: points in the annotated box's frame (default); centred: mean-centred, global axes "
                        "(as the release saves them)")
    p.add_argument("--keep-void", action="store_true", help="keep void categories labelled 'void' (not with --eval)")
    p.add_argument("--images", action="store_true", help="add camera crops (JPEG) by the release's rules")
    p.add_argument("--visibility", default="4",
                   help="visibility tokens whose boxes get crops, comma-separated (default 4 = 80-100 %%)")
    p.add_argument("--min-crop", type=positive_int, default=50, help="minimum crop width and height, px (default 50)")
    p.add_argument("--cameras", default=None, help="comma-separated camera channels (default: all)")
    p.add_argument("--pairing", choices=("instance", "keyframe"), default="instance",
                   help="images of a triplet: crops of its instance anywhere in the scene (release, default) or "
                        "of its own keyframe only")
    p.add_argument("--max-images", type=positive_int, default=8, help="images per triplet at most (default 8)")
    p.add_argument("--caption-template", default="a point cloud of a {}", help="template captions (default)")
    p.add_argument("--caption-model", type=Path, default=None,
                   help="local transformers image-text-to-text model folder (e.g. gemma-3-4b-it, BLIP-2) to "
                        "caption the crops; GPU when present")
    p.add_argument("--caption-batch", type=positive_int, default=16, help="crops per model batch (default 16)")
    p.add_argument("--caption-max-tokens", type=positive_int, default=77,
                   help="new tokens per caption at most (default 77, as the release)")
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")
    p.add_argument("--shard", default="0/1", help="i/n: mine only scenes i, i+n, ... (array jobs; default 0/1)")
    p.add_argument("--contact-sheet", type=Path, default=None, metavar="PNG",
                   help="afterwards, draw up to 48 of the folder's crops into this PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    from blendclip_train.captioning import Captioner, ModelCaptioner, TemplateCaptioner
    from blendclip_train.mining import (
        CropRules,
        MiningConfig,
        dataset_spec,
        parse_slice,
        run_mining,
        scene_units,
    )

    if args.eval and args.keep_void:
        raise UsageError("--keep-void: evaluation sets have no void class")
    crops = CropRules(tuple(v.strip() for v in args.visibility.split(",") if v.strip()), args.min_crop,
                      None if args.cameras is None else tuple(c.strip() for c in args.cameras.split(","))) \
        if args.images else None
    config = MiningConfig(sweeps=args.sweeps, min_points=args.min_points, frame=args.frame, eval_set=args.eval,
                          keep_void=args.keep_void, crops=crops, pairing=args.pairing, max_images=args.max_images)
    template = TemplateCaptioner(args.caption_template)  # also checks the template
    model = args.caption_model
    cache = None if model is None else args.out / ".caption-cache" / model.name

    def factory() -> Captioner:
        if model is None:
            return TemplateCaptioner(args.caption_template)
        return ModelCaptioner(model, batch_size=args.caption_batch, max_new_tokens=args.caption_max_tokens,
                              cache_dir=cache, template=args.caption_template)

    name = f"template:{template.template}" if model is None else f"model:{model.name}"
    factory()  # fail early on a bad model folder; the model itself loads lazily in the workers
    if args.dataset == "mmdet3d":
        from blendclip_train.mining.real_sweep import mine_info_file

        summary = mine_info_file(args.dataroot, args.out, config, factory())
    else:
        spec = dataset_spec(args.dataset)
        db = spec.open(args.dataroot, args.version)
        units = scene_units(db, spec, args.split, args.scene)
        summary = run_mining(db, spec, units, args.out, config, workers=args.workers, shard=parse_slice(args.shard),
                             captioner_factory=factory, captioner_name=name,
                             source={"version": args.version, "split": args.split}, progress=not args.no_progress)
    if args.contact_sheet is not None:
        from blendclip_train.mining.sheet import contact_sheet

        contact_sheet(args.out, args.contact_sheet)
    print(json.dumps({"out": str(args.out), **summary}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
