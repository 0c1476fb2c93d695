"""BlendCLIP pretraining of the point model against frozen caption embeddings.

The text tower never trains: every caption of the training pools is encoded once (cached on
disk by :func:`~blendclip_ros.text.bank.build_text_bank`) and batches look their targets up by
index. Each iteration augments the batch's clouds, encodes them, and takes one AdamW step on
the symmetric InfoNCE loss; the learning rate follows a per-iteration warm-up + cosine and the
logit scale is clamped after every step. Batches come from the curriculum sampler.

Outputs in ``out_dir``: ``last.safetensors``, ``best.safetensors`` (best validation top-1 on the
first validation set, or lowest training loss without one), ``epoch_XXX.safetensors`` every
``save_every`` epochs, ``history.json`` and ``training_curves.png``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from blendclip_ros.errors import ConfigError
from .figures import save_figure
from blendclip_ros.model.checkpoint import load_checkpoint, save_checkpoint
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel
from blendclip_ros.text.bank import build_text_bank
from blendclip_ros.text.prompts import PromptClass, PromptSet, load_prompt_set
from blendclip_ros.text.towers import TextTower, file_digest, make_text_tower, resolve_device
from .augment import AugmentConfig, augment_clouds
from .curriculum import CurriculumBatchSampler, mean_real_share
from .evaluate import evaluate_model
from .losses import clamp_logit_scale_, contrastive_loss
from .optim import WarmupCosine, build_optimizer
from .triplets import REAL, SYNTHETIC, PooledTriplets, TripletBatch, TripletDataset, collate

DEFAULT_R_MAX = 0.3


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in every checkpoint it writes)."""

    synthetic: list[Path]
    out_dir: Path
    real: list[Path] = field(default_factory=list)
    val: list[Path] = field(default_factory=list)
    val_prompts: str = "nuscenes"
    encoder: str = "tiny"
    text_tower: dict[str, Any] = field(default_factory=lambda: {"type": "minilm"})
    init_checkpoint: Path | None = None
    epochs: int = 10
    batch_size: int = 64
    iterations_per_epoch: int | None = None  # default ceil(N_synthetic * ln 5 / batch_size)
    lr: float = 1e-3
    lr_start: float = 1e-6
    lr_floor: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.1
    r_max: float | None = None  # default 0.3 with real data, 0 without
    static: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_points: int = 8192
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # "bf16": autocast on CUDA
    save_every: int = 0
    save_dtype: str = "float32"  # "float16" halves the checkpoint size
    cache_dir: Path | None = None  # text-embedding cache (default ~/.cache/blendclip_ros/text)
    progress: bool = True

    def __post_init__(self) -> None:
        self.synthetic = [Path(p) for p in self.synthetic]
        self.real = [Path(p) for p in self.real]
        self.val = [Path(p) for p in self.val]
        self.out_dir = Path(self.out_dir)
        if not self.synthetic:
            raise ConfigError("synthetic: at least one synthetic object-set file is needed")
        if self.r_max is None:
            self.r_max = DEFAULT_R_MAX if self.real else 0.0
        if self.r_max > 0 and not self.real:
            raise ConfigError(f"r_max: {self.r_max} > 0 needs real object-set files")
        for name in ("epochs", "batch_size", "max_points"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ConfigError("batch_size: contrastive training needs at least 2 samples per batch")
        if self.iterations_per_epoch is not None and self.iterations_per_epoch < 1:
            raise ConfigError(f"iterations_per_epoch: must be >= 1, got {self.iterations_per_epoch}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision: expected 'fp32' or 'bf16', got {self.precision!r}")
        if self.save_dtype not in ("float32", "float16"):
            raise ConfigError(f"save_dtype: expected 'float32' or 'float16', got {self.save_dtype!r}")
        if self.save_every < 0 or self.warmup_epochs < 0:
            raise ConfigError("save_every and warmup_epochs must be >= 0")
        PointBertConfig.named(self.encoder)  # unknown presets fail here

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy (paths as strings)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
            elif isinstance(value, list):
                out[key] = [str(v) if isinstance(v, Path) else v for v in value]
        return out


@dataclass
class EpochRecord:
    """Per-epoch summary kept in ``history.json``."""

    epoch: int
    iterations: int
    real_per_batch: int
    lr: float
    loss: float
    retrieval_accuracy: float
    train_accuracy: float
    train_accuracy_real: float | None
    logit_scale: float
    seconds: float
    val: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class TrainResult:
    """Where the run's outputs are and what happened."""

    out_dir: Path
    last: Path
    best: Path
    history: list[EpochRecord]
    iteration_losses: list[float]


def caption_embeddings(tower: TextTower, captions: list[str], cache_dir: Path | None = None) -> torch.Tensor:
    """``(len(captions), D)`` normalised embeddings, encoded once and cached on disk."""
    prompt_set = PromptSet("captions", tuple(PromptClass(c) for c in captions), ("{}",))
    return build_text_bank(tower, prompt_set, cache_dir).embeddings


def iterations_for(num_synthetic: int, batch_size: int) -> int:
    """BlendCLIP's epoch length: each synthetic object is drawn with p ~ 0.8 (ceil(N ln 5 / B))."""
    return max(1, math.ceil(num_synthetic * math.log(5) / batch_size))


def build_model(config: TrainConfig, embed_dim: int) -> BlendClipPointModel:
    """The encoder preset with a projection to ``embed_dim``, optionally initialised from a checkpoint."""
    if config.init_checkpoint is not None:
        loaded = load_checkpoint(config.init_checkpoint)
        if loaded.model.config.embed_dim != embed_dim:
            raise ConfigError(f"init_checkpoint: projects to {loaded.model.config.embed_dim}-d, "
                              f"the text tower is {embed_dim}-d")
        return loaded.model
    return BlendClipPointModel(dataclasses.replace(PointBertConfig.named(config.encoder), embed_dim=embed_dim))


def train(config: TrainConfig, on_epoch: Callable[[EpochRecord], None] | None = None) -> TrainResult:
    """Run the whole training; returns the checkpoint paths and the history."""
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    out_dir = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    synthetic = TripletDataset(config.synthetic, SYNTHETIC, max_points=config.max_points, seed=config.seed)
    real = TripletDataset(config.real, REAL, max_points=config.max_points, seed=config.seed) if config.real else None
    pool = PooledTriplets(synthetic, real)
    tower = make_text_tower(config.text_tower, device)
    targets = caption_embeddings(tower, pool.captions, config.cache_dir).to(device)
    class_bank = build_text_bank(tower, PromptSet.from_labels(pool.class_names), config.cache_dir)
    class_text = class_bank.embeddings.to(device)
    validation = _validation(config, tower)

    model = build_model(config, tower.dim).to(device).train()
    optimizer = build_optimizer(model, config.lr, config.weight_decay)
    iterations = config.iterations_per_epoch or iterations_for(len(synthetic), config.batch_size)
    total = iterations * config.epochs
    schedule = WarmupCosine(config.lr, total, min(total - 1, round(config.warmup_epochs * iterations)),
                            start=min(config.lr_start, config.lr), floor=min(config.lr_floor, config.lr))
    sampler = CurriculumBatchSampler(pool.num_synthetic, pool.num_real, config.batch_size, iterations,
                                     config.epochs, float(config.r_max), config.static, config.seed)
    loader = DataLoader(pool, batch_sampler=sampler, collate_fn=collate, num_workers=0)
    generator = torch.Generator().manual_seed(config.seed)
    autocast = device.type == "cuda" and config.precision == "bf16"
    data_info = _data_info(config)
    meta = {"config": config.to_dict(), "data": data_info, "labels": pool.class_names,
            "mean_real_share": mean_real_share(config.epochs, float(config.r_max), config.batch_size, config.static)}

    history: list[EpochRecord] = []
    losses: list[float] = []
    best_score, best_path, last_path = -math.inf, out_dir / "best.safetensors", out_dir / "last.safetensors"
    step = 0
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        started = time.monotonic()
        sums = {"loss": 0.0, "retrieval": 0.0}
        hits = torch.zeros(2)
        seen = torch.zeros(2)
        bar = tqdm(loader, total=iterations, desc=f"epoch {epoch + 1}/{config.epochs}", unit="it",
                   disable=not config.progress, leave=False)
        lr = schedule(step)
        for batch in bar:
            lr = schedule.apply(optimizer, step)
            value, retrieval, correct = _step(model, batch, targets, class_text, optimizer, config.augment,
                                              generator, device, autocast)
            losses.append(value)
            sums["loss"] += value
            sums["retrieval"] += retrieval
            hits += torch.bincount(batch.domains, correct.float(), minlength=2)
            seen += torch.bincount(batch.domains, minlength=2).float()
            step += 1
            bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.1e}", real=sampler.real_per_batch)
        record = EpochRecord(
            epoch=epoch, iterations=iterations, real_per_batch=sampler.real_per_batch, lr=lr,
            loss=sums["loss"] / iterations, retrieval_accuracy=sums["retrieval"] / iterations,
            train_accuracy=float(hits.sum() / seen.sum()),
            train_accuracy_real=float(hits[REAL] / seen[REAL]) if seen[REAL] > 0 else None,
            logit_scale=float(model.logit_scale.detach().exp()), seconds=time.monotonic() - started)
        for name, (dataset, bank, prompt_set) in validation.items():
            metrics = evaluate_model(model, bank, prompt_set, dataset, batch_size=256)
            record.val[name] = {k: getattr(metrics, k) for k in ("top1", "top5", "mean_class_top1")}
        model.train()
        history.append(record)
        training_meta = {**meta, "epoch": epoch, "iterations": step,
                         "history": [dataclasses.asdict(r) for r in history]}
        save = functools.partial(_save, model, spec=config.text_tower, tower=tower, labels=pool.class_names,
                                 dtype=config.save_dtype)
        save(last_path, training=training_meta)
        score = next(iter(record.val.values()))["top1"] if record.val else -record.loss
        if score > best_score:
            best_score = score
            save(best_path, training={**training_meta, "selected_by": _selection(validation)})
        if config.save_every and (epoch + 1) % config.save_every == 0:
            save(out_dir / f"epoch_{epoch + 1:03d}.safetensors", training=training_meta)
        _write_history(out_dir, history, losses)
        if config.progress:
            tqdm.write(_summary(record))
        if on_epoch is not None:
            on_epoch(record)
    return TrainResult(out_dir, last_path, best_path, history, losses)


