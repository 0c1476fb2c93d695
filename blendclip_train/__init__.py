"""Triplet format, mining, curriculum pretraining and zero-shot evaluation (no ROS)."""
