"""Small rclpy programs that tests start as separate processes."""
