"""Readers for dataset sample formats (no ROS)."""
