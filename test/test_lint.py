"""The repository passes its own lint rules (ruff.toml): style drift fails CI, not review."""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec

import pytest

from .conftest import REPO


@pytest.mark.skipif(find_spec("ruff") is None, reason="ruff not installed (it is in the project's lock)")
def test_ruff_check_passes():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
