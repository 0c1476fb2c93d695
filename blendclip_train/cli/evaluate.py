"""blendclip-evaluate: zero-shot evaluation of a point-model checkpoint on object sets.

Prints (and optionally writes) a JSON document: overall top-1/top-5, mean class accuracy,
per-class values, the confusion matrix and the objects skipped because the prompt set lacks
their class. Optionally draws the confusion matrix as a PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blendclip_ros.cli.support import Parser, UsageError, positive_int, run_cli

PROG = "blendclip-evaluate"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Zero-shot evaluation of a checkpoint on object-set .npz files "
                                      "(written by blendclip-simulate objects or blendclip-mine).")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint (project .safetensors or release)")
    p.add_argument("--data", required=True, type=Path, nargs="+", help="object-set .npz file(s), pooled")
    p.add_argument("--prompts", default="nuscenes", help="prompt-set YAML or shipped set name (default nuscenes)")
    p.add_argument("--text-tower", choices=("minilm", "open_clip"), default=None,
                   help="text tower when the checkpoint names none (release files name theirs)")
    p.add_argument("--text-weights", default=None, help="local weights for --text-tower open_clip")
    p.add_argument("--device", default="cpu", help="cpu or cuda (falls back to cpu with a warning)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="clouds per encoder call")
    p.add_argument("--max-points", type=positive_int, default=8192, help="FPS cap per cloud")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON result to this file")
    p.add_argument("--confusion", type=Path, default=None, help="write the confusion matrix as a PNG")
    p.add_argument("--cache-dir", type=Path, default=None, help="text-embedding cache directory")
    return p


def run(args: argparse.Namespace) -> int:
    from blendclip_train.evaluate import confusion_png, evaluate_checkpoint

    tower = None
    if args.text_tower == "minilm":
        tower = {"type": "minilm"}
    elif args.text_tower == "open_clip":
        tower = {"type": "open_clip", "model": "ViT-B-16", "weights": args.text_weights}
    elif args.text_weights is not None:
        raise UsageError("argument error: --text-weights needs --text-tower open_clip")
    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.prompts, device=args.device,
                                  batch_size=args.batch_size, max_points=args.max_points, cache_dir=args.cache_dir,
                                  text_tower=tower, progress=sys.stderr.isatty())
    document = {"checkpoint": str(args.checkpoint), "data": [str(p) for p in args.data],
                "prompts": str(args.prompts), **metrics.to_dict()}
    text = json.dumps(document)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1))
    if args.confusion is not None:
        confusion_png(metrics, args.confusion, title=f"{args.checkpoint.parent.name}/{args.checkpoint.name} on "
                      f"{', '.join(p.stem for p in args.data)}: top-1 {100 * metrics.top1:.1f} %")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
