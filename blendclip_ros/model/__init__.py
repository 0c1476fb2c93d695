"""PointBERT point encoder with dynamic grouping, configs and checkpoints (no ROS)."""
