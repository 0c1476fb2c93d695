"""blendclip_ros: open-vocabulary 3D object classification (BlendCLIP) for ROS 2.

The runtime: the core (geometry, model, text, classifier, pipeline) imports without rclpy; the ROS
layer lives in :mod:`blendclip_ros.ros`. The simulator (``blendclip_sim``) and the trainer
(``blendclip_train``) are sibling packages that import this one, never the other way round.
"""

__version__ = "0.1.0"
