"""Every benchmark script still runs (``--quick``) and prints its figures against its baseline."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import NUSCENES_INFO

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
GPU_CHECK = ("gpu_check",)  # needs CUDA; tested below without it
BENCHMARKS = sorted(b for b in BENCH_DIR.glob("*.py") if b.stem not in GPU_CHECK)
# What a benchmark needs beyond the runtime: the real sweep from ../shared, optional packages.
NEEDS_SWEEP = {"bench_node_latency", "soak_node"}
NEEDS_MODULES = {"bench_crop": ("nuscenes",), "bench_text": ("open_clip",)}
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", BENCHMARKS, ids=[b.stem for b in BENCHMARKS])
def test_benchmark_runs_quick(script, ros_env, request):
    if script.stem in NEEDS_SWEEP:
        request.getfixturevalue("shared_data")
        if not NUSCENES_INFO.is_file():
            pytest.skip(f"nuScenes sample not found at {NUSCENES_INFO}")
    for module in NEEDS_MODULES.get(script.stem, ()):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{script.name} needs the optional package {module!r}")
    result = subprocess.run([sys.executable, str(script), "--quick"], env=ros_env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    numbers = sum(ch.isdigit() for ch in result.stdout)
    assert numbers > 20, result.stdout  # it printed measurements, not just a banner


def test_gpu_check_says_no_cuda_and_exits_0_without_a_gpu():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(BENCH_DIR / "gpu_check.sh")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "gpu_check: no CUDA (torch.cuda.is_available() is False)"
