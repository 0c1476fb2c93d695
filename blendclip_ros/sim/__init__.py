"""Simulated driving domains: procedural objects, LiDAR simulator, scenes (no ROS)."""
