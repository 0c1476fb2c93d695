"""blendclip_ros: open-vocabulary 3D object classification (BlendCLIP) for ROS 2.

The core (geometry, model, text, classifier, sim, training) imports without rclpy;
the ROS layer lives in :mod:`blendclip_ros.ros`.
"""

__version__ = "0.1.0"
