"""Two processes over real DDS: the real nuScenes sweep and its 69 boxes arrive unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blendclip_ros.geometry.boxes import Boxes

from .conftest import NUSCENES_INFO

PEERS = Path(__file__).parent / "ros_peers"
pytestmark = pytest.mark.ros


def test_sweep_and_boxes_cross_processes(nuscenes_frame, ros_env, tmp_path):
    out = tmp_path / "received.npz"
    receiver = subprocess.Popen([sys.executable, str(PEERS / "sweep_receiver.py"), str(out), "--timeout", "60"],
                                env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publisher = subprocess.Popen([sys.executable, str(PEERS / "sweep_publisher.py"), str(NUSCENES_INFO)],
                                 env=ros_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = receiver.communicate(timeout=90)
    finally:
        publisher.terminate()
        _, publisher_err = publisher.communicate(timeout=20)
    assert receiver.returncode == 0, err + publisher_err
    got = np.load(out)
    assert got["points"].shape == (34688, 5)
    np.testing.assert_array_equal(got["points"], nuscenes_frame.points)
    boxes = Boxes.from_mmdet3d(nuscenes_frame.boxes)
    assert len(got["ids"]) == 69
    assert list(got["ids"]) == [f"box{i}" for i in range(69)]
    np.testing.assert_array_equal(got["centers"], boxes.centers)
    np.testing.assert_array_equal(got["sizes"], boxes.sizes)
    np.testing.assert_allclose(got["quaternions"], boxes.quaternions, atol=1e-12)
    assert list(got["frame_id"]) == ["lidar_top", "lidar_top"]
    sec, nsec = divmod(nuscenes_frame.timestamp_us * 1000, 10**9)
    assert got["stamps"].tolist() == [[sec, nsec], [sec, nsec]]
