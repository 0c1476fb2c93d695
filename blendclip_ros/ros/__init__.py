"""The rclpy layer: environment, message conversions, the classifier node, bag replay."""
