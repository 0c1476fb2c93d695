"""blendclip-export: write a point encoder's dense part (tokenizer MLP, transformer, projection) to ONNX.

Grouping and sampling (FPS, kNN) are not in the graph: they stay in torch, as pre-processing.
The file has dynamic batch and patch axes and carries the encoder config and logit scale as
metadata; it is checked against torch on a few random clouds before the command succeeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blendclip_ros.cli.support import Parser, UsageError, run_cli

PROG = "blendclip-export"
#: Largest accepted difference between torch and onnxruntime embeddings in the self-check.
TOLERANCE = 1e-4


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Export the dense part of a point encoder to ONNX (dynamic batch and "
                                      "patch axes), then check it against torch.")
    p.add_argument("output", type=Path, help="ONNX file to write (e.g. encoder.onnx)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="point-model checkpoint (default: a random-init encoder of --encoder, for tests)")
    p.add_argument("--encoder", choices=("tiny", "full"), default="tiny", help="preset without --checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init encoder")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    return p


def run(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415 - keep --help fast

    from blendclip_ros.model.checkpoint import load_checkpoint  # noqa: PLC0415
    from blendclip_ros.model.config import PointBertConfig  # noqa: PLC0415
    from blendclip_ros.model.onnx_backend import OnnxPointModel, export_onnx  # noqa: PLC0415
    from blendclip_ros.model.pointbert import BlendClipPointModel  # noqa: PLC0415

    if args.output.exists() and not args.force:
        raise UsageError(f"output: {args.output} exists (pass --force to overwrite)")
    if args.output.suffix != ".onnx":
        raise UsageError(f"output: expected a .onnx file name, got {args.output.name}")
    if args.checkpoint is not None:
        model = load_checkpoint(args.checkpoint).model
    else:
        torch.manual_seed(args.seed)
        model = BlendClipPointModel(PointBertConfig.named(args.encoder))
    model = model.float().eval()
    export_onnx(model, args.output)
    generator = torch.Generator().manual_seed(0)
    clouds = [torch.randn(n, 3, generator=generator) for n in (1, 40, 300, 2000)]
    with torch.inference_mode():
        expected = model.encode(clouds, normalize=False)
    got = OnnxPointModel(args.output).encode(clouds, normalize=False)
    difference = float((got - expected).abs().max())
    if not difference <= TOLERANCE:
        args.output.unlink()
        raise UsageError(f"export check: onnxruntime differs from torch by {difference:.2e} > {TOLERANCE:g}")
    size_mb = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size_mb:.1f} MB); onnxruntime vs torch max |difference| {difference:.1e}",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
