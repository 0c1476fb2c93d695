"""BlendCLIP pretraining of the point model against frozen caption (and image) embeddings.

The text tower never trains. Targets are either the shards' frozen-embedding sidecars
(``embeddings`` = their key: no text tower runs for captions at all) or every distinct caption
encoded once at start (cached on disk by :func:`~blendclip_ros.text.bank.build_text_bank`).
Data streams from triplet shards (``.npz`` object sets are converted once and cached) through a
DataLoader with ``workers`` processes; batches come from the curriculum sampler, every rank
drawing its own ``batch_size`` (global batch = ``batch_size`` x world size under torchrun, DDP
with NCCL on GPUs and gloo on CPUs, negatives all-gathered from every rank). Each iteration
augments the batch (in the workers), encodes it, and takes one AdamW step on the symmetric
InfoNCE loss (bf16 autocast + GradScaler on CUDA by default, fp32 on CPU); the learning rate
follows a per-iteration warm-up + cosine and the logit scale is clamped after every step.

Outputs in ``out_dir`` (rank 0): ``last.safetensors``, ``best.safetensors`` (best validation top-1
on the ``best_on`` set, by default the first ``val`` set, or lowest training loss without one),
``epoch_XXX.safetensors`` every ``save_every`` epochs, ``history.json``, ``training_curves.png``,
``log.csv``, ``tensorboard/`` and ``checkpoints/train_state_*.pt`` (exact resume: every
``checkpoint_every_steps`` steps, or every ``checkpoint_minutes``, at every epoch end and on
SIGTERM).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from blendclip_ros.errors import ConfigError
from blendclip_ros.model.checkpoint import load_checkpoint, save_checkpoint
from blendclip_ros.model.config import PointBertConfig
from blendclip_ros.model.pointbert import BlendClipPointModel
from blendclip_ros.text.bank import build_text_bank
from blendclip_ros.text.prompts import PromptClass, PromptSet, load_prompt_set
from blendclip_ros.text.towers import TextTower, file_digest, make_text_tower

from .augment import AugmentConfig
from .npz_shards import resolve_sources
from .curriculum import CurriculumBatchSampler, mean_real_share, real_share
from .data import Batch, Collate, EvalTriplets, StreamingTriplets, derive_seed
from .distributed import Distributed
from .evaluate import class_mapping, encode_dataset, zero_shot_metrics
from .figures import save_figure
from .losses import clamp_logit_scale_, contrastive_loss
from .optim import WarmupCosine, build_optimizer
from .train_log import TrainLog
from .train_state import (
    find_train_state,
    load_train_state,
    rng_state,
    save_train_state,
    set_rng_state,
)
from .triplets import REAL

DEFAULT_R_MAX = 0.3
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in every checkpoint it writes)."""

    synthetic: list[Path]
    out_dir: Path
    real: list[Path] = field(default_factory=list)
    val: list[Path] = field(default_factory=list)
    val_prompts: str = "nuscenes"
    best_on: str | None = None  # the val set (file/folder stem) that selects best; default the first
    encoder: str = "tiny"
    text_tower: dict[str, Any] = field(default_factory=lambda: {"type": "minilm"})
    embeddings: str | None = None  # sidecar key of frozen text/image embeddings in the shards
    init_checkpoint: Path | None = None
    epochs: int = 10
    batch_size: int = 64  # per rank
    iterations_per_epoch: int | None = None  # default ceil(N_synthetic * ln 5 / (batch_size * world))
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
    precision: str = "auto"  # bf16 autocast + GradScaler on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the point model
    gather_with_grad: bool = False  # differentiate through the all-gathered point embeddings
    workers: int = 0  # DataLoader worker processes per rank
    save_every: int = 0
    save_dtype: str = "float32"  # "float16" halves the checkpoint size
    cache_dir: Path | None = None  # text-embedding cache (default ~/.cache/blendclip_ros/text); shards below it
    progress: bool = True
    resume: str | None = None  # "auto" (newest in out_dir/checkpoints, if any) or a train_state file
    checkpoint_every_steps: int | None = None  # default: every checkpoint_minutes of wall time
    checkpoint_minutes: float = 5.0
    keep_checkpoints: int = 3
    log_every: int = 10

    def __post_init__(self) -> None:
        self.synthetic = [Path(p) for p in self.synthetic]
        self.real = [Path(p) for p in self.real]
        self.val = [Path(p) for p in self.val]
        self.out_dir = Path(self.out_dir)
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if not self.synthetic:
            raise ConfigError("synthetic: at least one synthetic object-set file or shard folder is needed")
        if self.r_max is None:
            self.r_max = DEFAULT_R_MAX if self.real else 0.0
        if self.r_max > 0 and not self.real:
            raise ConfigError(f"r_max: {self.r_max} > 0 needs real object-set files or shards")
        for name in ("epochs", "batch_size", "max_points", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ConfigError("batch_size: contrastive training needs at least 2 samples per batch")
        for name in ("iterations_per_epoch", "checkpoint_every_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if self.save_dtype not in ("float32", "float16"):
            raise ConfigError(f"save_dtype: expected 'float32' or 'float16', got {self.save_dtype!r}")
        if self.save_every < 0 or self.warmup_epochs < 0 or self.workers < 0 or self.keep_checkpoints < 1:
            raise ConfigError("save_every, warmup_epochs and workers must be >= 0, keep_checkpoints >= 1")
        if not self.checkpoint_minutes > 0:
            raise ConfigError(f"checkpoint_minutes: must be > 0, got {self.checkpoint_minutes}")
        if self.best_on is not None and self.best_on not in [p.stem for p in self.val]:
            raise ConfigError(f"best_on: {self.best_on!r} is not one of the val sets {[p.stem for p in self.val]}")
        if self.resume is not None and self.resume != "auto" and not Path(self.resume).is_file():
            raise ConfigError(f"resume: expected 'auto' or a training checkpoint file, got {self.resume!r}")
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
    """Where the run's outputs are and what happened (the files are written by rank 0)."""

    out_dir: Path
    last: Path
    best: Path
    history: list[EpochRecord]
    iteration_losses: list[float]
    interrupted: bool = False  # stopped by SIGTERM after writing a training checkpoint
    train_state: Path | None = None  # the newest training checkpoint
    rank: int = 0
    rank_weight_digests: list[str] = field(default_factory=list)  # SHA-256 of every rank's final weights


def caption_embeddings(tower: TextTower, captions: list[str], cache_dir: Path | None = None) -> torch.Tensor:
    """``(len(captions), D)`` normalised embeddings, encoded once and cached on disk."""
    prompt_set = PromptSet("captions", tuple(PromptClass(c) for c in captions), ("{}",))
    return build_text_bank(tower, prompt_set, cache_dir).embeddings


def iterations_for(num_synthetic: int, batch_size: int) -> int:
    """BlendCLIP's epoch length: each synthetic object is drawn with p ~ 0.8 (ceil(N ln 5 / B)).

    ``batch_size`` is the global batch (per-rank batch x world size).
    """
    return max(1, math.ceil(num_synthetic * math.log(5) / batch_size))


def build_model(config: TrainConfig, embed_dim: int) -> BlendClipPointModel:
    """The encoder preset with a projection to ``embed_dim``, optionally initialised from a checkpoint."""
    if config.init_checkpoint is not None:
        loaded = load_checkpoint(config.init_checkpoint)
        if loaded.model.config.embed_dim != embed_dim:
            raise ConfigError(f"init_checkpoint: projects to {loaded.model.config.embed_dim}-d, "
                              f"the text targets are {embed_dim}-d")
        return loaded.model
    return BlendClipPointModel(dataclasses.replace(PointBertConfig.named(config.encoder), embed_dim=embed_dim))


def train(config: TrainConfig, on_epoch: Callable[[EpochRecord], None] | None = None) -> TrainResult:
    """Run (or resume) the whole training; under torchrun every rank calls this. ``on_epoch`` runs on rank 0."""
    dist = Distributed.from_env(config.device)
    try:
        result = _Run(config, dist).run(on_epoch)
        dist.barrier()  # every rank done before the group goes: gloo aborts a rank whose peer has left
        return result
    finally:
        dist.close()


class _PointTower(nn.Module):
    """The trained module as DDP sees it: clouds -> (point embeddings, logit scale)."""

    def __init__(self, model: BlendClipPointModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, clouds: list[torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(clouds, normalize=False, generator=generator), self.model.logit_scale


class _Sigterm:
    """Remembers a SIGTERM (cluster pre-emption) so the loop can checkpoint and stop between steps."""

    def __init__(self) -> None:
        self.received = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _ignore_sigterm(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM to the training process (a cluster signals every process)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _fresh_sums() -> dict[str, Any]:
    return {"loss": 0.0, "retrieval": 0.0, "hits": [0.0, 0.0], "seen": [0.0, 0.0], "seconds": 0.0}


class _Run:
    """One rank's training run: set-up, the loop, checkpoints, validation and outputs."""

    def __init__(self, config: TrainConfig, dist: Distributed) -> None:
        self.config, self.dist = config, dist
        c, device = config, dist.device
        self.out_dir = c.out_dir
        if dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        shard_cache = None if c.cache_dir is None else Path(c.cache_dir) / "shards"
        sources = self._main_first(lambda: {
            role: resolve_sources(getattr(c, role), shard_cache, max_points=c.max_points)
            for role in ("synthetic", "real", "val")})
        self.dataset = StreamingTriplets(sources["synthetic"], sources["real"], embeddings=c.embeddings,
                                         max_points=c.max_points)
        self.tower = make_text_tower(c.text_tower, device)
        self.targets = self.class_text = None
        if c.embeddings is not None:
            if self.dataset.embed_dim != self.tower.dim:
                raise ConfigError(f"embeddings: '{c.embeddings}' rows are {self.dataset.embed_dim}-d, the text tower "
                                  f"{self.tower.name} is {self.tower.dim}-d")
        else:
            self.targets = self._main_first(lambda: caption_embeddings(self.tower, self.dataset.captions,
                                                                       c.cache_dir)).to(device)
            if self.dataset.class_names:
                bank = self._main_first(lambda: build_text_bank(
                    self.tower, PromptSet.from_labels(self.dataset.class_names), c.cache_dir))
                self.class_text = bank.embeddings.to(device)
        self.validation = self._validation(sources["val"]) if dist.is_main else {}

        torch.manual_seed(c.seed)  # the same initial weights on every rank
        self.model = build_model(c, self.tower.dim).to(device).train()
        random.seed(derive_seed(c.seed, dist.rank, 3))
        np.random.seed(derive_seed(c.seed, dist.rank, 4) % 2 ** 32)
        torch.manual_seed(derive_seed(c.seed, dist.rank, 5))  # drop path differs per rank
        net: nn.Module = _PointTower(self.model)
        if c.compile:
            net = torch.compile(net)
        if dist.active:
            net = nn.parallel.DistributedDataParallel(net, device_ids=[dist.local_rank] if device.type == "cuda"
                                                      else None)
        self.net = net
        self.gather = dist.global_batch(c.gather_with_grad) if dist.active else None
        self.optimizer = build_optimizer(self.model, c.lr, c.weight_decay)
        self.iterations = c.iterations_per_epoch or iterations_for(self.dataset.num_synthetic,
                                                                   c.batch_size * dist.world_size)
        total = self.iterations * c.epochs
        self.schedule = WarmupCosine(c.lr, total, min(total - 1, round(c.warmup_epochs * self.iterations)),
                                     start=min(c.lr_start, c.lr), floor=min(c.lr_floor, c.lr))
        self.autocast = device.type == "cuda" and c.precision in ("auto", "bf16")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast)
        self.sampler = CurriculumBatchSampler(self.dataset.num_synthetic, self.dataset.num_real, c.batch_size,
                                              self.iterations, c.epochs, float(c.r_max), c.static, c.seed,
                                              rank=dist.rank)
        self.meta = {"config": c.to_dict(), "data": _data_info(c), "labels": self.dataset.class_names,
                     "world_size": dist.world_size, "global_batch": c.batch_size * dist.world_size,
                     "mean_real_share": mean_real_share(c.epochs, float(c.r_max), c.batch_size, c.static)}
        self.epoch = self.iteration = self.step = 0
        self.history: list[EpochRecord] = []
        self.losses: list[float] = []
        self.best_score = -math.inf
        self.sums = _fresh_sums()
        self.train_state: Path | None = None
        state_path = find_train_state(c.resume, self.out_dir) if c.resume else None
        if state_path is not None:
            self._restore(load_train_state(state_path), state_path)
        elif dist.is_main:
            for old in (self.out_dir / "checkpoints").glob("train_state_*.pt"):
                old.unlink()  # a fresh run: an older run's states would outrank this one's
        self.log = TrainLog(self.out_dir, enabled=dist.is_main, resume_step=self.step if state_path else None)
        self.last_checkpoint = time.monotonic()

    # ---- set-up helpers
    def _main_first(self, work: Callable[[], Any]) -> Any:
        """Rank 0 does ``work`` first (conversions, embedding caches), then the others find it done."""
        if self.dist.is_main:
            out = work()
            self.dist.barrier()
            return out
        self.dist.barrier()
        return work()

    def _validation(self, sources: list[Path]) -> dict[str, tuple[EvalTriplets, Any, PromptSet]]:
        c = self.config
        if not sources:
            return {}
        prompt_set = load_prompt_set(c.val_prompts)
        bank = build_text_bank(self.tower, prompt_set, c.cache_dir)
        return {path.stem: (EvalTriplets([source], c.max_points), bank, prompt_set)
                for path, source in zip(c.val, sources)}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        c = self.config
        if state["world_size"] != self.dist.world_size:
            raise ConfigError(f"resume: {path} was written by {state['world_size']} ranks, this run has "
                              f"{self.dist.world_size} (data positions are per rank)")
        saved = state["config"]
        for key in ("seed", "batch_size", "epochs", "encoder", "r_max", "static", "iterations_per_epoch", "embeddings"):
            if saved.get(key) != c.to_dict()[key]:
                raise ConfigError(f"resume: {path} has {key}={saved.get(key)!r}, this run {c.to_dict()[key]!r}")
        if state["schedule"] != dataclasses.asdict(self.schedule):
            raise ConfigError(f"resume: {path} has another learning-rate schedule ({state['schedule']})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.iteration, self.step = state["epoch"], state["iteration"], state["step"]
        self.history = [EpochRecord(**r) for r in state["history"]]
        self.losses = list(state["iteration_losses"])
        self.best_score = state["best_score"]
        mine = state["ranks"][self.dist.rank]
        set_rng_state(mine["rng"])
        self.sums = mine["sums"]
        self.train_state = path
        if self.dist.is_main and self.config.progress:
            tqdm.write(f"resumed from {path}: epoch {self.epoch + 1}, iteration {self.iteration}, step {self.step}")

    # ---- the loop
    def run(self, on_epoch: Callable[[EpochRecord], None] | None) -> TrainResult:
        c, dist = self.config, self.dist
        sigterm = _Sigterm()
        try:
            while self.epoch < c.epochs:
                epoch = self.epoch
                self.sampler.set_epoch(epoch, self.iteration)
                bar = tqdm(total=self.iterations, initial=self.iteration, desc=f"epoch {epoch + 1}/{c.epochs}",
                           unit="it", disable=not (c.progress and dist.is_main), leave=False)
                started = previous = time.monotonic()
                for batch in self._loader(epoch):
                    lr = self.schedule.apply(self.optimizer, self.step)
                    loss, image_loss = self._step(batch, epoch)
                    self.iteration += 1
                    self.step += 1
                    now = time.monotonic()
                    seconds, previous = now - previous, now  # step to step: data wait included
                    bar.update()
                    if dist.is_main:
                        self.losses.append(loss)
                        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}", real=self.sampler.real_per_batch)
                        if self.step % c.log_every == 0:
                            self.log.step(epoch, self.step, {
                                "loss": loss, "loss_point_text": loss - (image_loss or 0.0),
                                "loss_point_image": image_loss,
                                "lr": lr, "logit_scale": float(self.model.logit_scale.detach().exp()),
                                "real_share": real_share(epoch, c.epochs, float(c.r_max), c.static),
                                "samples_per_s": c.batch_size * dist.world_size / max(seconds, 1e-9)})
                    stop, due = self._flags(sigterm)
                    if stop or (due and self.iteration < self.iterations):
                        self.sums["seconds"] += time.monotonic() - started
                        started = time.monotonic()
                        self._checkpoint()
                    if stop:
                        bar.close()
                        if dist.is_main:
                            tqdm.write(f"SIGTERM: stopped at step {self.step}, checkpoint {self.train_state}; "
                                       "continue with --resume auto")
                        return self._result(interrupted=True)
                bar.close()
                self.sums["seconds"] += time.monotonic() - started
                record = self._end_epoch(epoch)
                self.epoch, self.iteration, self.sums = epoch + 1, 0, _fresh_sums()
                self._checkpoint()
                if dist.is_main and on_epoch is not None:
                    on_epoch(record)
        finally:
            sigterm.restore()
            self.log.close()
        return self._result()

    def _loader(self, epoch: int) -> DataLoader:
        c, rank = self.config, self.dist.rank
        return DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=Collate(c.augment),
                          num_workers=c.workers, pin_memory=self.dist.device.type == "cuda",
                          worker_init_fn=_ignore_sigterm if c.workers else None,
                          generator=torch.Generator().manual_seed(derive_seed(c.seed, epoch, rank, 6)))

    def _step(self, batch: Batch, epoch: int) -> tuple[float, float | None]:
        """One optimiser step: (loss, point-image loss); adds to the epoch sums."""
        c, device = self.config, self.dist.device
        generator = torch.Generator().manual_seed(derive_seed(c.seed, epoch, self.dist.rank, self.iteration, 2))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast):
            embeddings, logit_scale = self.net(batch.clouds(device), generator)
        embeddings = embeddings.float()
        texts = batch.text_embeddings.to(device) if self.targets is None \
            else self.targets[batch.text_index.to(device)]
        images, mask = batch.image_embeddings, batch.image_mask
        if images is None and self.dataset.has_images:  # every rank takes part in the image all-gather
            images, mask = torch.zeros(len(batch), texts.shape[1]), torch.zeros(len(batch), dtype=torch.bool)
        if images is not None:
            images, mask = images.to(device), mask.to(device)
        loss = contrastive_loss(embeddings, texts, logit_scale, images, mask, gather=self.gather)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        clamp_logit_scale_(self.model)
        value = float(loss.total.detach())
        self.sums["loss"] += value
        self.sums["retrieval"] += loss.retrieval_accuracy
        if self.class_text is not None:
            with torch.no_grad():
                correct = (embeddings.detach() @ self.class_text.T).argmax(1).cpu() == batch.labels
            valid = batch.labels >= 0
            for domain in (0, 1):
                rows = valid & (batch.domains == domain)
                self.sums["hits"][domain] += float(correct[rows].sum())
                self.sums["seen"][domain] += float(rows.sum())
        return value, loss.point_image

    def _flags(self, sigterm: _Sigterm) -> tuple[bool, bool]:
        """(stop, checkpoint due), agreed by every rank."""
        c = self.config
        if c.checkpoint_every_steps is not None:
            due = self.step % c.checkpoint_every_steps == 0
        else:
            due = time.monotonic() - self.last_checkpoint >= 60 * c.checkpoint_minutes
        if not self.dist.active:
            return sigterm.received, due
        flags = torch.tensor([float(sigterm.received), float(due)], device=self.dist.device)
        self.dist.all_reduce(flags, "max")
        return bool(flags[0]), bool(flags[1])

    # ---- epoch end, checkpoints, outputs
    def _end_epoch(self, epoch: int) -> EpochRecord:
        dist = self.dist
        s = self.sums
        totals = torch.tensor([s["loss"], s["retrieval"], *s["hits"], *s["seen"]], dtype=torch.float64,
                              device=dist.device)
        dist.all_reduce(totals)
        loss, retrieval, hits, seen = float(totals[0]), float(totals[1]), totals[2:4].cpu(), totals[4:6].cpu()
        batches = self.iterations * dist.world_size
        record = EpochRecord(
            epoch=epoch, iterations=self.iterations, real_per_batch=self.sampler.real_per_batch,
            lr=self.schedule(self.step - 1), loss=loss / batches, retrieval_accuracy=retrieval / batches,
            train_accuracy=float(hits.sum() / seen.sum()) if seen.sum() > 0 else math.nan,
            train_accuracy_real=float(hits[REAL] / seen[REAL]) if seen[REAL] > 0 else None,
            logit_scale=float(self.model.logit_scale.detach().exp()), seconds=s["seconds"])
        if dist.is_main:
            for name, (dataset, bank, prompt_set) in self.validation.items():
                record.val[name] = _validate(self.model, dataset, bank, prompt_set)
            self.model.train()
            self.history.append(record)
            self._save_outputs(record, epoch)
        else:
            self.history.append(record)
        return record

    def _save_outputs(self, record: EpochRecord, epoch: int) -> None:
        c = self.config
        training_meta = {**self.meta, "epoch": epoch, "iterations": self.step,
                         "history": [dataclasses.asdict(r) for r in self.history]}
        save = functools.partial(_save, self.model, spec=c.text_tower, tower=self.tower,
                                 labels=self.dataset.class_names, dtype=c.save_dtype)
        save(self.out_dir / "last.safetensors", training=training_meta)
        selector = self._selector()
        score = record.val[selector]["top1"] if selector else -record.loss
        if score > self.best_score:
            self.best_score = score
            selected_by = f"val top-1 on {selector}" if selector else "lowest training loss"
            save(self.out_dir / "best.safetensors", training={**training_meta, "selected_by": selected_by})
        if c.save_every and (epoch + 1) % c.save_every == 0:
            save(self.out_dir / f"epoch_{epoch + 1:03d}.safetensors", training=training_meta)
        _write_history(self.out_dir, self.history, self.losses)
        self.log.epoch(epoch, self.step, {name: v["top1"] for name, v in record.val.items()})
        if c.progress:
            tqdm.write(_summary(record))

    def _selector(self) -> str | None:
        if not self.config.val:
            return None
        return self.config.best_on or self.config.val[0].stem

    def _checkpoint(self) -> None:
        """Write a training checkpoint of the current position (every rank takes part)."""
        c = self.config
        ranks = self.dist.gather_objects({"rng": rng_state(), "sums": copy.deepcopy(self.sums)})
        if self.dist.is_main:
            state = {"epoch": self.epoch, "iteration": self.iteration, "world_size": self.dist.world_size,
                     "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict(), "schedule": dataclasses.asdict(self.schedule),
                     "ranks": ranks, "history": [dataclasses.asdict(r) for r in self.history],
                     "iteration_losses": self.losses, "best_score": self.best_score, "config": c.to_dict()}
            self.train_state = save_train_state(self.out_dir, self.step, state, c.keep_checkpoints)
        self.dist.barrier()
        self.last_checkpoint = time.monotonic()

    def _result(self, interrupted: bool = False) -> TrainResult:
        self.dist.broadcast_buffers(self.model)
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digests = self.dist.gather_objects(digest.hexdigest())
        if len(set(digests)) > 1 and self.dist.is_main:
            tqdm.write(f"warning: ranks ended with different weights {digests}")
        return TrainResult(self.out_dir, self.out_dir / "last.safetensors", self.out_dir / "best.safetensors",
                           self.history, self.losses, interrupted, self.train_state, self.dist.rank, digests)


def _validate(model: BlendClipPointModel, dataset: EvalTriplets, bank: Any, prompt_set: PromptSet) -> dict[str, float]:
    """Zero-shot top-1 / top-5 / mean class top-1 of ``model`` on one validation set."""
    targets = class_mapping(dataset.class_names, prompt_set)[dataset.labels]
    kept = np.flatnonzero(targets >= 0)
    if kept.size == 0:
        raise ConfigError(f"val: none of the classes {dataset.class_names} is in the prompt set {prompt_set.name!r}")
    embeddings = encode_dataset(model, Subset(dataset, kept.tolist()), batch_size=256)
    scores = embeddings @ bank.embeddings.to(embeddings.device, torch.float32).T
    metrics = zero_shot_metrics(scores, torch.from_numpy(targets[kept]), bank.labels)
    return {k: getattr(metrics, k) for k in ("top1", "top5", "mean_class_top1")}


def _data_info(config: TrainConfig) -> list[dict[str, Any]]:
    """Every data source with its role: a file's SHA-256, a folder's shard count."""
    info = []
    for role, paths in (("synthetic", config.synthetic), ("real", config.real), ("val", config.val)):
        for path in paths:
            entry = {"role": role, "path": str(path)}
            if path.is_file():
                entry["sha256"] = file_digest(path)
            else:
                entry["shards"] = len(list(path.glob("*.h5")))
            info.append(entry)
    return info


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

