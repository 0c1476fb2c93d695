"""Shared plumbing of the console scripts: parsers that raise, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from typing import NoReturn

from ..errors import BlendClipError

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input; :func:`run_cli` prints it on one line and returns 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors become :class:`UsageError` (no ``sys.exit`` mid-run)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"argument error: {message}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def text_tower_spec(tower: str | None, model: str | None, weights: str | None) -> dict | None:
    """The text-tower spec of ``--text-tower/--text-model/--text-weights`` (None: none named)."""
    if tower is None:
        return None
    if tower == "minilm":
        return {"type": "minilm"}
    return {"type": "open_clip", **({"model": model} if model else {}), "weights": weights}


def run_cli(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
            argv: list[str] | None) -> int:
    """Parse ``argv`` and run; typed errors print ``<prog>: error: <one line>`` and return 2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            try:
                args = parser.parse_args(argv)
            except SystemExit as exc:  # --help
                return int(exc.code or 0)
            return run(args)
        except BrokenPipeError:  # stdout closed early (e.g. piped into head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except (UsageError, BlendClipError) as exc:
            message = str(exc)
        except OSError as exc:
            message = f"{exc.filename}: {exc.strerror or exc}" if exc.filename else str(exc)
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE
