"""The mixing ablation on the simulated domains: arms × seeds, an r_max sweep, three test domains.

CAD objects are the synthetic pool and simulated HDL-32E LiDAR views the real pool (both from
:mod:`blendclip_sim.object_sets`, split by instance). Every run trains the same encoder for the
same number of iterations through :func:`blendclip_train.trainer.train` and is evaluated zero-shot
(its ``last.safetensors``, no selection) on held-out simulated LiDAR, held-out CAD, and the
held-out instances scanned by a second sensor the training never saw (a 128-beam pattern on a
truck-height mount), through :func:`~.evaluate.evaluate_sets` (so the breakdowns by point count
and distance are the evaluation module's). Results are kept per run (``runs/<key>/result.json``):
a second invocation skips finished runs, re-evaluates a finished training whose evaluation
settings changed, and restarts an interrupted one; :func:`run_experiment` writes ``results.json``
with every run and the mean ± std over seeds per arm, domain and point-count bin.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blendclip_ros.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SIM_PROMPTS = REPO / "data" / "checkpoints" / "sim_classes.yaml"
#: Test domains: key -> (data set folder, file).
DOMAINS = {"lidar": ("sim", "lidar_test.npz"), "cad": ("sim", "cad_test.npz"), "sensor2": ("sensor2", "lidar_test.npz")}
RESULT_FILE = "result.json"
RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class Arm:
    """One training recipe: which pools feed the batches and how they are mixed."""

    name: str
    label: str
    synthetic: str  # object set used as the trainer's synthetic pool: "cad" or "lidar"
    real: bool  # add the simulated LiDAR train set as the real pool
    r_max: float = 0.0
    static: bool = False


def curriculum_arm(r_max: float) -> Arm:
    """CAD + LiDAR with the release's ramp: synthetic only in epoch 0, then up to ``r_max``."""
    return Arm(f"curriculum_r{r_max:g}", f"curriculum r_max {r_max:g}", "cad", True, r_max)


#: The four arms of the main table, by name (``curriculum`` takes ``ExperimentConfig.r_max``).
MAIN_ARMS = ("synthetic_only", "real_only", "constant_1_64", "curriculum")


def main_arm(name: str, r_max: float) -> Arm:
    """The named main-table arm."""
    arms = {
        "synthetic_only": Arm("synthetic_only", "synthetic (CAD) only", "cad", False),
        "real_only": Arm("real_only", "real (sim. LiDAR) only", "lidar", False),
        "constant_1_64": Arm("constant_1_64", "constant 1/64 real", "cad", True, 1 / 64, static=True),
        "curriculum": curriculum_arm(r_max),
    }
    if name not in arms:
        raise ConfigError(f"arms: unknown arm {name!r}; expected some of {list(arms)}")
    return arms[name]


