"""Console scripts that need no ROS."""
