"""Simulated driving domains: procedural objects, LiDAR simulator, scenes (no ROS).

See docs/simulation.md: ``objects`` (meshes per class), ``surface`` (CAD sampling), ``lidar`` and
``raycast`` (the simulator), ``scene``/``road`` (streets), ``nuscenes_writer`` and ``bag_export``
(output formats), ``object_sets`` (the experiment's data) and ``pictures``.
"""