@dataclass
class ExperimentConfig:
    """Data, training budget and evaluation of the whole ablation (stored in ``results.json``)."""

    out_dir: Path
    arms: tuple[str, ...] = MAIN_ARMS
    seeds: tuple[int, ...] = (0, 1, 2)
    r_max: float = 0.3
    sweep: tuple[float, ...] = (0.08, 0.15, 0.3, 0.5)
    sweep_seed: int = 0
    # data (blendclip_sim.object_sets)
    data_seed: int = 0
    per_class: int = 200
    cad_points: int = 256
    views: int = 2
    second_sensor: str = "vls128"
    second_mount_height: float = 3.5
    # training (the same for every arm)
    encoder: str = "tiny"
    text_tower: dict[str, Any] = field(default_factory=lambda: {"type": "minilm"})
    epochs: int = 10
    iterations_per_epoch: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    # execution
    jobs: int = 2
    threads: int = 1
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.cache_dir = None if self.cache_dir is None else Path(self.cache_dir)
        self.arms, self.seeds, self.sweep = tuple(self.arms), tuple(int(s) for s in self.seeds), tuple(self.sweep)
        for name in ("per_class", "cad_points", "views", "epochs", "iterations_per_epoch", "batch_size", "jobs",
                     "threads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if not self.arms and not self.sweep:
            raise ConfigError("arms/sweep: nothing to run")
        if self.arms and not self.seeds:
            raise ConfigError("seeds: the main arms need at least one seed")
        if any(not 0 < r <= 1 for r in (self.r_max, *self.sweep)):
            raise ConfigError("r_max and sweep values must be in (0, 1]")
        for name in self.arms:
            main_arm(name, self.r_max)

    @property
    def iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["out_dir"] = str(self.out_dir)
        out["cache_dir"] = None if self.cache_dir is None else str(self.cache_dir)
        return out


@dataclass(frozen=True)
class RunSpec:
    """One training run of the ablation."""

    arm: Arm
    seed: int

    @property
    def key(self) -> str:
        return f"{self.arm.name}_seed{self.seed}"


def plan_runs(config: ExperimentConfig) -> list[RunSpec]:
    """Main arms seed by seed, the sweep after the second seed (so an interrupted experiment has
    mean ± std and the sweep first); runs that coincide (the sweep's default r_max) appear once."""
    main = [[RunSpec(main_arm(name, config.r_max), seed) for name in config.arms] for seed in config.seeds]
    sweep = [RunSpec(curriculum_arm(r), config.sweep_seed) for r in config.sweep]
    runs = [run for seed_runs in main[:2] for run in seed_runs] + sweep + [run for s in main[2:] for run in s]
    unique: dict[str, RunSpec] = {}
    for run in runs:
        unique.setdefault(run.key, run)
    return list(unique.values())


# ----------------------------------------------------------------------------- data


def data_specs(config: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """``write_object_sets`` arguments of the two data folders (``sim``: both domains; ``sensor2``: LiDAR test)."""
    common = {"seed": config.data_seed, "n_per_class": config.per_class, "cad_points": config.cad_points,
              "lidar_views": config.views}
    return {"sim": {**common, "lidar": "hdl32e", "lidar_splits": ["train", "test"]},
            "sensor2": {**common, "lidar": config.second_sensor, "mount_height": config.second_mount_height,
                        "lidar_splits": ["test"]}}


def build_data(folder: Path, spec: dict[str, Any]) -> Path:
    """Write the object sets of ``spec`` into ``folder`` unless ``spec.json`` there already matches."""
    from blendclip_sim.lidar import preset
    from blendclip_sim.object_sets import write_object_sets

    stamp = folder / "spec.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == spec:
        return folder
    kwargs = {k: v for k, v in spec.items() if k != "lidar"}
    kwargs["lidar_splits"] = tuple(kwargs["lidar_splits"])
    write_object_sets(folder, pattern=preset(spec["lidar"]), **kwargs)
    write_json(stamp, spec)
    return folder


def data_summary(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Objects, median points and the share with <= 5 points of every object set."""
    from blendclip_sim.object_sets import load_object_set

    out = {}
    for path in paths:
        objects = load_object_set(path)
        n = objects.num_points
        out[f"{path.parent.name}/{path.stem}"] = {
            "objects": len(objects), "median_points": float(np.median(n)) if len(n) else None,
            "share_le5": float((n <= 5).mean()) if len(n) else None}
    return out


# ----------------------------------------------------------------------------- evaluation


def evaluate_checkpoint_domains(checkpoint: Path, domains: dict[str, Path], prompts: str | Path = SIM_PROMPTS,
                                cache_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """The :func:`~.evaluate.evaluate_sets` report of one checkpoint on every ``{domain: object-set path}``
    (metrics, per class, confusion, breakdowns by point count and distance)."""
    from blendclip_ros.model.checkpoint import load_checkpoint
    from blendclip_ros.text.bank import build_text_bank
    from blendclip_ros.text.prompts import load_prompt_set
    from blendclip_ros.text.towers import make_text_tower
    from .datasets.benchmarks import load_eval_set
    from .evaluate import evaluate_sets

    loaded = load_checkpoint(checkpoint)
    prompt_set = load_prompt_set(str(prompts))
    bank = build_text_bank(make_text_tower(loaded.text_tower, torch.device("cpu")), prompt_set, cache_dir)
    return {name: evaluate_sets(loaded.model, bank, prompt_set, [load_eval_set(f"npz:{path}")]).to_dict()
            for name, path in domains.items()}


# ----------------------------------------------------------------------------- runs


def domain_paths(config: ExperimentConfig) -> dict[str, Path]:
    data = config.out_dir / "data"
    return {name: data / folder / file for name, (folder, file) in DOMAINS.items()}


def domain_labels(config: ExperimentConfig) -> dict[str, str]:
    """Human-readable names of the test domains."""
    return {"lidar": "simulated LiDAR (HDL-32E, 1.84 m)", "cad": "CAD",
            "sensor2": f"second sensor ({config.second_sensor}, {config.second_mount_height:g} m)"}


def train_config(config: ExperimentConfig, run: RunSpec):
    """The trainer's configuration of ``run`` (same encoder, tower and iteration budget for every arm)."""
    from .trainer import TrainConfig

    sim = config.out_dir / "data" / "sim"
    return TrainConfig(
        synthetic=[sim / f"{run.arm.synthetic}_train.npz"], real=[sim / "lidar_train.npz"] if run.arm.real else [],
        out_dir=config.out_dir / "runs" / run.key / "train", encoder=config.encoder,
        text_tower=dict(config.text_tower), epochs=config.epochs, batch_size=config.batch_size,
        iterations_per_epoch=config.iterations_per_epoch, lr=config.lr, r_max=run.arm.r_max,
        static=run.arm.static, seed=run.seed, cache_dir=config.cache_dir, progress=False)


#: Training settings a finished checkpoint must carry (``TrainConfig`` fields) to be reused.
_TRAIN_KEYS = ("synthetic", "real", "encoder", "text_tower", "epochs", "iterations_per_epoch", "batch_size", "lr",
               "r_max", "static", "seed")


def trained_checkpoint(config: ExperimentConfig, run: RunSpec) -> Path | None:
    """The run's ``last.safetensors`` when its training finished with the current settings and data.

    Checked against the checkpoint's own metadata (the trainer stores its config, last epoch and
    data digests), so a finished training is reused even when only the evaluation changed.
    """
    from blendclip_ros.model.checkpoint import load_checkpoint
    from blendclip_ros.text.towers import file_digest

    expected = train_config(config, run)
    path = expected.out_dir / "last.safetensors"
    if not path.is_file():
        return None
    training = load_checkpoint(path).metadata.get("training") or {}
    stored, wanted = training.get("config", {}), expected.to_dict()
    if training.get("epoch") != config.epochs - 1 or any(stored.get(k) != wanted[k] for k in _TRAIN_KEYS):
        return None
    for item in training.get("data", []):
        if not Path(item["path"]).is_file() or file_digest(item["path"]) != item.get("sha256"):
            return None
    return path


def eval_fingerprint(config: ExperimentConfig) -> str:
    """Digest of what determines the evaluation of a trained run: test data and prompts."""
    document = {"data": data_specs(config), "prompts": SIM_PROMPTS.read_text(), "domains": DOMAINS}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def finished_result(config: ExperimentConfig, run: RunSpec) -> dict[str, Any] | None:
    """The stored result of ``run`` when its evaluation and its training match the current settings."""
    path = config.out_dir / "runs" / run.key / RESULT_FILE
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if result.get("eval_fingerprint") != eval_fingerprint(config) or trained_checkpoint(config, run) is None:
        return None
    return result


def execute_run(config: ExperimentConfig, run: RunSpec) -> dict[str, Any]:
    """Train (unless a finished checkpoint of the same settings exists) and evaluate one run;
    writes and returns its ``result.json`` document."""
    from .curriculum import mean_real_share
    from .trainer import load_history, train

    torch.set_num_threads(config.threads)
    train_cfg = train_config(config, run)
    run_dir = train_cfg.out_dir.parent
    load_start = os.getloadavg()[0]
    checkpoint = trained_checkpoint(config, run)
    if checkpoint is None:
        try:  # continue an interrupted attempt from its newest training state, if any
            checkpoint = train(dataclasses.replace(train_cfg, resume="auto")).last
            if not checkpoint.is_file():
                raise ConfigError(f"{run_dir}: the training state left nothing to train but no checkpoint")
        except ConfigError:  # a state of other settings, or a damaged run folder: start over
            shutil.rmtree(run_dir)
            checkpoint = train(train_cfg).last
    history, losses = load_history(train_cfg.out_dir)
    evaluated = time.time()
    evaluation = evaluate_checkpoint_domains(checkpoint, domain_paths(config), cache_dir=config.cache_dir)
    document = {
        "key": run.key, "arm": run.arm.name, "label": run.arm.label, "seed": run.seed, "r_max": run.arm.r_max,
        "static": run.arm.static, "synthetic_pool": run.arm.synthetic, "real_pool": run.arm.real,
        "mean_real_share": mean_real_share(config.epochs, run.arm.r_max, config.batch_size, run.arm.static),
        "iterations": len(losses), "final_loss": history[-1].loss,
        "train_seconds": sum(r.seconds for r in history), "eval_seconds": time.time() - evaluated,
        "load_start": load_start, "load_end": os.getloadavg()[0], "threads": config.threads,
        "checkpoint": str(checkpoint.relative_to(config.out_dir)), "eval_fingerprint": eval_fingerprint(config),
        "eval": evaluation}
    write_json(run_dir / RESULT_FILE, document)
    return document


# ----------------------------------------------------------------------------- aggregation


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    return {"mean": float(arr.mean()) if arr.size else None,
            "std": float(arr.std(ddof=1)) if arr.size > 1 else None, "n": int(arr.size),
            "values": [float(v) for v in arr]}


def summarise(results: dict[str, dict[str, Any]], config: ExperimentConfig) -> dict[str, Any]:
    """Mean ± std (sample std over seeds) per main arm and domain, overall and per point bin; the sweep."""
    summary: dict[str, Any] = {}
    for name in config.arms:
        arm = main_arm(name, config.r_max)
        runs = [results[RunSpec(arm, s).key] for s in config.seeds if RunSpec(arm, s).key in results]
        if not runs:
            continue
        entry: dict[str, Any] = {"label": arm.label, "key": arm.name, "seeds": [r["seed"] for r in runs],
                                 "mean_real_share": runs[0]["mean_real_share"], "domains": {}}
        for domain in DOMAINS:
            per = [r["eval"][domain] for r in runs]
            stats = {m: _stats([p[m] for p in per]) for m in ("top1", "top5", "mean_class_top1")}
            stats["count"] = per[0]["count"]
            stats["per_class_top1"] = {c: _stats([p["per_class"][c]["top1"] for p in per])["mean"]
                                       for c in per[0]["per_class"] if per[0]["per_class"][c]["count"]}
            for kind in ("points", "distance"):  # the evaluation's breakdowns (bins with objects)
                stats[kind] = {row["bin"]: {"count": row["count"],
                                            **_stats([p["breakdown"][kind][i]["top1"] for p in per])}
                               for i, row in enumerate(per[0]["breakdown"][kind]) if row["count"]}
            entry["domains"][domain] = stats
        summary[name] = entry
    sweep = []
    for r in config.sweep:
        key = RunSpec(curriculum_arm(r), config.sweep_seed).key
        if key in results:
            res = results[key]
            sweep.append({"r_max": r, "key": key, "seed": config.sweep_seed,
                          "mean_real_share": res["mean_real_share"],
                          **{d: {m: res["eval"][d][m] for m in ("top1", "top5", "mean_class_top1")}
                             for d in DOMAINS}})
    return {"arms": summary, "sweep": sweep}


# ----------------------------------------------------------------------------- orchestration


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _pool(jobs: int, threads: int) -> futures.ProcessPoolExecutor:
    """``jobs`` fresh (spawned) worker processes with ``threads`` torch threads each."""
    return futures.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=(threads,))


def _wait_all(pending: dict[futures.Future, Any], on_done: Callable[[Any, Any], None],
              loads: list[float]) -> None:
    """Wait for every future, sampling the 1-minute load average every 15 s."""
    while pending:
        done, _ = futures.wait(list(pending), timeout=15.0, return_when=futures.FIRST_COMPLETED)
        loads.append(os.getloadavg()[0])
        for fut in done:
            on_done(pending.pop(fut), fut.result())


def run_experiment(config: ExperimentConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the data, run every unfinished run (``config.jobs`` at a time), write ``results.json``."""
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    started, loads = time.time(), [os.getloadavg()[0]]
    runs = plan_runs(config)
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for run in runs:
        done = finished_result(config, run)
        if done is None:
            todo.append(run)
        else:
            results[run.key] = done
            log(f"skip {run.key} (finished)")
    log(f"{len(runs)} runs, {len(results)} finished, {len(todo)} to do; "
        f"{config.iterations} iterations each ({config.epochs} epochs x {config.iterations_per_epoch}), "
        f"{config.jobs} in parallel")
    specs = data_specs(config)
    data_started = time.time()
    with _pool(min(config.jobs, len(specs)), config.threads) as pool:
        pending = {pool.submit(build_data, out / "data" / name, spec): name for name, spec in specs.items()}
        _wait_all(pending, lambda name, _: None, loads)
    data_seconds = time.time() - data_started
    write = functools.partial(_write_results, config, runs, results, started, loads)
    if todo:
        with _pool(min(config.jobs, len(todo)), config.threads) as pool:
            pending = {pool.submit(execute_run, config, run): run for run in todo}

            def finished(run: RunSpec, result: dict[str, Any]) -> None:
                results[run.key] = result
                top1 = ", ".join(f"{d} {100 * result['eval'][d]['top1']:.1f}%" for d in DOMAINS)
                log(f"[{len(results)}/{len(runs)}] {run.key}: top-1 {top1} ({result['train_seconds']:.0f} s in "
                    f"training epochs, {result['eval_seconds']:.0f} s evaluation, load {result['load_end']:.1f})")
                write(data_seconds)

            _wait_all(pending, finished, loads)
    return write(data_seconds)


def _write_results(config: ExperimentConfig, runs: list[RunSpec], results: dict[str, dict[str, Any]],
                   started: float, loads: list[float], data_seconds: float) -> dict[str, Any]:
    """Append/replace this invocation in ``sessions`` and write ``results.json``."""
    path = config.out_dir / RESULTS_FILE
    previous = json.loads(path.read_text()) if path.is_file() else {}
    sessions = [s for s in previous.get("sessions", []) if s.get("started") != started]
    sessions.append({"started": started, "wall_seconds": time.time() - started, "data_seconds": data_seconds,
                     "runs_finished": len(results), "load_mean": float(np.mean(loads)),
                     "load_max": float(np.max(loads)), "cpus": os.cpu_count(),
                     "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))})
    document = {
        "config": config.to_dict(),
        "budget": {"iterations": config.iterations, "epochs": config.epochs,
                   "iterations_per_epoch": config.iterations_per_epoch, "batch_size": config.batch_size,
                   "samples": config.iterations * config.batch_size},
        "domains": domain_labels(config),
        "data": data_summary(dict.fromkeys(
            [config.out_dir / "data" / "sim" / f"{d}_train.npz" for d in ("cad", "lidar")]
            + list(domain_paths(config).values()))),
        "planned": [r.key for r in runs],
        "complete": all(r.key in results for r in runs),
        "runs": {r.key: results[r.key] for r in runs if r.key in results},
        **summarise(results, config),
        "sessions": sessions,
        "total_wall_seconds": float(sum(s["wall_seconds"] for s in sessions)),
    }
    write_json(path, document)
    return document


def write_json(path: Path, document: Any) -> None:
    """Write atomically (a crash leaves the old file or the new one, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_plain(document), indent=1, allow_nan=False))
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars as Python numbers, NaN/inf as null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
