"""The evaluation report: metrics, breakdowns by point count and distance, tables, plots, comparison.

The JSON document (:meth:`EvalReport.to_dict`) keeps the metrics at the top level (``count``,
``top1``, ``top3``, ``top5``, ``mean_class_*``, ``per_class``, ``confusion``, ``skipped``) and adds
``repeats``, ``repeat_top1``, ``breakdown`` (``points`` and ``distance`` bins) and ``sets``; two
documents are compared with :func:`compare_reports` (``blendclip-evaluate --compare A.json B.json``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blendclip_ros.errors import ConfigError

from .figures import save_figure
from .metrics import ZeroShotMetrics, zero_shot_metrics

#: Point-count bins (inclusive): where sparse LiDAR objects fail.
POINT_BINS = ((1, 1, "1"), (2, 4, "2-4"), (5, 9, "5-9"), (10, 49, "10-49"), (50, 199, "50-199"),
              (200, math.inf, "200+"))
#: Distance bins in metres ([lo, hi)), up to TruckScenes' 150 m range.
DISTANCE_BINS = ((0, 10, "0-10 m"), (10, 20, "10-20 m"), (20, 30, "20-30 m"), (30, 40, "30-40 m"),
                 (40, 50, "40-50 m"), (50, 75, "50-75 m"), (75, 100, "75-100 m"), (100, 150, "100-150 m"),
                 (150, math.inf, "150+ m"))
HEADLINE = ("top1", "top3", "top5", "mean_class_top1", "mean_class_top3", "mean_class_top5")


@dataclass
class EvalReport:
    """Metrics over all passes (``metrics.count`` = objects) plus breakdowns and provenance."""

    metrics: ZeroShotMetrics
    repeats: int
    repeat_top1: list[float]
    point_bins: list[dict[str, Any]]
    distance_bins: list[dict[str, Any]]
    data: list[str]
    prompts: str
    sets: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        doc = self.metrics.to_dict()
        doc["confusion"]["passes"] = self.repeats
        return {**doc, "prompts": self.prompts, "data": list(self.data), "repeats": self.repeats,
                "repeat_top1": [round(v, 6) for v in self.repeat_top1],
                "breakdown": {"points": self.point_bins, "distance": self.distance_bins}, "sets": self.sets}


def build_report(scores: torch.Tensor, targets: torch.Tensor, labels: Sequence[str], point_counts: np.ndarray,
                 distance: np.ndarray, skipped: dict[str, int], data: list[str], prompts: str) -> EvalReport:
    """A report from ``(K, N, C)`` scores of K passes over the same N objects with true ``targets``."""
    passes, count, classes = scores.shape
    flat, tiled = scores.reshape(passes * count, classes), targets.repeat(passes)
    metrics = zero_shot_metrics(flat, tiled, labels, skipped)
    metrics.count = count
    metrics.per_class_count = [n // passes for n in metrics.per_class_count]
    repeat_top1 = [float((s.argmax(1) == targets).double().mean()) for s in scores]
    distance = np.asarray(distance, dtype=np.float64)
    return EvalReport(
        metrics=metrics, repeats=passes, repeat_top1=repeat_top1,
        point_bins=_breakdown(flat, tiled, labels, np.tile(point_counts, passes), POINT_BINS, passes, True),
        distance_bins=(_breakdown(flat, tiled, labels, np.tile(distance, passes), DISTANCE_BINS, passes, False)
                       if np.isfinite(distance).any() else []),
        data=data, prompts=prompts)


def _breakdown(scores: torch.Tensor, targets: torch.Tensor, labels: Sequence[str], values: np.ndarray,
               bins: tuple, passes: int, inclusive: bool) -> list[dict[str, Any]]:
    rows = []
    for lo, hi, name in bins:
        mask = (values >= lo) & ((values <= hi) if inclusive else (values < hi))
        row: dict[str, Any] = {"bin": name, "count": int(mask.sum()) // passes}
        if mask.any():
            m = zero_shot_metrics(scores[torch.from_numpy(mask)], targets[torch.from_numpy(mask)], labels)
            row.update(top1=round(m.top1, 6), top5=round(m.top5, 6), mean_class_top1=round(m.mean_class_top1, 6))
        else:
            row.update(top1=None, top5=None, mean_class_top1=None)
        rows.append(row)
    return rows


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def format_table(doc: dict[str, Any]) -> str:
    """Markdown tables of a report document: headline, per class, point-count and distance bins."""
    passes = f" (mean of {doc['repeats']} FPS starts)" if doc.get("repeats", 1) > 1 else ""
    lines = [f"objects: {doc['count']}, prompts: {doc.get('prompts', '')}{passes}", "",
             "| top-1 | top-3 | top-5 | mean class top-1 | mean class top-5 |", "|---|---|---|---|---|",
             (f"| {_pct(doc['top1'])} | {_pct(doc.get('top3'))} | {_pct(doc['top5'])} | "
              f"{_pct(doc['mean_class_top1'])} | {_pct(doc['mean_class_top5'])} |"), "",
             "| class | n | top-1 | top-5 |", "|---|---|---|---|"]
    lines += [f"| {name} | {row['count']} | {_pct(row['top1'])} | {_pct(row['top5'])} |"
              for name, row in doc["per_class"].items() if row["count"]]
    for key, title in (("points", "points"), ("distance", "distance")):
        bins = doc.get("breakdown", {}).get(key) or []
        if bins:
            lines += ["", f"| {title} | n | top-1 | top-5 | mean class top-1 |", "|---|---|---|---|---|"]
            lines += [f"| {b['bin']} | {b['count']} | {_pct(b['top1'])} | {_pct(b['top5'])} | "
                      f"{_pct(b['mean_class_top1'])} |" for b in bins]
    if doc.get("skipped"):
        lines += ["", "skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(doc["skipped"].items()))]
    return "\n".join(lines)


def breakdown_png(doc: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Top-1 and top-5 per point-count bin (and per distance bin when known), object counts on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, t) for k, t in (("points", "points in the object"), ("distance", "distance from the sensor"))
              if doc.get("breakdown", {}).get(k)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (key, xlabel) in zip(axes[0], panels):
        bins = doc["breakdown"][key]
        x = np.arange(len(bins))
        for offset, metric, colour in ((-0.2, "top1", "C0"), (0.2, "top5", "C1")):
            values = [100 * (b[metric] or 0.0) for b in bins]
            ax.bar(x + offset, values, width=0.4, color=colour, label=metric.replace("top", "top-"))
        for i, b in enumerate(bins):
            ax.text(i, 101, f"n={b['count']}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, [b["bin"] for b in bins], rotation=30, fontsize=8)
        ax.set_ylim(0, 125)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=8, loc="upper right", ncol=2)
    fig.suptitle(title or f"top-1 {_pct(doc['top1'])} % over {doc['count']} objects", fontsize=10)
    return save_figure(fig, path, dpi=110)


def write_outputs(report: EvalReport, out: str | os.PathLike, title: str = "",
                  extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """``report.json`` (``extra`` entries first), ``report.md``, ``confusion.json``, ``confusion.png`` and
    ``breakdown.png`` in ``out``."""
    from .evaluate import confusion_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {**(extra or {}), **report.to_dict()}
    paths = {"json": out / "report.json", "table": out / "report.md", "confusion_json": out / "confusion.json"}
    paths["json"].write_text(json.dumps(doc, indent=1))
    paths["table"].write_text(format_table(doc) + "\n")
    paths["confusion_json"].write_text(json.dumps(doc["confusion"]))
    paths["confusion_png"] = confusion_png(report.metrics, out / "confusion.png", title=title)
    paths["breakdown_png"] = breakdown_png(doc, out / "breakdown.png", title=title)
    return paths


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """A report document written by ``blendclip-evaluate``."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or "top1" not in doc or "per_class" not in doc:
        raise ConfigError(f"{path}: not a blendclip-evaluate report (no top1/per_class)")
    return doc


