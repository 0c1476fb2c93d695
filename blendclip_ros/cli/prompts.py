"""blendclip-prompts: encode a prompt set once into a prompt-bank file, or show a bank.

    blendclip-prompts encode --tower uni3d --weights open_clip_pytorch_model.bin \\
        --prompts nuscenes --out bank.safetensors
    blendclip-prompts show bank.safetensors

``--tower`` names a text tower: ``minilm``; a model family (``blendclip``, ``ulip2_pointbert``,
``openshape_ppat[:vitg14|vitl14|vitb32]``, ``uni3d``: the open_clip tower and pretrained tag it
was aligned to); or ``open_clip:MODEL[:TAG]``. ``--weights`` is the local weights file of that
tower (without it an open_clip tower is random-initialised, or with a tag downloaded when
``--allow-network``). The bank holds the normalised class embeddings with the labels, templates,
tower name, text space and weights digest; the node (``prompts.bank``), ``blendclip-classify
--bank`` and ``blendclip-evaluate`` then need no text tower.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from blendclip_ros.cli.support import Parser, UsageError, run_cli

PROG = "blendclip-prompts"
#: Family name -> the variant whose tower ``--tower FAMILY`` means.
DEFAULT_VARIANTS = {"blendclip": "release", "ulip2_pointbert": "xyzrgb", "openshape_ppat": "vitg14", "uni3d": ""}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Encode prompt sets into prompt-bank files (no text tower needed later).")
    commands = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    encode = commands.add_parser("encode", help="encode a prompt set with a text tower into a bank file")
    encode.add_argument("--tower", required=True,
                        help="minilm | FAMILY[:VARIANT] (blendclip, ulip2_pointbert, openshape_ppat:vitl14, "
                             "uni3d, ...) | open_clip:MODEL[:TAG]")
    encode.add_argument("--weights", type=Path, default=None, help="local weights file of the open_clip tower")
    labels = encode.add_mutually_exclusive_group()
    labels.add_argument("--prompts", default="nuscenes", help="prompt-set YAML or shipped set name (default nuscenes)")
    labels.add_argument("--labels", default=None, help="comma-separated class names (template 'point cloud of a {}.')")
    encode.add_argument("--out", required=True, type=Path, help="bank file to write (.safetensors)")
    encode.add_argument("--device", default="cpu", help="cpu or cuda")
    encode.add_argument("--seed", type=int, default=0, help="seed of a random-initialised open_clip tower")
    encode.add_argument("--allow-network", action="store_true", help="allow downloading a pretrained tag")
    show = commands.add_parser("show", help="print a bank file's labels, templates and text space as JSON")
    show.add_argument("bank", type=Path)
    return p


def tower_spec(text: str, weights: Path | None, seed: int = 0) -> dict[str, Any]:
    """The text-tower spec ``--tower`` names (see the module docstring)."""
    from blendclip_ros.model import families

    name, _, rest = text.partition(":")
    if name == "minilm" and not rest:
        if weights is not None:
            raise UsageError("argument error: --weights is for open_clip towers, not minilm")
        return {"type": "minilm"}
    if name in DEFAULT_VARIANTS:
        spec = families.text_tower_for(name, rest or DEFAULT_VARIANTS[name])
        if spec is None:
            raise UsageError(f"argument error: --tower {text}: that model's text tower is not an open_clip "
                             "tower; encode with open_clip:MODEL[:TAG] or minilm")
    elif name in ("open_clip", "openclip") and rest:
        model, _, tag = rest.partition(":")
        spec = {"type": "open_clip", "model": model, "seed": seed, **({"pretrained": tag} if tag else {})}
    else:
        raise UsageError(f"argument error: --tower {text!r}: expected minilm, a family "
                         f"({', '.join(DEFAULT_VARIANTS)}) or open_clip:MODEL[:TAG]")
    spec.pop("embed_dim", None)
    if weights is not None:
        spec["weights"] = str(weights)
    return spec


def run(args: argparse.Namespace) -> int:
    from blendclip_ros.text.bank import read_bank_document, save_bank
    from blendclip_ros.text.prompts import PromptSet, load_prompt_set

    if args.command == "show":
        document, embeddings = read_bank_document(args.bank)
        print(json.dumps({**document, "shape": list(embeddings.shape)}, indent=1))
        return 0
    from blendclip_ros.text.bank import build_text_bank
    from blendclip_ros.text.towers import make_text_tower

    if args.out.suffix != ".safetensors":
        raise UsageError(f"argument error: --out: expected a .safetensors file name, got {args.out.name!r}")
    prompt_set = PromptSet.from_labels(args.labels) if args.labels else load_prompt_set(args.prompts)
    tower = make_text_tower(tower_spec(args.tower, args.weights, args.seed), args.device,
                            allow_network=args.allow_network)
    bank = build_text_bank(tower, prompt_set, use_cache=False)
    save_bank(args.out, bank, prompt_set)
    print(f"{args.out}: {len(bank.labels)} classes x {bank.dim}-d, {len(prompt_set.templates)} template(s), "
          f"text space {bank.text_space}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
