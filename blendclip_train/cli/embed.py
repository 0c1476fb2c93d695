"""blendclip-embed: frozen text/image embeddings of every caption and image in a shard folder, once.

``blendclip-embed shards/objaverse --weights open_clip_vit_b16.safetensors`` writes
``shards/objaverse/embeddings/open_clip-ViT-B-16-<digest[:12]>/<shard>.h5`` for every shard that
lacks it (rerun to resume). Prints one JSON line with the key and the counts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blendclip_ros.cli.support import Parser, positive_int, run_cli
from blendclip_train.cli.summary import print_summary

PROG = "blendclip-embed"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Compute the frozen CLIP (or MiniLM) embeddings of a shard folder once.")
    p.add_argument("shards", type=Path, help="shard folder (or one shard file)")
    p.add_argument("--tower", choices=("open_clip", "minilm"), default="open_clip",
                   help="open_clip: text + images (default); minilm: text only")
    p.add_argument("--model", default="ViT-B-16", help="open_clip model name (default ViT-B-16, as the release)")
    p.add_argument("--weights", type=Path, default=None,
                   help="local open_clip weights file; without it the towers are randomly initialised")
    p.add_argument("--seed", type=int, default=0, help="seed of a random initialisation (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    return p


def run(args: argparse.Namespace) -> int:
    from blendclip_train.embed import embed_shards

    result = embed_shards(args.shards, tower=args.tower, model=args.model, weights=args.weights, device=args.device,
                          seed=args.seed, batch_size=args.batch_size, progress=sys.stderr.isatty())
    print_summary({"key": result.key, "written": len(result.written), "skipped_existing": len(result.skipped),
                   "captions": result.captions, "images": result.images}, result.objects, result.seconds)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
