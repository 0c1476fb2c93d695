"""Boxes, points-in-boxes cropping, preprocessing and point/box file readers (no ROS)."""
