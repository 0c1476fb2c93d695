"""classify.launch.py under launch_pytest: runs where ROS 2 launch is installed, skipped elsewhere."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip("launch_pytest", reason="ROS 2 launch is not installed (PyPI wheels)")
launch_ros = pytest.importorskip("launch_ros")
ament_index = pytest.importorskip("ament_index_python.packages")

import launch  # noqa: E402
from launch_pytest.tools import process as process_tools  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "classify.launch.py"


def _package_installed() -> bool:
    try:
        ament_index.get_package_share_directory("blendclip_ros")
    except ament_index.PackageNotFoundError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _package_installed(),
                                reason="blendclip_ros is not installed in an ament prefix (colcon build)")


@pytest.fixture
def classify_launch() -> launch.LaunchDescription:
    spec = importlib.util.spec_from_file_location("classify_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


@pytest.fixture
def classifier_action(classify_launch):
    nodes = [e for e in classify_launch.entities if isinstance(e, launch_ros.actions.Node)]
    return nodes[-1]  # the node used when no prompts_file is given


@launch_pytest.fixture
def launch_description(classify_launch):
    return launch.LaunchDescription([*classify_launch.entities, launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=launch_description)
async def test_launch_file_starts_a_configured_classifier(classifier_action, launch_context):
    await process_tools.wait_for_stderr(launch_context, classifier_action,
                                        lambda output: "configured:" in output, timeout=120)
