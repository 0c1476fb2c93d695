"""ObjectClassifier: crop every box, preprocess, encode all crops in one batch, classify."""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .classifier import Prediction, ZeroShotClassifier
from .errors import ConfigError, PointCloudError
from .geometry.boxes import Boxes
from .geometry.crop import points_in_boxes
from .geometry.preprocess import RELEASE_CONVENTION, InputConvention, preprocess_crops
from .model.checkpoint import RELEASE, TITLES, LoadedCheckpoint, load_checkpoint
from .model.config import PointBertConfig
from .model.onnx_backend import with_backend
from .model.pointbert import BlendClipPointModel
from .text.bank import TextBank, build_text_bank, check_bank_space, load_bank
from .text.prompts import PromptSet, load_prompt_set
from .text.towers import OpenClipTextTower, TextTower, make_text_tower, resolve_device

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp on exp(logit_scale)
DEFAULT_PROMPTS = "nuscenes"


class UntrainedModelWarning(UserWarning):
    """The point encoder is random-initialised: its predictions are meaningless."""


@dataclass(frozen=True)
class ObjectResult:
    """One box: the number of points inside it and its prediction."""

    num_points: int
    prediction: Prediction


class ObjectClassifier:
    """Zero-shot classification of the objects in boxes of one point cloud.

    Boxes with fewer than ``min_points`` points are not encoded (``unknown``, empty top-k).
    Crops are prepared as the model family's authors prepare theirs (``convention``, default
    the model's ``input_convention``: points, normalisation, up-axis, colour; see
    ``geometry.preprocess``); ``max_points`` (0 or ``None``: the convention's count) caps each
    crop; ``margin`` grows every box face (metres); ``rotate_to_box`` expresses crops in the box
    frame instead of the sensor axes.
    """

    def __init__(self, model: BlendClipPointModel, bank: TextBank, *, device: str | torch.device = "cpu",
                 max_points: int | None = None, min_points: int = 1, margin: float = 0.0, top_k: int = 3,
                 score_threshold: float = 0.0, rotate_to_box: bool = False,
                 unknown_label: str = "unknown", tower: TextTower | None = None,
                 cache_dir: str | Path | None = None, description: str = "",
                 convention: InputConvention | None = None) -> None:
        self.device = resolve_device(device)
        self.convention = convention or getattr(model, "input_convention", RELEASE_CONVENTION)
        self.tower = tower  # kept to re-encode new prompt sets (set_prompts)
        self.cache_dir = cache_dir
        self.description = description or f"point model {model.config.embed_dim}-d + {bank.tower_name}"
        embed_dim = model.config.embed_dim
        if bank.dim != embed_dim:
            raise ConfigError(f"bank: {bank.dim}-d text embeddings ({bank.tower_name}) but the point "
                              f"model projects to {embed_dim}-d")
        if not math.isfinite(float(margin)):
            raise ConfigError(f"margin: must be finite, got {margin!r}")
        self.model = model.to(self.device).eval()
        self.max_points = self._check_max_points(max_points)
        self.margin = float(margin)
        self.rotate_to_box = bool(rotate_to_box)
        scale = min(math.exp(float(model.logit_scale.detach())), MAX_LOGIT_SCALE)
        self.classifier = ZeroShotClassifier(bank.to(self.device), scale, top_k=top_k,
                                             score_threshold=score_threshold, min_points=min_points,
                                             unknown_label=unknown_label)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.classifier.labels

    @property
    def min_points(self) -> int:
        return self.classifier.min_points

    def set_prompts(self, prompt_set: PromptSet) -> None:
        """Encode a new prompt set with the kept text tower (slow; call off the hot path), then swap."""
        if self.tower is None:
            raise ConfigError("prompts: this classifier was built from a bank without a text tower")
        self.set_bank(build_text_bank(self.tower, prompt_set, self.cache_dir))

    def update(self, *, top_k: int | None = None, score_threshold: float | None = None,
               min_points: int | None = None, max_points: int | None = None,
               box_margin: float | None = None) -> None:
        """Change the live settings; each one takes effect from the next ``classify``."""
        if max_points is not None:
            self.max_points = self._check_max_points(max_points)
        if box_margin is not None:
            if not math.isfinite(float(box_margin)):
                raise ConfigError(f"box_margin: must be finite, got {box_margin!r}")
            self.margin = float(box_margin)
        current = self.classifier
        if top_k is not None or score_threshold is not None or min_points is not None:
            self.classifier = ZeroShotClassifier(
                current.bank, current.logit_scale, top_k=current.top_k if top_k is None else top_k,
                score_threshold=current.score_threshold if score_threshold is None else score_threshold,
                min_points=current.min_points if min_points is None else min_points,
                unknown_label=current.unknown_label)

    def _check_max_points(self, max_points: int | None) -> int:
        """``max_points`` validated against the model (0 or ``None``: the convention's count)."""
        limit = self.model.config.max_points
        value = int(max_points) if max_points else min(self.convention.num_points, limit)
        if not 1 <= value <= limit:
            raise ConfigError(f"max_points: must be in 1..{limit}, got {max_points!r}")
        return value

    def release_cached_memory(self) -> None:
        """Return cached accelerator memory to the driver (no-op on CPU)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def set_bank(self, bank: TextBank) -> None:
        """Swap the prompt set (atomic; the bank must live in the model's text space)."""
        self.classifier.set_bank(bank.to(self.device))

    def crop(self, points: np.ndarray, boxes: Boxes) -> list[np.ndarray]:
        """Indices of the points inside each box (with ``margin``)."""
        return points_in_boxes(points, boxes, self.margin)

    def encode_crops(self, points: np.ndarray, boxes: Boxes, index_lists: list[np.ndarray]) -> torch.Tensor:
        """``(M, D)`` embeddings: zeros for boxes below ``min_points``, the rest encoded in one batch."""
        counts = np.array([len(i) for i in index_lists], dtype=np.int64)
        encoded = np.flatnonzero(counts >= self.min_points)
        embeddings = torch.zeros(len(index_lists), self.model.config.embed_dim, device=self.device)
        if encoded.size:
            crops = preprocess_crops(points, [index_lists[i] for i in encoded], boxes.subset(encoded),
                                     max_points=self.max_points, rotate_to_box=self.rotate_to_box,
                                     convention=self.convention)
            clouds = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32)) for c in crops]
            with torch.inference_mode():
                embeddings[torch.from_numpy(encoded).to(self.device)] = self.model.encode(clouds)
        return embeddings

    def classify(self, points: np.ndarray, boxes: Boxes) -> list[ObjectResult]:
        """One result per box, in box order."""
        points = _as_points(points)
        index_lists = self.crop(points, boxes)
        counts = [len(i) for i in index_lists]
        predictions = self.classifier.classify(self.encode_crops(points, boxes, index_lists), counts)
        return [ObjectResult(n, p) for n, p in zip(counts, predictions)]

    @classmethod
    def from_config(cls, checkpoint: str | Path | None = None, *, encoder: str = "tiny",
                    text_tower: dict[str, Any] | TextTower | None = None,
                    prompts: PromptSet | str | Path | list[str] | None = None, device: str | torch.device = "cpu",
                    seed: int = 0, cache_dir: str | Path | None = None, allow_network: bool = False,
                    default_text_tower: dict[str, Any] | None = None, bank: str | Path | TextBank | None = None,
                    text_weights: str | Path | None = None, colour: str | None = None, backend: str = "torch",
                    **options: Any) -> ObjectClassifier:
        """Build the point model, text tower and text bank from settings.

        No ``checkpoint``: a random-init (seeded) encoder of the named preset whose projection
        matches the text tower (MiniLM unless ``text_tower`` says otherwise), with an
        :class:`UntrainedModelWarning`. With one (any family, see ``model.checkpoint``): its
        model and input convention, and the text tower its family was aligned to, read from
        ``text_weights`` (a local file holding that open_clip tower; a BlendCLIP release file
        holds its own). ``bank``: a prompt-bank file (``blendclip-prompts encode``) or bank;
        then no text tower is built unless one is configured (for live prompt changes), and a
        bank from another text space than the model's is refused. ``prompts``: a prompt set, a
        YAML path or set name (default ``nuscenes``), or labels. ``default_text_tower`` is used
        when a checkpoint names no text tower (ULIP xyz files). ``colour``: ``"gray"`` or
        ``"intensity"`` for families that take rgb. ``backend``: ``torch`` or ``onnxruntime`` (the
        BlendCLIP encoder exported once, see ``model.onnx_backend``). ``options`` go to
        :class:`ObjectClassifier` (max_points, min_points, margin, ...).
        """
        if bank is not None and prompts is not None:
            raise ConfigError("prompts: give a prompt set or a prompt bank, not both")
        prompt_set = _prompt_set(prompts) if bank is None else None  # validate before heavy work
        text_bank = bank if isinstance(bank, TextBank) or bank is None else load_bank(bank)
        dev = resolve_device(device)
        wants_tower = text_bank is None or text_tower is not None or text_weights is not None
        space, family = "", "BlendCLIP PointBERT"
        if checkpoint is None:
            tower = _tower(text_tower, None, dev, allow_network) if wants_tower else None
            dim = tower.dim if text_bank is None else text_bank.dim
            config = dataclasses.replace(PointBertConfig.named(encoder), embed_dim=dim)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                model = BlendClipPointModel(config)
            warnings.warn(f"no checkpoint: the '{encoder}' point encoder is random-initialised (seed {seed}); "
                          "its predictions are meaningless until trained weights are loaded",
                          UntrainedModelWarning, stacklevel=2)
            source = f"untrained '{encoder}' encoder (seed {seed})"
        else:
            loaded = load_checkpoint(checkpoint, device=dev)
            model, space, family = loaded.model, loaded.text_space, TITLES[loaded.family]
            tower = _checkpoint_tower(loaded, checkpoint, text_tower, text_weights, default_text_tower, dev,
                                      allow_network) if wants_tower else None
            source = f"checkpoint {checkpoint}"
        if text_bank is None:
            text_bank = build_text_bank(tower, prompt_set, cache_dir)
        else:
            check_bank_space(text_bank, space, model.config.embed_dim, f"the {family} model")
        if colour is not None:
            convention = options.pop("convention", None) or getattr(model, "input_convention", RELEASE_CONVENTION)
            options["convention"] = convention.replace(colour=colour)
        text = f"text tower {tower.name}" if tower is not None else f"prompt bank ({text_bank.tower_name})"
        return cls(with_backend(model, backend), text_bank, device=dev, tower=tower, cache_dir=cache_dir,
                   description=f"{family} ({backend}), {source}, {text}", **options)