def _step(model: BlendClipPointModel, batch: TripletBatch, targets: torch.Tensor, class_text: torch.Tensor,
          optimizer: torch.optim.Optimizer, augment: AugmentConfig, generator: torch.Generator,
          device: torch.device, autocast: bool) -> tuple[float, float, torch.Tensor]:
    """One optimiser step: (loss, in-batch retrieval accuracy, per-sample zero-shot hits on class prompts)."""
    clouds = [c.to(device) for c in augment_clouds(batch.clouds, augment, generator=generator)]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        embeddings = model.encode(clouds, normalize=False, generator=generator).float()
    images = None if batch.image_embeddings is None else batch.image_embeddings.to(device)
    mask = None if batch.image_mask is None else batch.image_mask.to(device)
    loss = contrastive_loss(embeddings, targets[batch.caption_index.to(device)], model.logit_scale, images, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    optimizer.step()
    clamp_logit_scale_(model)
    with torch.no_grad():
        correct = (embeddings @ class_text.T).argmax(1).cpu() == batch.labels
    return float(loss.total.detach()), loss.retrieval_accuracy, correct


def _validation(config: TrainConfig, tower: TextTower) -> dict[str, tuple[TripletDataset, Any, PromptSet]]:
    if not config.val:
        return {}
    prompt_set = load_prompt_set(config.val_prompts)
    bank = build_text_bank(tower, prompt_set, config.cache_dir)
    return {path.stem: (TripletDataset([path], REAL, max_points=config.max_points, seed=config.seed), bank,
                        prompt_set) for path in config.val}


def _selection(validation: dict) -> str:
    return f"val top-1 on {next(iter(validation))}" if validation else "lowest training loss"


def _data_info(config: TrainConfig) -> list[dict[str, Any]]:
    return [{"role": role, "path": str(path), "sha256": file_digest(path)}
            for role, paths in (("synthetic", config.synthetic), ("real", config.real), ("val", config.val))
            for path in paths]


def _save(model: BlendClipPointModel, path: Path, *, tower: TextTower, spec: dict[str, Any],
          training: dict[str, Any], labels: list[str], dtype: str) -> Path:
    """A project checkpoint naming the text tower (spec + name + weights digest) and the run."""
    spec = {**spec, "name": tower.name, "weights_digest": tower.weights_digest, "embed_dim": tower.dim}
    exported = model if dtype == "float32" else copy.deepcopy(model).to(torch.float16)
    return save_checkpoint(path, exported, text_tower=spec, training=training, labels=labels)


def _summary(record: EpochRecord) -> str:
    val = "  ".join(f"{name} top-1 {100 * v['top1']:.1f}%" for name, v in record.val.items())
    return (f"epoch {record.epoch + 1}: loss {record.loss:.3f}, train acc {100 * record.train_accuracy:.1f}%, "
            f"real/batch {record.real_per_batch}, s {record.logit_scale:.1f}, {record.seconds:.0f}s  {val}")


def _write_history(out_dir: Path, history: list[EpochRecord], losses: list[float]) -> None:
    (out_dir / "history.json").write_text(json.dumps(
        {"epochs": [dataclasses.asdict(r) for r in history], "iteration_losses": losses}, indent=1))
    plot_history(history, losses, out_dir / "training_curves.png")


def plot_history(history: list[EpochRecord], losses: list[float], path: Path, title: str = "") -> Path:
    """Loss per iteration (and its running mean) and accuracies per epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.arange(1, len(losses) + 1)
    left.plot(steps, losses, color="0.75", linewidth=0.6, label="iteration")
    window = max(1, len(losses) // 50)
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        left.plot(steps[window - 1:], smooth, color="C0", label=f"running mean ({window})")
    left.set_xlabel("iteration")
    left.set_ylabel("InfoNCE loss")
    left.legend(fontsize=8)
    epochs = [r.epoch + 1 for r in history]
    right.plot(epochs, [100 * r.train_accuracy for r in history], "o-", label="train zero-shot (class prompts)")
    if any(r.train_accuracy_real is not None for r in history):
        right.plot(epochs, [np.nan if r.train_accuracy_real is None else 100 * r.train_accuracy_real
                            for r in history], "s--", label="train, real samples")
    for name in history[0].val if history else ():
        right.plot(epochs, [100 * r.val[name]["top1"] for r in history], "^-", label=f"val {name} top-1")
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy (%)")
    right.set_ylim(0, 100)
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=100)


def load_history(out_dir: Path) -> tuple[list[EpochRecord], list[float]]:
    """The records and iteration losses of ``out_dir/history.json``."""
    data = json.loads((Path(out_dir) / "history.json").read_text())
    return [EpochRecord(**r) for r in data["epochs"]], list(data["iteration_losses"])

