"""blendclip-evaluate: zero-shot evaluation of a point-model checkpoint on benchmark sets.

``--data FORMAT:PATH`` reads a benchmark in its published layout (modelnet40, scanobjectnn,
objaverse_lvis, nuscenes/truckscenes shard folders, shards, mmdet3d info .pkl, npz object sets; a
bare ``.npz`` path still works) with the release's prompt set, point count and normalisation.
Prints the JSON report on stdout and the tables (overall, per class, by point count and
distance) on stderr; ``--out DIR`` also writes report.json/.md, the confusion matrix (PNG + JSON)
and the breakdown plot. ``--compare A.json B.json`` prints the differences of two reports.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blendclip_ros.cli.support import Parser, UsageError, positive_int, run_cli, text_tower_spec

PROG = "blendclip-evaluate"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Zero-shot evaluation of a checkpoint on benchmark sets "
                                      "(--data FORMAT:PATH), or --compare of two reports.")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint (project .safetensors or release)")
    p.add_argument("--data", nargs="+", default=None, metavar="FORMAT:PATH",
                   help="evaluation set(s), pooled: modelnet40:, scanobjectnn:, objaverse_lvis:, nuscenes:, "
                        "truckscenes:, shards:, mmdet3d:, npz: (or a bare .npz path)")
    p.add_argument("--prompts", default=None,
                   help="prompt-set YAML or shipped name (default: the first set's benchmark prompts)")
    p.add_argument("--scanobjectnn-variant", default="OBJ_ONLY",
                   help="OBJ_ONLY (default, as the release), OBJ_BG, PB_T25, PB_T25_R, PB_T50_R or PB_T50_RS "
                        "when scanobjectnn: names a folder")
    p.add_argument("--test-repeat", type=positive_int, default=1, metavar="K",
                   help="average K passes with random farthest-point-sampling starts (default 1: deterministic)")
    p.add_argument("--text-tower", choices=("minilm", "open_clip"), default=None,
                   help="text tower when the checkpoint names none (release files name theirs)")
    p.add_argument("--text-model", default=None,
                   help="open_clip model config for --text-tower open_clip (default ViT-B-16)")
    p.add_argument("--text-weights", default=None, help="local weights for --text-tower open_clip")
    p.add_argument("--bank", type=Path, default=None,
                   help="prompt-bank file from blendclip-prompts encode: no text tower is built "
                        "(its prompt set is the default --prompts)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (falls back to cpu with a warning)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="clouds per encoder call")
    p.add_argument("--max-points", type=positive_int, default=None,
                   help="override the sets' point counts (default: each benchmark's, e.g. 8192 / 2048)")
    p.add_argument("--out", type=Path, default=None, help="folder for report.json/.md, confusion and breakdown plots")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON report to this file")
    p.add_argument("--confusion", type=Path, default=None, help="write the confusion matrix as a PNG")
    p.add_argument("--cache-dir", type=Path, default=None, help="text-embedding cache directory")
    p.add_argument("--compare", nargs=2, type=Path, default=None, metavar=("A.json", "B.json"),
                   help="print the differences of two reports and exit")
    return p


def run(args: argparse.Namespace) -> int:
    from blendclip_train.eval_report import (
        compare_reports,
        format_table,
        load_report,
        write_outputs,
    )
    from blendclip_train.evaluate import confusion_png, evaluate_checkpoint

    if args.compare is not None:
        a, b = args.compare
        print(compare_reports(load_report(a), load_report(b), (a.stem[:7], b.stem[:7])))
        return 0
    if args.checkpoint is None or not args.data:
        raise UsageError("argument error: --checkpoint and --data are required (or --compare A.json B.json)")
    if args.text_tower != "open_clip" and (args.text_weights or args.text_model):
        raise UsageError("argument error: --text-model and --text-weights need --text-tower open_clip")
    tower = text_tower_spec(args.text_tower, args.text_model, args.text_weights)
    report = evaluate_checkpoint(args.checkpoint, args.data, args.prompts, device=args.device,
                                 batch_size=args.batch_size, max_points=args.max_points, repeats=args.test_repeat,
                                 cache_dir=args.cache_dir, text_tower=tower,
                                 scanobjectnn_variant=args.scanobjectnn_variant, bank=args.bank,
                                 progress=sys.stderr.isatty())
    document = {"checkpoint": str(args.checkpoint), **report.to_dict()}
    title = f"{args.checkpoint.name} on {', '.join(report.data)}"
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1))
    if args.confusion is not None:
        confusion_png(report.metrics, args.confusion, title=f"{title}: top-1 {100 * report.metrics.top1:.1f} %")
    if args.out is not None:
        write_outputs(report, args.out, title=title, extra={"checkpoint": str(args.checkpoint)})
    print(format_table(document), file=sys.stderr)
    print(json.dumps(document))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
