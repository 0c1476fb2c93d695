"""Exact resume and distributed training with real processes: SIGKILL / SIGTERM then ``--resume auto``,
and ``torchrun`` with 2 gloo ranks (identical weights on both ranks, resume within 1e-6)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from blendclip_train.npz_shards import convert_object_set
from blendclip_train.shards import ShardReader, ShardSet, write_embeddings, write_shard
from blendclip_train.train_state import list_train_states, load_train_state
from test.test_training_shards import jpeg
from test.test_training_triplets import tiny_object_set

REPO = Path(__file__).resolve().parents[1]
KEY = "minilm-test"
DIM = 384  # the MiniLM tower's width: the sidecars stand in for its caption embeddings


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    """Small synthetic and real shard sets with text sidecars; real samples also have 1-2 image views
    with image sidecars (so the point-image term and its all-gather run in some batches only)."""
    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(0)
    out = {}
    for name, domain, per_class in (("cad", "cad", 8), ("lidar", "lidar", 4)):
        npz = tiny_object_set(root / f"{name}.npz", domain, per_class=per_class, points=(20, 60), seed=len(name))
        for shard in convert_object_set(npz, root / name, max_points=48, shard_size=10):
            if name == "lidar":
                samples = list(ShardSet(shard))
                for i, sample in enumerate(samples):
                    sample.images = [jpeg(i * 3 + v) for v in range(1 + i % 2)]
                write_shard(shard, samples, domain="real")
            reader = ShardReader(shard)
            write_embeddings(shard, KEY, text=rng.normal(size=(reader.num_captions, DIM)),
                             image=rng.normal(size=(reader.num_images, DIM)) if reader.num_images else None,
                             attrs={"tower": "test"})
        out[name] = root / name
    out["root"] = root
    return out


def _command(shards: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["-m", "blendclip_train.cli.train", "--synthetic", str(shards["cad"]), "--real", str(shards["lidar"]),
            "--r-max", "0.5", "--embeddings", KEY, "--epochs", "3", "--iterations", "6", "--batch-size", "6",
            "--checkpoint-every-steps", "2", "--threads", "1", "--quiet", "--seed", "3",
            "--cache-dir", str(shards["root"] / "cache"), "--out", str(out), *extra]


def _torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def _run(argv: list[str]) -> dict:
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _interrupt(argv: list[str], out: Path, sig: int, after_step: int, pause: float = 0.0) -> tuple[int, str]:
    """Start a run and send ``sig`` to its whole process group ``pause`` s after a checkpoint past
    ``after_step`` exists; returns (exit status, stdout)."""
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(int(p.stem.rsplit("_", 1)[1]) >= after_step for p in list_train_states(out)):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(pause)
    os.killpg(process.pid, sig)
    stdout, _ = process.communicate(timeout=120)
    return process.returncode, stdout


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "last.safetensors")


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


@pytest.fixture(scope="module")
def reference(shards) -> Path:
    out = shards["root"] / "reference"
    summary = _run([sys.executable, *_command(shards, out)])
    assert summary["epochs"] == 3 and not summary["interrupted"]
    cache = shards["root"] / "cache"
    assert not cache.exists() or not any(cache.iterdir())  # sidecars: no caption was ever encoded
    return out


def test_sigkill_then_resume_auto_is_bit_identical(shards, reference):
    out = shards["root"] / "killed"
    status, _ = _interrupt([sys.executable, *_command(shards, out)], out, signal.SIGKILL,
                           after_step=random.choice([2, 4, 6, 8, 10, 12]), pause=random.uniform(0.0, 0.1))
    assert status == -signal.SIGKILL
    before = list_train_states(out)
    summary = _run([sys.executable, *_command(shards, out, "--resume", "auto")])
    assert summary["epochs"] == 3
    expected, got = _weights(reference), _weights(out)
    assert all(torch.equal(expected[k], got[k]) for k in expected), _max_difference(expected, got)
    assert json.loads((out / "history.json").read_text())["iteration_losses"] == \
        json.loads((reference / "history.json").read_text())["iteration_losses"]
    assert len(list_train_states(out)) == 3 and before  # keeps the last 3
    steps = [int(row.split(",")[2]) for row in (out / "log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps)  # what the killed run logged after its checkpoint was dropped


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(shards, reference):
    """SIGTERM to every process (as a cluster sends it), DataLoader workers included."""
    out = shards["root"] / "terminated"
    status, stdout = _interrupt([sys.executable, *_command(shards, out, "--workers", "2")], out, signal.SIGTERM,
                                after_step=3)
    assert status == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["interrupted"] and Path(summary["train_state"]).is_file()
    state = load_train_state(summary["train_state"])
    # 6 iterations per epoch; a SIGTERM at an epoch's last step leaves (epoch e, iteration 6)
    assert state["step"] >= 4 and 0 <= state["iteration"] <= 6
    assert state["step"] == 6 * state["epoch"] + state["iteration"]
    assert {"model", "optimizer", "scaler", "schedule", "ranks", "history", "config"} <= state.keys()
    assert {"python", "numpy", "torch", "cuda"} == state["ranks"][0]["rng"].keys()
    _run([sys.executable, *_command(shards, out, "--resume", summary["train_state"], "--workers", "1")])
    expected, got = _weights(reference), _weights(out)
    assert all(torch.equal(expected[k], got[k]) for k in expected)  # worker counts change nothing


def test_two_gloo_ranks_agree_and_resume_within_1e6(shards, reference):
    out = shards["root"] / "ddp"
    summary = _run([*_torchrun(2), *_command(shards, out), "--device", "cpu"])
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # both ranks end with identical weights
    state = load_train_state(list_train_states(out)[-1])
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    single = _weights(reference)
    assert _max_difference(single, _weights(out)) > 0  # a global batch of 12 is another run

    resumed = shards["root"] / "ddp_killed"
    status, _ = _interrupt([*_torchrun(2), *_command(shards, resumed), "--device", "cpu"], resumed, signal.SIGKILL,
                           after_step=random.choice([4, 8, 12]), pause=random.uniform(0.0, 0.1))
    assert status == -signal.SIGKILL
    summary = _run([*_torchrun(2), *_command(shards, resumed, "--resume", "auto"), "--device", "cpu"])
    assert summary["rank_weight_digests"][0] == summary["rank_weight_digests"][1]
    difference = _max_difference(_weights(out), _weights(resumed))
    print(f"2-rank kill/resume: max |w - w_ref| = {difference:.3g}")
    assert difference <= 1e-6
