#!/usr/bin/env python3
"""Text-bank load time: cold (build the tower, encode every prompt) vs warm (on-disk cache hit).

Towers: the bundled MiniLM and a random-init open_clip ViT-B-16 text tower (same cost as the
real DataComp weights). Prompt sets: nuScenes (10 classes x 1 template, label names only as the release) and
ModelNet40 with the 64-template ensemble (2,560 prompts). The baseline of each ratio is the
cold load measured in the same run; a fresh tower object is built for every measurement, and
the warm run checks that its network was never built. Library imports happen before timing.

    python benchmarks/bench_text.py [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import open_clip  # noqa: E402,F401  (imported before timing)
import torch  # noqa: E402
import transformers  # noqa: E402,F401

from blendclip_ros.text.bank import build_text_bank  # noqa: E402
from blendclip_ros.text.prompts import PromptSet, load_prompt_set  # noqa: E402
from blendclip_ros.text.towers import MiniLMTextTower, OpenClipTextTower  # noqa: E402

TOWERS = {
    "minilm": lambda: MiniLMTextTower(),
    "open_clip ViT-B-16 (random init)": lambda: OpenClipTextTower("ViT-B-16", weights=None),
}


def prompt_sets(quick: bool) -> list[PromptSet]:
    nuscenes, modelnet = load_prompt_set("nuscenes"), load_prompt_set("modelnet40_64")
    if quick:  # 8 classes x 64 templates keeps the cold open_clip run short
        modelnet = PromptSet("modelnet40_64[:8]", modelnet.classes[:8], modelnet.templates)
    return [nuscenes, modelnet]


def timed(factory, prompt_set: PromptSet, cache: Path) -> tuple[float, bool]:
    start = time.perf_counter()
    tower = factory()
    bank = build_text_bank(tower, prompt_set, cache_dir=cache)
    elapsed = time.perf_counter() - start
    assert bank.embeddings.shape[0] == len(prompt_set.classes)
    return elapsed, tower.is_loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller ModelNet40 set, one repeat")
    parser.add_argument("--repeat", type=int, default=3, help="warm loads per case (median reported)")
    args = parser.parse_args()
    repeat = 1 if args.quick else max(1, args.repeat)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'tower':34s} {'prompt set':18s} {'prompts':>7s} {'cold s':>8s} {'warm ms':>8s} {'cold/warm':>9s}")
    for tower_name, factory in TOWERS.items():
        for ps in prompt_sets(args.quick):
            with tempfile.TemporaryDirectory() as tmp:
                cache = Path(tmp)
                cold, cold_loaded = timed(factory, ps, cache)
                warm_runs = [timed(factory, ps, cache) for _ in range(repeat)]
            assert cold_loaded and not any(loaded for _, loaded in warm_runs), "warm start built the tower"
            warm = statistics.median(t for t, _ in warm_runs)
            n_prompts = sum(len(t) for t in ps.texts())
            print(f"{tower_name:34s} {ps.name:18s} {n_prompts:7d} {cold:8.2f} {warm * 1e3:8.1f} "
                  f"{cold / warm:8.0f}x")


if __name__ == "__main__":
    main()
