"""blendclip-train: BlendCLIP pretraining of the point encoder against frozen text embeddings.

Synthetic (CAD) object sets are the main pool; real (LiDAR) sets are mixed in by the curriculum
(epoch 0 synthetic only, then a real share ramping to --r-max). Writes last/best checkpoints,
history.json and training_curves.png into --out. See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blendclip_ros.cli.support import Parser, UsageError, positive_int, run_cli

PROG = "blendclip-train"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Train the BlendCLIP point encoder (curriculum of synthetic and real "
                                      "object triplets, symmetric InfoNCE against frozen caption embeddings).")
    data = p.add_argument_group("data")
    data.add_argument("--synthetic", required=True, type=Path, nargs="+", help="synthetic object-set .npz file(s)")
    data.add_argument("--real", type=Path, nargs="*", default=[], help="real object-set .npz file(s)")
    data.add_argument("--val", type=Path, nargs="*", default=[],
                      help="validation sets, evaluated zero-shot every epoch; the first one selects best.safetensors")
    data.add_argument("--val-prompts", default="nuscenes", help="prompt set for --val (YAML or shipped name)")
    data.add_argument("--max-points", type=positive_int, default=8192, help="FPS cap per cloud (default 8192)")
    model = p.add_argument_group("model")
    model.add_argument("--encoder", choices=("tiny", "full"), default="tiny", help="encoder preset (default tiny)")
    model.add_argument("--text-tower", choices=("minilm", "open_clip"), default="minilm",
                       help="frozen text tower (default minilm: the offline 384-d encoder)")
    model.add_argument("--text-model", default="ViT-B-16", help="open_clip model config for --text-tower open_clip")
    model.add_argument("--text-weights", default=None,
                       help="local weights file for --text-tower open_clip (default: random init, tests only)")
    model.add_argument("--init", type=Path, default=None, help="initialise the point model from this checkpoint")
    sched = p.add_argument_group("schedule")
    sched.add_argument("--epochs", type=positive_int, default=10)
    sched.add_argument("--batch-size", type=positive_int, default=64)
    sched.add_argument("--iterations", type=positive_int, default=None,
                       help="iterations per epoch (default ceil(N_synthetic * ln 5 / batch size))")
    sched.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    sched.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up length (default 1)")
    sched.add_argument("--weight-decay", type=float, default=0.1)
    sched.add_argument("--r-max", type=float, default=None,
                       help="final real share per batch (default 0.3 with --real, else 0)")
    sched.add_argument("--static", action="store_true", help="constant real share r-max from epoch 0")
    run_group = p.add_argument_group("run")
    run_group.add_argument("--out", required=True, type=Path, help="output folder")
    run_group.add_argument("--seed", type=int, default=0)
    run_group.add_argument("--device", default="cpu", help="cpu or cuda (falls back to cpu with a warning)")
    run_group.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 autocast on CUDA")
    run_group.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    run_group.add_argument("--save-every", type=int, default=0, help="also keep epoch_XXX checkpoints every N epochs")
    run_group.add_argument("--save-dtype", choices=("float32", "float16"), default="float32",
                           help="weight dtype in the checkpoint files")
    run_group.add_argument("--cache-dir", type=Path, default=None, help="text-embedding cache directory")
    run_group.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace):
    from blendclip_train.trainer import TrainConfig

    if args.text_tower == "minilm":
        if args.text_weights is not None:
            raise UsageError("argument error: --text-weights needs --text-tower open_clip")
        tower = {"type": "minilm"}
    else:
        tower = {"type": "open_clip", "model": args.text_model, "weights": args.text_weights}
    return TrainConfig(
        synthetic=args.synthetic, real=args.real, val=args.val, val_prompts=args.val_prompts, out_dir=args.out,
        encoder=args.encoder, text_tower=tower, init_checkpoint=args.init, epochs=args.epochs,
        batch_size=args.batch_size, iterations_per_epoch=args.iterations, lr=args.lr,
        warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay, r_max=args.r_max, static=args.static,
        max_points=args.max_points, seed=args.seed, device=args.device, precision=args.precision,
        save_every=args.save_every, save_dtype=args.save_dtype, cache_dir=args.cache_dir, progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    import torch

    from blendclip_train.trainer import train

    config = config_from_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = train(config)
    last = result.history[-1]
    print(json.dumps({"out": str(result.out_dir), "last": str(result.last), "best": str(result.best),
                      "epochs": len(result.history), "final_loss": round(last.loss, 6), "val": last.val}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
