"""Prompt sets, text towers and the cached text-embedding bank (no ROS)."""
