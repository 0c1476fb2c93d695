"""Compare training runs in one figure: loss per iteration and validation top-1 per epoch.

``python -m blendclip_train.report --run "CAD only=/tmp/a" --run "CAD + curriculum=/tmp/b"
--out docs/images/training_curves.png`` (each run folder holds the trainer's ``history.json``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from blendclip_ros.errors import ConfigError
from .figures import save_figure
from .trainer import load_history


def plot_runs(runs: dict[str, Path], path: Path, smooth: int = 25) -> Path:
    """Running-mean loss (left) and every validation set's top-1 per epoch (right), one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    styles = ["-", "--", ":", "-."]
    for colour, (name, folder) in enumerate(runs.items()):
        history, losses = load_history(folder)
        window = max(1, min(smooth, len(losses)))
        mean = np.convolve(losses, np.ones(window) / window, mode="valid")
        left.plot(np.arange(window, len(losses) + 1), mean, color=f"C{colour}", label=name)
        epochs = [r.epoch + 1 for r in history]
        for style, val in zip(styles, history[0].val if history else ()):
            right.plot(epochs, [100 * r.val[val]["top1"] for r in history], style,
                       color=f"C{colour}", marker="o", markersize=3, label=f"{name}: {val}")
    left.set_xlabel("iteration")
    left.set_ylabel(f"training loss (running mean of {smooth})")
    left.legend(fontsize=8)
    right.set_xlabel("epoch")
    right.set_ylabel("zero-shot top-1 (%)")
    right.set_ylim(0, 100)
    right.legend(fontsize=7)
    return save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER",
                        help="a run's label and output folder (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.run:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--run: expected NAME=FOLDER, got {item!r}")
        runs[name] = Path(folder)
    print(plot_runs(runs, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