def compare_reports(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("A", "B")) -> str:
    """A table of every shared figure of two reports, in percent, with the difference B - A in points."""
    rows = [(key, a.get(key), b.get(key)) for key in HEADLINE]
    classes = list(a["per_class"]) + [c for c in b["per_class"] if c not in a["per_class"]]
    rows += [(f"class {c} top-1", a["per_class"].get(c, {}).get("top1"), b["per_class"].get(c, {}).get("top1"))
             for c in classes]
    for kind in ("points", "distance"):
        bins_a = {x["bin"]: x for x in a.get("breakdown", {}).get(kind) or []}
        bins_b = {x["bin"]: x for x in b.get("breakdown", {}).get(kind) or []}
        rows += [(f"{kind} {name} top-1", bins_a.get(name, {}).get("top1"), bins_b.get(name, {}).get("top1"))
                 for name in list(bins_a) + [n for n in bins_b if n not in bins_a]]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'figure':<{width}}  {names[0]:>7}  {names[1]:>7}  {'B - A':>7}",
             f"{'objects':<{width}}  {a['count']:>7}  {b['count']:>7}"]
    for label, x, y in rows:
        diff = "" if x is None or y is None else f"{100 * (y - x):+7.1f}"
        lines.append(f"{label:<{width}}  {_pct(x):>7}  {_pct(y):>7}  {diff:>7}")
    return "\n".join(lines)
