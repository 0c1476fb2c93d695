"""blendclip-train: BlendCLIP pretraining of the point encoder against frozen text embeddings.

Synthetic (CAD) sets are the main pool; real (LiDAR) sets are mixed in by the curriculum (epoch 0
synthetic only, then a real share ramping to --r-max). Data are triplet shard folders/files or
object-set .npz files (converted to shards once and cached). Runs as one process or under
``torchrun`` (DDP: NCCL on GPUs, gloo on CPUs). Writes last/best checkpoints, history.json,
training_curves.png, log.csv, tensorboard/ and resumable checkpoints/ into --out.
See docs/training.md.
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
    data.add_argument("--synthetic", required=True, type=Path, nargs="+",
                      help="synthetic shard folder(s)/file(s) or object-set .npz file(s)")
    data.add_argument("--real", type=Path, nargs="*", default=[], help="real shard folder(s)/file(s) or .npz file(s)")
    data.add_argument("--val", type=Path, nargs="*", default=[],
                      help="validation sets (shards or .npz), evaluated zero-shot every epoch on rank 0")
    data.add_argument("--best-on", default=None, metavar="NAME",
                      help="the --val set (file/folder name without suffix) that selects best.safetensors "
                           "(default: the first)")
    data.add_argument("--val-prompts", default="nuscenes", help="prompt set for --val (YAML or shipped name)")
    data.add_argument("--embeddings", default=None, metavar="KEY",
                      help="train against the shards' frozen text/image embedding sidecars of this key "
                           "(no text tower runs for captions)")
    data.add_argument("--max-points", type=positive_int, default=8192,
                      help="points per cloud: FPS cap at .npz conversion, random subset per access above it")
    data.add_argument("--workers", type=int, default=0, help="DataLoader worker processes per rank (default 0)")
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
    sched.add_argument("--batch-size", type=positive_int, default=64,
                       help="samples per rank and step (global batch = this x world size)")
    sched.add_argument("--iterations", type=positive_int, default=None,
                       help="iterations per epoch (default ceil(N_synthetic * ln 5 / global batch))")
    sched.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    sched.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up length (default 1)")
    sched.add_argument("--weight-decay", type=float, default=0.1)
    sched.add_argument("--r-max", type=float, default=None,
                       help="final real share per batch (default 0.3 with --real, else 0)")
    sched.add_argument("--static", action="store_true", help="constant real share r-max from epoch 0")
    run_group = p.add_argument_group("run")
    run_group.add_argument("--out", required=True, type=Path, help="output folder")
    run_group.add_argument("--seed", type=int, default=0)
    run_group.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: one GPU per local rank)")
    run_group.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                           help="auto/bf16: bf16 autocast + GradScaler on CUDA; fp32 on CPU (default auto)")
    run_group.add_argument("--compile", action="store_true", help="torch.compile the point model")
    run_group.add_argument("--gather-with-grad", action="store_true",
                           help="backpropagate through the point embeddings gathered from other ranks "
                                "(default: only through the local ones, as the release)")
    run_group.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    run_group.add_argument("--save-every", type=int, default=0, help="also keep epoch_XXX checkpoints every N epochs")
    run_group.add_argument("--save-dtype", choices=("float32", "float16"), default="float32",
                           help="weight dtype in the checkpoint files")
    run_group.add_argument("--cache-dir", type=Path, default=None, help="text-embedding cache directory")
    run_group.add_argument("--quiet", action="store_true", help="no progress bars")
    ckpt = p.add_argument_group("resume")
    ckpt.add_argument("--resume", default=None, metavar="auto|PATH",
                      help="continue from the newest training checkpoint in --out (auto) or from PATH")
    ckpt.add_argument("--checkpoint-every-steps", type=positive_int, default=None, metavar="N",
                      help="training checkpoint every N steps (default: every --checkpoint-minutes) and at every "
                           "epoch end; SIGTERM also writes one and stops")
    ckpt.add_argument("--checkpoint-minutes", type=float, default=5.0, help="default checkpoint interval (5)")
    ckpt.add_argument("--keep-checkpoints", type=positive_int, default=3, help="training checkpoints kept (3)")
    ckpt.add_argument("--log-every", type=positive_int, default=10, help="log.csv/TensorBoard row every N steps")
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
        best_on=args.best_on, embeddings=args.embeddings, workers=args.workers, compile=args.compile,
        gather_with_grad=args.gather_with_grad, resume=args.resume, checkpoint_every_steps=args.checkpoint_every_steps,
        checkpoint_minutes=args.checkpoint_minutes, keep_checkpoints=args.keep_checkpoints, log_every=args.log_every,
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
    if result.rank != 0:
        return 0
    last = result.history[-1] if result.history else None
    print(json.dumps({"out": str(result.out_dir), "last": str(result.last), "best": str(result.best),
                      "epochs": len(result.history), "final_loss": None if last is None else round(last.loss, 6),
                      "val": {} if last is None else last.val, "interrupted": result.interrupted,
                      "train_state": None if result.train_state is None else str(result.train_state),
                      "rank_weight_digests": result.rank_weight_digests}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
