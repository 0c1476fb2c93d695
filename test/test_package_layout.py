"""The runtime package stands alone: it never imports the trainer, the simulator or their extras."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import blendclip_ros

REPO = Path(__file__).resolve().parents[1]
# What a vehicle install lacks: the sibling packages and the training/simulation extras.
BLOCKED = ("blendclip_train", "blendclip_sim", "nuscenes", "truckscenes", "matplotlib")

BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError('blocked for this test: ' + name)
        return None
sys.meta_path.insert(0, Block())
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
print('imported', len(sys.argv) - 1)
"""


def runtime_modules() -> list[str]:
    prefix = blendclip_ros.__name__ + "."
    return [info.name for info in pkgutil.walk_packages(blendclip_ros.__path__, prefix)]


def test_runtime_imports_without_training_or_simulation() -> None:
    modules = runtime_modules()
    assert "blendclip_ros.pipeline" in modules and "blendclip_ros.ros.classifier_node" in modules
    result = subprocess.run([sys.executable, "-c", BLOCKER, *modules], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"imported {len(modules)}" in result.stdout


def test_blocker_really_blocks() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKER, "blendclip_train.trainer"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "blocked for this test" in result.stderr
