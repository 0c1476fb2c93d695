# Single entry point. Every target sets up .venv first (a no-op when nothing changed).
SHELL := /bin/bash
RUN := source scripts/env.sh &&

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup_env.sh

## The main job on the embedded default: replay the bundled simulated bag through the classifier node.
demo: setup
	@$(RUN) python -m blendclip_ros.demo

## The whole test suite (ROS 2 tests use loopback DDS and a domain id of their own).
test: setup
	@$(RUN) python -m pytest

## All benchmarks (prints figures and ratios against baselines measured in the same run).
bench: setup
	@$(RUN) for b in benchmarks/bench_*.py; do echo "== $$b"; python $$b || exit 1; done

clean:
	rm -rf build .venv .pytest_cache .hypothesis
