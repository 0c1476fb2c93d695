"""classify.launch.py as users run it: the installed launch file, under launch_pytest and `ros2 launch`.

Needs the ROS 2 launch stack (``make setup`` installs it from ../shared/ros2-launch; a ROS 2
install from apt has it) and the package visible in an ament prefix (the setup's overlay or a
colcon install). Otherwise the module skips and says which is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

NO_LAUNCH = ("ROS 2 launch is not installed: `make setup` installs it from ../shared/ros2-launch "
             "(absent here), or source a ROS 2 installation")
launch_pytest = pytest.importorskip("launch_pytest", reason=NO_LAUNCH)
launch_ros = pytest.importorskip("launch_ros", reason=NO_LAUNCH)
ament_index = pytest.importorskip("ament_index_python.packages", reason=NO_LAUNCH)

import launch  # noqa: E402
from launch.actions import RegisterEventHandler, SetLaunchConfiguration  # noqa: E402
from launch.event_handlers import OnProcessExit, OnProcessIO  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "data" / "checkpoints" / "blendclip_tiny_sim.safetensors"
PROMPTS = REPO / "data" / "checkpoints" / "sim_classes.yaml"
DEMO_BAG = REPO / "data" / "demo"
NODE = "blendclip_classifier"


def _share() -> Path | None:
    try:
        return Path(ament_index.get_package_share_directory("blendclip_ros"))
    except ament_index.PackageNotFoundError:
        return None


SHARE = _share()
pytestmark = [pytest.mark.ros, pytest.mark.slow,
              pytest.mark.skipif(SHARE is None, reason="blendclip_ros is in no ament prefix (run `make setup`, "
                                                       "or colcon build and source install/setup.bash)")]


@pytest.fixture
def quoted_prompts(tmp_path) -> Path:
    """The bundled prompt set under a path with a quote and a space (broke the old PythonExpression)."""
    folder = tmp_path / "it's the prompts"
    folder.mkdir()
    return Path(shutil.copy(PROMPTS, folder / "sim classes.yaml"))


def _installed_launch_description() -> launch.LaunchDescription:
    """classify.launch.py from the install's share directory (what `ros2 launch` loads)."""
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    return PythonLaunchDescriptionSource(str(SHARE / "launch" / "classify.launch.py")).get_launch_description(
        launch.LaunchContext())


# ----------------------------------------------------------------------------- launch_pytest


