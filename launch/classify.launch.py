"""Launch the BlendCLIP classifier node (ROS 2 Humble and later).

Example:
  ros2 launch blendclip_ros classify.launch.py device:=cuda \
      prompts_file:=/path/prompts.yaml points_topic:=/lidar/points detections_topic:=/detections
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

try:  # Iron and later: compare substituted strings (no Python evaluation: any path works)
    from launch.substitutions import EqualsSubstitution

    def _is_empty(name: str) -> IfCondition:
        return IfCondition(EqualsSubstitution(LaunchConfiguration(name), ""))

    def _is_given(name: str) -> UnlessCondition:
        return UnlessCondition(EqualsSubstitution(LaunchConfiguration(name), ""))
except ImportError:  # Humble: the conditions that Iron deprecates in favour of the above
    from launch.conditions import LaunchConfigurationEquals, LaunchConfigurationNotEquals

    def _is_empty(name: str) -> LaunchConfigurationEquals:
        return LaunchConfigurationEquals(name, "")

    def _is_given(name: str) -> LaunchConfigurationNotEquals:
        return LaunchConfigurationNotEquals(name, "")


def generate_launch_description() -> LaunchDescription:
    default_params = str(Path(get_package_share_directory("blendclip_ros")) / "config" / "classify.yaml")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params, description="Parameter YAML."),
        DeclareLaunchArgument("checkpoint", default_value="", description="Checkpoint file (model.checkpoint)."),
        DeclareLaunchArgument("prompts_file", default_value="", description="Prompt-set YAML (prompts.file)."),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda, cuda:N or auto."),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace."),
        DeclareLaunchArgument("points_topic", default_value="points", description="Input PointCloud2 topic."),
        DeclareLaunchArgument("detections_topic", default_value="detections",
                              description="Input Detection3DArray topic."),
        # launch's own setting (ExecuteProcess reads it), 5 s upstream: a torch process needs a few
        # seconds to exit after its clean shutdown, so the default here is longer.
        DeclareLaunchArgument("sigterm_timeout", default_value="20",
                              description="Seconds from SIGINT to SIGTERM when launch stops the node."),
    ]
    overrides = {
        "model.device": LaunchConfiguration("device"),
        "model.checkpoint": LaunchConfiguration("checkpoint"),
    }
    prompts = {"prompts.file": LaunchConfiguration("prompts_file")}

    def classifier(extra: dict, condition) -> Node:
        return Node(
            package="blendclip_ros",
            executable="blendclip-classifier",
            name="blendclip_classifier",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), {**overrides, **extra}],
            remappings=[("points", LaunchConfiguration("points_topic")),
                        ("detections", LaunchConfiguration("detections_topic"))],
            output="screen",
            emulate_tty=True,
            condition=condition,
        )

    # prompts.file from the command line only overrides the params file when it is given.
    return LaunchDescription([*arguments, classifier(prompts, _is_given("prompts_file")),
                              classifier({}, _is_empty("prompts_file"))])