def _checkpoint_tower(loaded: LoadedCheckpoint, checkpoint: str | Path, given: dict[str, Any] | TextTower | None,
                      text_weights: str | Path | None, default: dict[str, Any] | None, device: torch.device,
                      allow_network: bool) -> TextTower:
    """The text tower for a loaded checkpoint: the one given, else the one its family names."""
    spec = loaded.text_tower
    if given is not None and not isinstance(given, dict):
        return given
    given = {k: v for k, v in (given or {}).items() if v is not None}
    if text_weights is not None:
        given["weights"] = str(text_weights)
    if spec is not None and spec.get("pretrained") and given.get("model", spec["model"]) == spec["model"] \
            and str(given.get("type", "open_clip")).replace("-", "_") in ("open_clip", "openclip"):
        # The family's own tower: keep its tag, read the weights from the given local file.
        if not given.get("weights") and loaded.format == RELEASE:
            return OpenClipTextTower(spec["model"], weights=checkpoint, device=device, pretrained=spec["pretrained"])
        if not given.get("weights") and not allow_network:
            raise ConfigError(f"text_tower: the {TITLES[loaded.family]} model was aligned to open_clip "
                              f"{spec['model']} ({spec['pretrained']}); pass that tower's local weights file "
                              "(text weights) or a prompt bank")
        return make_text_tower({**spec, **given, "type": "open_clip"}, device, allow_network=allow_network)
    if given.get("type") or given.get("model"):
        return make_text_tower({"type": "open_clip", **given}, device, allow_network=allow_network)
    if spec is not None:
        return make_text_tower(spec, device, allow_network=allow_network)
    if default is not None:
        return make_text_tower(default, device, allow_network=allow_network)
    raise ConfigError(f"text_tower: checkpoint {checkpoint} ({loaded.format}) names no text tower; "
                      "pass one or a prompt bank")


def _tower(given: dict[str, Any] | TextTower | None, spec: dict[str, Any] | None, device: torch.device,
           allow_network: bool) -> TextTower:
    if given is not None and not isinstance(given, dict):
        return given
    return make_text_tower(given if given is not None else spec, device, allow_network=allow_network)


def _prompt_set(prompts: PromptSet | str | Path | list[str] | None) -> PromptSet:
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, (list, tuple)):
        return PromptSet.from_labels(list(prompts))
    return load_prompt_set(DEFAULT_PROMPTS if prompts is None else prompts)


def _as_points(points: Any) -> np.ndarray:
    array = np.asarray(points)
    if array.ndim != 2 or array.shape[1] < 3:
        raise PointCloudError(f"points: expected shape (N, >=3), got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise PointCloudError(f"points: expected a floating dtype, got {array.dtype}")
    return array