class Recorded:
    """Output and exit codes of the launched processes (no cached_output needed)."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.returncodes: list[int] = []


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@launch_pytest.fixture
def launch_description(quoted_prompts, recorded, ros_env):
    arguments = {"namespace": "lt", "points_topic": "/lt/cloud", "detections_topic": "/lt/boxes",
                 "prompts_file": str(quoted_prompts), "checkpoint": str(CHECKPOINT)}
    return launch.LaunchDescription([
        *[SetLaunchConfiguration(name, value) for name, value in arguments.items()],
        *_installed_launch_description().entities,
        RegisterEventHandler(OnProcessIO(on_stdout=lambda e: recorded.text.append(e.text.decode()),
                                         on_stderr=lambda e: recorded.text.append(e.text.decode()))),
        RegisterEventHandler(OnProcessExit(on_exit=lambda e, _: recorded.returncodes.append(e.returncode))),
        launch_pytest.actions.ReadyToTest(),
    ])


def _parameters(client, node: str, names: list[str], timeout: float) -> dict:
    from rclpy.parameter import parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient

    from .ros_harness import spin_until

    parameters = AsyncParameterClient(client, node)
    assert parameters.wait_for_services(timeout_sec=timeout), f"{node}: no parameter services"
    future = parameters.get_parameters(names)
    assert spin_until(client, future.done, 30.0)
    return dict(zip(names, (parameter_value_to_python(v) for v in future.result().values)))


@pytest.mark.launch(fixture=launch_description)
def test_launched_node_has_the_arguments_and_labels_a_replayed_bag(client, ros_env, quoted_prompts, recorded):
    from vision_msgs.msg import Detection3DArray

    from .ros_harness import spin_until

    output_topic = f"/lt/{NODE}/detections"
    outputs: list = []
    client.create_subscription(Detection3DArray, output_topic, outputs.append, 50)
    assert spin_until(client, lambda: client.count_publishers(output_topic) > 0, 180), "".join(recorded.text)

    params = _parameters(client, f"/lt/{NODE}", ["prompts.file", "model.checkpoint", "model.device"], 30)
    assert params == {"prompts.file": str(quoted_prompts), "model.checkpoint": str(CHECKPOINT),
                      "model.device": "cpu"}

    def subscribed(topic: str) -> set[tuple[str, str, str]]:
        return {(i.node_namespace, i.node_name, i.topic_type) for i in client.get_subscriptions_info_by_topic(topic)}

    expected = {"/lt/cloud": ("/lt", NODE, "sensor_msgs/msg/PointCloud2"),
                "/lt/boxes": ("/lt", NODE, "vision_msgs/msg/Detection3DArray")}
    assert spin_until(client, lambda: all(want in subscribed(t) for t, want in expected.items()), 60), \
        {t: subscribed(t) for t in expected}

    replay = subprocess.run([sys.executable, "-m", "blendclip_ros.ros.replay", str(DEMO_BAG),
                             "--remap", "/lidar/points:=/lt/cloud", "--remap", "/detections:=/lt/boxes",
                             "--wait-for-subscribers", "1", "--start-delay", "0.5", "--rate", "0.25"],
                            env=ros_env, capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    # 6 frames at a quarter of their rate; the node drops a frame it cannot take (a loaded machine)
    spin_until(client, lambda: len(outputs) >= 6, 10)
    assert len(outputs) >= 3, f"{len(outputs)} outputs"
    classes = {"car", "truck", "bus", "trailer", "construction vehicle", "other vehicle", "motorcycle", "bicycle",
               "pedestrian", "animal", "traffic cone", "barrier", "traffic sign", "unknown"}
    labels = [d.results[0].hypothesis.class_id for out in outputs for d in out.detections]
    assert len(labels) >= 3 * 30 and set(labels) <= classes and len(set(labels) - {"unknown"}) >= 3
    yield
    # after launch's shutdown (it sends SIGINT): one clean exit, no traceback
    assert recorded.returncodes == [0], "".join(recorded.text)
    assert "Traceback" not in "".join(recorded.text)


# ----------------------------------------------------------------------------- the ros2 CLI


def _ros2(ros_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    ros2 = shutil.which("ros2", path=ros_env["PATH"])
    if ros2 is None:
        pytest.skip("the ros2 command is not installed")
    return subprocess.run([ros2, *args], env=ros_env, capture_output=True, text=True, timeout=120)


def test_ros2_pkg_finds_the_package_and_its_executables(ros_env):
    prefix = _ros2(ros_env, "pkg", "prefix", "blendclip_ros")
    assert prefix.returncode == 0 and Path(prefix.stdout.strip()) == SHARE.parents[1], prefix.stderr
    executables = _ros2(ros_env, "pkg", "executables", "blendclip_ros").stdout.split("\n")
    assert "blendclip_ros blendclip-classifier" in executables and "blendclip_ros blendclip-replay" in executables
    assert (SHARE / "config" / "classify.yaml").is_file() and (SHARE / "package.xml").is_file()


@pytest.mark.parametrize("interrupts", [1, 2], ids=["sigint", "double-sigint"])
def test_ros2_launch_starts_the_node_and_stops_cleanly_on_ctrl_c(ros_env, quoted_prompts, tmp_path, interrupts):
    """Ctrl-C in a terminal: SIGINT to the whole process group (launch and node), once or twice."""
    ros2 = shutil.which("ros2", path=ros_env["PATH"])
    if ros2 is None:
        pytest.skip("the ros2 command is not installed")
    log = tmp_path / "launch.log"
    with log.open("w") as out:
        process = subprocess.Popen([ros2, "launch", "blendclip_ros", "classify.launch.py", "namespace:=cli",
                                    f"prompts_file:={quoted_prompts}", f"checkpoint:={CHECKPOINT}"],
                                   env=ros_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "configured:" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "configured:" in log.read_text(), log.read_text()
        # The argument reached the node (ros2cli's param verb, no daemon); an answer also means it spins.
        deadline = time.monotonic() + 60  # "Node not found" until discovery has seen it
        while (got := _ros2(ros_env, "param", "get", f"/cli/{NODE}", "prompts.file", "--no-daemon")).returncode \
                and time.monotonic() < deadline:
            time.sleep(1.0)
        assert got.stdout.strip() == f"String value is: {quoted_prompts}", got.stdout + got.stderr
        for _ in range(interrupts):
            os.killpg(process.pid, signal.SIGINT)
            time.sleep(0.05)
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = log.read_text()
    assert returncode == 0, text
    assert "Traceback" not in text and "process has finished cleanly" in text, text
