"""blendclip-classify: zero-shot classification of the boxes of one point-cloud file.

Prints one JSON object per box, in input order:
``{"id", "num_points", "label", "score", "top_k": [[label, score], ...]}``.
Bad files, boxes or arguments give a one-line error on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blendclip_ros.cli.support import Parser, UsageError, positive_int, run_cli, text_tower_spec
from blendclip_ros.errors import PromptError

PROG = "blendclip-classify"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Zero-shot classification of the objects in 3D boxes of a point cloud.")
    p.add_argument("--points", required=True, type=Path, help="point file (.bin float32, .npy, .pcd)")
    p.add_argument("--boxes", required=True, type=Path, help="BOXES.json (ids, centres, sizes, rotations)")
    p.add_argument("--point-dims", type=positive_int, default=None,
                   help="floats per point in a .bin file (default: the reader's, e.g. 4 or 5)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="point-model checkpoint (default: random-init encoder, for smoke tests only)")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--prompts", default=None, help="prompt-set YAML or shipped set name (default nuscenes)")
    labels.add_argument("--labels", default=None, help="comma-separated class names, e.g. car,truck,pedestrian")
    labels.add_argument("--bank", type=Path, default=None,
                        help="prompt-bank file from blendclip-prompts encode (no text tower is built)")
    p.add_argument("--text-tower", choices=("minilm", "open_clip"), default=None,
                   help="text tower when the checkpoint names none (default minilm)")
    p.add_argument("--text-model", default=None,
                   help="open_clip model config for --text-tower open_clip (default ViT-B-16, or the checkpoint's)")
    p.add_argument("--text-weights", default=None,
                   help="local weights file of the checkpoint's text tower, or of --text-tower open_clip "
                        "(with --allow-network, a pretrained tag)")
    p.add_argument("--allow-network", action="store_true", help="allow downloading pretrained text weights")
    p.add_argument("--encoder", choices=("tiny", "full"), default="tiny", help="preset without --checkpoint")
    p.add_argument("--device", default="cpu", help="cpu or cuda (falls back to cpu with a warning)")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="encoder runtime: torch, or onnxruntime on the encoder exported once (needs the onnx extra)")
    p.add_argument("--top-k", type=positive_int, default=3)
    p.add_argument("--min-points", type=positive_int, default=1, help="boxes with fewer points are 'unknown'")
    p.add_argument("--max-points", type=positive_int, default=None,
                   help="points per crop after sampling (default: the model family's count, 8192 for BlendCLIP)")
    p.add_argument("--margin", type=float, default=0.0, help="grow every box face by this many metres")
    p.add_argument("--score-threshold", type=float, default=0.0, help="top-1 probability below -> 'unknown'")
    p.add_argument("--colour", choices=("gray", "intensity"), default=None,
                   help="rgb for models that take it: the authors' 0.4 gray (default) or the point intensity")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init encoder")
    p.add_argument("--cache-dir", type=Path, default=None, help="text-embedding cache directory")
    return p


def _text_tower(args: argparse.Namespace) -> dict | None:
    if args.text_tower is None:
        if args.text_weights is not None and args.checkpoint is None:
            raise UsageError("argument error: --text-weights needs --text-tower open_clip or a --checkpoint")
    return text_tower_spec(args.text_tower, args.text_model, args.text_weights)


def run(args: argparse.Namespace) -> int:
    from blendclip_ros.geometry.files import load_boxes_json, load_points
    from blendclip_ros.pipeline import ObjectClassifier
    from blendclip_ros.text.prompts import PromptSet

    points = load_points(args.points, args.point_dims)
    ids, boxes = load_boxes_json(args.boxes)
    try:
        prompts = PromptSet.from_labels(args.labels) if args.labels is not None else args.prompts
    except PromptError as exc:
        raise UsageError(f"--labels: {exc}") from None
    tower = _text_tower(args)
    classifier = ObjectClassifier.from_config(
        args.checkpoint, encoder=args.encoder, text_tower=tower, prompts=prompts, bank=args.bank,
        text_weights=args.text_weights if tower is None else None, colour=args.colour,
        device=args.device, seed=args.seed, cache_dir=args.cache_dir, allow_network=args.allow_network,
        backend=args.backend,
        top_k=args.top_k,
        min_points=args.min_points, max_points=args.max_points, margin=args.margin,
        score_threshold=args.score_threshold)
    results = classifier.classify(points, boxes)
    out = sys.stdout
    for box_id, result in zip(ids, results):
        pred = result.prediction
        out.write(json.dumps({
            "id": box_id, "num_points": result.num_points, "label": pred.label,
            "score": round(pred.score, 6), "top_k": [[name, round(s, 6)] for name, s in pred.top_k],
        }) + "\n")
    out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
