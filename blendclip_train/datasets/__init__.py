"""Readers of published 3D datasets: synthetic training pools (into shards) and evaluation benchmarks."""
