"""blendclip-experiment: the mixing ablation on the simulated domains, and its table and plots.

``run`` builds the object sets, trains every (arm, seed) run plus the r_max sweep two at a time
and writes ``<out>/results.json``; a second invocation skips finished runs. ``report`` turns that
JSON into the markdown table (between the result markers of a document) and PNG plots.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blendclip_ros.cli.support import Parser, UsageError, positive_int, run_cli

PROG = "blendclip-experiment"


def _r_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a real share in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a real share in (0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from blendclip_train.experiment import MAIN_ARMS, ExperimentConfig

    d = ExperimentConfig(out_dir=Path("."))
    p = Parser(prog=PROG, description="BlendCLIP mixing ablation on simulated CAD and LiDAR object sets.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    r = sub.add_parser("run", help="build the data, train and evaluate every unfinished run, write results.json")
    r.add_argument("--out", required=True, type=Path, help="experiment folder (data/, runs/, results.json)")
    r.add_argument("--arms", nargs="*", choices=MAIN_ARMS, default=list(d.arms),
                   help=f"main-table arms (default: all four: {' '.join(MAIN_ARMS)})")
    r.add_argument("--seeds", nargs="*", type=int, default=list(d.seeds), help="seeds of the main arms (default 0 1 2)")
    r.add_argument("--r-max", type=_r_value, default=d.r_max, help=f"r_max of the curriculum arm (default {d.r_max})")
    r.add_argument("--sweep", nargs="*", type=_r_value, default=list(d.sweep),
                   help="curriculum r_max values of the sweep, one seed (default 0.08 0.15 0.3 0.5; none: --sweep)")
    r.add_argument("--sweep-seed", type=int, default=d.sweep_seed, help="seed of the sweep runs (default 0)")
    r.add_argument("--per-class", type=positive_int, default=d.per_class,
                   help=f"simulated instances per class, 20%% held out (default {d.per_class})")
    r.add_argument("--cad-points", type=positive_int, default=d.cad_points,
                   help=f"points per CAD object (default {d.cad_points})")
    r.add_argument("--views", type=positive_int, default=d.views, help=f"LiDAR views per instance (default {d.views})")
    r.add_argument("--second-sensor", choices=("hdl32e", "hdl64e", "vls128"), default=d.second_sensor,
                   help=f"beam pattern of the unseen test sensor (default {d.second_sensor})")
    r.add_argument("--second-mount-height", type=float, default=d.second_mount_height,
                   help=f"its height above the ground, metres (default {d.second_mount_height})")
    r.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"epochs per run (default {d.epochs})")
    r.add_argument("--iterations-per-epoch", type=positive_int, default=d.iterations_per_epoch,
                   help=f"iterations per epoch, the same for every arm (default {d.iterations_per_epoch})")
    r.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"default {d.batch_size}")
    r.add_argument("--jobs", type=positive_int, default=d.jobs, help=f"runs in parallel (default {d.jobs})")
    r.add_argument("--threads", type=positive_int, default=d.threads,
                   help=f"torch threads per run (default {d.threads})")
    r.add_argument("--cache-dir", type=Path, default=None, help="text-embedding cache directory")

    t = sub.add_parser("report", help="markdown table and PNG plots from a results.json")
    t.add_argument("--results", required=True, type=Path, help="results.json written by `run`")
    t.add_argument("--markdown", required=True, type=Path,
                   help="document whose block between the result markers is replaced (created if absent)")
    t.add_argument("--images", required=True, type=Path, help="folder for ablation_*.png")
    return p


def run(args: argparse.Namespace) -> int:
    if args.command == "report":
        from blendclip_train.experiment_report import write_report

        if not args.results.is_file():
            raise UsageError(f"--results: {args.results} does not exist")
        for path in write_report(args.results, args.markdown, args.images):
            print(path)
        return 0
    from blendclip_train.experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig(
        out_dir=args.out, arms=tuple(args.arms), seeds=tuple(args.seeds), r_max=args.r_max,
        sweep=tuple(args.sweep), sweep_seed=args.sweep_seed, per_class=args.per_class,
        cad_points=args.cad_points, views=args.views, second_sensor=args.second_sensor,
        second_mount_height=args.second_mount_height, epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch, batch_size=args.batch_size, jobs=args.jobs,
        threads=args.threads, cache_dir=args.cache_dir)
    document = run_experiment(config, log=lambda line: print(line, flush=True))
    session = document["sessions"][-1]
    print(f"{len(document['runs'])}/{len(document['planned'])} runs finished; this invocation "
          f"{session['wall_seconds'] / 60:.1f} min (mean load {session['load_mean']:.1f} on "
          f"{session['cpus']} CPUs); wrote {args.out / 'results.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 after a one-line error on stderr."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
