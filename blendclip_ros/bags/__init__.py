"""rosbag2 (MCAP, sqlite3) writing and reading through ``rosbags``, without rclpy."""
