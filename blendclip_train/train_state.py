"""Training checkpoints for exact resume (separate from the small inference ``.safetensors``).

A training state is one ``torch.save`` file ``<out>/checkpoints/train_state_<step>.pt`` holding
the model, optimiser, learning-rate schedule, GradScaler, the data position (epoch and next
iteration), every rank's RNG states (Python, numpy, torch CPU, CUDA per device) and running
epoch sums, the history and the config. Files are written atomically (temporary file, fsync,
rename), so the newest file present is always complete; only the last ``keep`` are kept.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blendclip_ros.errors import ConfigError

from .shards import _fsync_rename

FORMAT = "blendclip-train-state"
VERSION = 1
FOLDER = "checkpoints"
_NAME = re.compile(r"^train_state_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """This process's global RNG states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(out_dir: str | os.PathLike, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as the checkpoint of global ``step`` atomically; prune all but the last ``keep``."""
    folder = Path(out_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"train_state_{step:09d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"format": FORMAT, "version": VERSION, "step": step, **state}, tmp)
        _fsync_rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for old in list_train_states(out_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_train_states(out_dir: str | os.PathLike) -> list[Path]:
    """Complete training checkpoints of a run, oldest first."""
    folder = Path(out_dir) / FOLDER
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.match(p.name)), key=lambda p: int(_NAME.match(p.name)[1]))


def find_train_state(resume: str, out_dir: str | os.PathLike) -> Path | None:
    """``auto``: the newest checkpoint in ``out_dir`` (None for a fresh run); else the given file."""
    if resume == "auto":
        states = list_train_states(out_dir)
        return states[-1] if states else None
    path = Path(resume)
    if not path.is_file():
        raise ConfigError(f"resume: {path} is not a file")
    return path


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by :func:`save_train_state` (on the CPU)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ConfigError(f"resume: {path} is not a readable training checkpoint ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"resume: {path} is not a {FORMAT} file")
    return state
