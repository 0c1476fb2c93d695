"""Run logs of rank 0: TensorBoard event files and one CSV (``<out>/log.csv``).

Scalars: ``train/loss``, ``train/loss_point_text``, ``train/loss_point_image``, ``train/lr``,
``train/logit_scale``, ``train/real_share``, ``train/samples_per_s`` every ``log_every`` steps,
and ``val/<set>/top1`` once per epoch. The CSV holds the same values, one row per logged step
(``kind`` = ``step``) and per epoch (``kind`` = ``epoch``). A resumed run drops what a killed run
logged after its checkpoint (TensorBoard ``purge_step``, CSV rows with a later step) and appends.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

COLUMNS = ("kind", "epoch", "step", "loss", "loss_point_text", "loss_point_image", "lr", "logit_scale",
           "real_share", "samples_per_s", "val_set", "val_top1")


class TrainLog:
    """Writes nothing unless ``enabled`` (rank 0)."""

    def __init__(self, out_dir: Path, *, enabled: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.csv_path = Path(out_dir) / "log.csv"
        self._writer = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=resume_step)
        kept = []
        if resume_step is not None and self.csv_path.is_file():
            with self.csv_path.open(newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_step]
        with self.csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(kept)

    def step(self, epoch: int, step: int, values: dict[str, float | None]) -> None:
        """Per-step scalars (``loss``, ``loss_point_text``, ... as in :data:`COLUMNS`)."""
        if not self.enabled:
            return
        for name, value in values.items():
            if value is not None and math.isfinite(value):
                self._writer.add_scalar(f"train/{name}", value, step)
        self._append({"kind": "step", "epoch": epoch, "step": step, **values})

    def epoch(self, epoch: int, step: int, val_top1: dict[str, float]) -> None:
        """End of an epoch: validation top-1 per set (one CSV row each, or one empty row)."""
        if not self.enabled:
            return
        for name, top1 in val_top1.items():
            self._writer.add_scalar(f"val/{name}/top1", top1, step)
            self._append({"kind": "epoch", "epoch": epoch, "step": step, "val_set": name, "val_top1": top1})
        if not val_top1:
            self._append({"kind": "epoch", "epoch": epoch, "step": step})
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _append(self, row: dict) -> None:
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow({k: ("" if v is None else v) for k, v in row.items()})
