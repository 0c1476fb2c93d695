"""Every benchmark script still runs (``--quick``) and prints its figures against its baseline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", BENCHMARKS, ids=[b.stem for b in BENCHMARKS])
def test_benchmark_runs_quick(script, ros_env):
    result = subprocess.run([sys.executable, str(script), "--quick"], env=ros_env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    numbers = sum(ch.isdigit() for ch in result.stdout)
    assert numbers > 20, result.stdout  # it printed measurements, not just a banner
