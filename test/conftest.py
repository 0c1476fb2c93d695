"""Shared fixtures: the real sample data in ../shared/data (tests skip cleanly without it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BLENDCLIP_SHARED_DATA", REPO.parent / "shared" / "data"))
NUSCENES_INFO = SHARED_DATA / "mmdet3d/demo/data/nuscenes/n015-2018-07-24-11-22-45+0800.pkl"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared sample-data folder; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def nuscenes_frame(shared_data):
    """The real nuScenes LIDAR_TOP sweep (34,688 points) with its 69 annotated boxes."""
    from blendclip_ros.data.mmdet3d_info import load_mmdet3d_frame

    if not NUSCENES_INFO.is_file():
        pytest.skip(f"nuScenes sample not found at {NUSCENES_INFO}")
    return load_mmdet3d_frame(NUSCENES_INFO)


# ----------------------------------------------------------------------------- ROS 2 tests
# Loopback-only discovery and a domain id of this test run's own, for in-process nodes and
# for every subprocess started through `ros_env`.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = os.environ.get("BLENDCLIP_TEST_DOMAIN_ID", str(os.getpid() % 100 + 1))
from blendclip_ros.environment import apply_ros_environment, ros_environment  # noqa: E402

apply_ros_environment()


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """Environment for ROS 2 subprocesses of this test run (loopback, own domain id)."""
    pytest.importorskip("rclpy")
    pytest.importorskip("vision_msgs.msg")
    env = ros_environment()
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


@pytest.fixture(scope="module")
def client(request, ros_env):
    """An in-process rclpy node for one test module, with its own init and shutdown."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node(f"{request.module.__name__.rsplit('.', 1)[-1]}_client")
    yield node
    node.destroy_node()
    rclpy.shutdown()
