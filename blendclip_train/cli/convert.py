"""blendclip-convert: a synthetic training pool in its published layout -> triplet shards.

``blendclip-convert ulip2:/data/objaverse --out shards/objaverse`` (formats: ulip2, shapenet55,
openshape; layouts in blendclip_train.datasets.synthetic). Points are rotated from y-up to z-up
once, here; prints one JSON line with what was written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blendclip_ros.cli.support import Parser, positive_int, run_cli
from blendclip_train.cli.summary import print_summary

PROG = "blendclip-convert"


def build_parser() -> argparse.ArgumentParser:
    from blendclip_train.datasets.synthetic import FORMATS

    p = Parser(prog=PROG, description="Convert a synthetic training pool (published layout) into triplet shards.")
    p.add_argument("source", metavar="FORMAT:PATH", help=f"dataset to read; FORMAT one of {', '.join(FORMATS)}")
    p.add_argument("--out", required=True, type=Path, help="folder for the shards (must hold none yet)")
    p.add_argument("--shard-size", type=positive_int, default=1000, help="objects per shard (default 1000)")
    p.add_argument("--limit", type=positive_int, default=None, help="stop after this many objects")
    p.add_argument("--max-views", type=positive_int, default=None,
                   help="keep this many evenly spaced rendered views per object (default all)")
    return p


def run(args: argparse.Namespace) -> int:
    from blendclip_train.datasets.common import split_spec
    from blendclip_train.datasets.synthetic import FORMATS, convert

    fmt, path = split_spec(args.source, FORMATS)
    result = convert(fmt, path, args.out, shard_size=args.shard_size, limit=args.limit, max_views=args.max_views,
                     progress=sys.stderr.isatty())
    print_summary({"format": fmt, "source": str(path), "out": str(args.out), "shards": len(result.shards),
                   "sidecars": len(result.sidecars), "skipped": result.skipped}, result.objects, result.seconds)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
