"""The node accumulating sweeps over real DDS: odometry poses, a static box gaining points, onnxruntime.

A node process with ``accumulate.sweeps: 3`` and ``model.backend: onnxruntime`` is fed a static
box seen from a moving ego (1.5 m and 3 degrees of yaw per sweep) with 20 points per sweep and
``min_points: 50``: one sweep leaves the box "unknown", three sweeps moved through the odometry
make 60 points that land in the box, and the node's ranking equals the torch pipeline's on the
same merged cloud. Without odometry for the current stamp the node falls back to one sweep.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs.msg")
nav_msgs = pytest.importorskip("nav_msgs.msg")
pytest.importorskip("onnxruntime")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import Detection3DArray  # noqa: E402

from blendclip_ros.geometry.boxes import Boxes  # noqa: E402
from blendclip_ros.pipeline import ObjectClassifier  # noqa: E402
from blendclip_ros.ros.accumulate import invert, pose_matrix  # noqa: E402
from blendclip_ros.ros.conversions import array_to_pointcloud2, arrays_to_detections  # noqa: E402

from .ros_harness import spin_until, start_classifier, stop  # noqa: E402

pytestmark = pytest.mark.ros
NODE = "blendclip_accumulating"
CENTRE, SIZE = np.array([12.0, 3.0, 0.5]), np.array([4.0, 2.0, 1.5])
PER_SWEEP, MIN_POINTS = 20, 50


def ego_pose(k: int) -> np.ndarray:
    return pose_matrix((1.5 * k, 0.2 * k, 0.0), Rotation.from_euler("z", np.radians(3.0 * k)).as_quat())


def in_sensor(points_world: np.ndarray, k: int) -> np.ndarray:
    sensor_from_world = invert(ego_pose(k))
    return (points_world @ sensor_from_world[:3, :3].T + sensor_from_world[:3, 3]).astype(np.float32)


def header(k: int) -> Header:
    out = Header(frame_id="lidar_top")
    out.stamp.sec, out.stamp.nanosec = 100 + k // 10, (k % 10) * 100_000_000
    return out


@pytest.fixture(scope="module")
def node(ros_env, tmp_path_factory):
    env = {**ros_env, "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))}
    process = start_classifier(env, "-p", "accumulate.sweeps:=3", "-p", "accumulate.fixed_frame:=odom",
                               "-p", f"classify.min_points:={MIN_POINTS}", "-p", "model.backend:=onnxruntime",
                               "-p", "diagnostics_period:=0.2", name=NODE)
    yield process
    print(stop(process))


class Feed:
    def __init__(self, client):
        self.client = client
        self.clouds = client.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
        self.detections = client.create_publisher(Detection3DArray, "detections", 10)
        self.odometry = client.create_publisher(nav_msgs.Odometry, "odom", 50)
        self.outputs: list[Detection3DArray] = []
        self.diagnostics: list[DiagnosticArray] = []
        client.create_subscription(Detection3DArray, f"/{NODE}/detections", self.outputs.append, 10)
        client.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def box(self, k: int) -> Boxes:
        return Boxes.from_quaternions(in_sensor(CENTRE[None], k).astype(float), SIZE[None],
                                      Rotation.from_matrix(invert(ego_pose(k))[:3, :3]).as_quat()[None])

    def publish_odometry(self, k: int) -> None:
        pose = ego_pose(k)
        msg = nav_msgs.Odometry(header=header(k), child_frame_id="lidar_top")
        msg.header.frame_id = "odom"
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        p.x, p.y, p.z = map(float, pose[:3, 3])
        q.x, q.y, q.z, q.w = map(float, Rotation.from_matrix(pose[:3, :3]).as_quat())
        self.odometry.publish(msg)

    def send(self, stamped: Header, points: np.ndarray, box: Boxes) -> None:
        self.clouds.publish(array_to_pointcloud2(points, stamped, ("x", "y", "z")))
        self.detections.publish(arrays_to_detections(stamped, box.centers, box.sizes, box.quaternions, ["box"]))

    def publish_frame(self, k: int, points: np.ndarray, process) -> list[str]:
        """Send sweep k and return the labels of the node's output for it."""
        start = len(self.outputs)
        self.send(header(k), points, self.box(k))
        assert spin_until(self.client, lambda: len(self.outputs) > start, 60, process), stop(process)
        return [r.hypothesis.class_id for r in self.outputs[-1].detections[0].results]

    def sweeps_without_pose(self) -> int:
        values = [int(kv.value) for d in self.diagnostics for s in d.status for kv in s.values
                  if kv.key == "accumulate_sweeps_without_pose"]
        return values[-1] if values else 0


def test_static_box_gains_points_through_odometry_and_ranks_like_torch(client, node):
    feed = Feed(client)
    assert spin_until(client, lambda: feed.detections.get_subscription_count() > 0
                      and feed.odometry.get_subscription_count() > 0, 90, node), stop(node)
    rng = np.random.default_rng(0)
    world = [CENTRE + rng.uniform(-0.45, 0.45, (PER_SWEEP, 3)) * SIZE for _ in range(4)]
    clouds = [in_sensor(w, k) for k, w in enumerate(world)]
    for _ in range(60):  # warm-up until the node answers (stamp 0: no pose, never merged)
        for k in range(3):  # and until then the poses (repeated stamps replace each other)
            feed.publish_odometry(k)
        if spin_until(client, lambda: bool(feed.outputs), 1.0, node):
            break
        feed.send(Header(frame_id="lidar_top"), clouds[0], feed.box(0))
    assert feed.outputs, stop(node)
    labels = [feed.publish_frame(k, clouds[k], node) for k in range(3)]
    assert labels[0] == ["unknown"] and labels[1] == ["unknown"]  # 20, then 40 points < min_points
    merged_result = feed.outputs[-1].detections[0].results
    assert len(merged_result) == 3 and "unknown" not in labels[2]

    # The same merged cloud (current sweep first, then the older ones) through torch in this process.
    merged = np.concatenate([clouds[2], in_sensor(world[0], 2), in_sensor(world[1], 2)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = ObjectClassifier.from_config(encoder="tiny", min_points=MIN_POINTS)
    (result,) = classifier.classify(merged, feed.box(2))
    assert result.num_points == 3 * PER_SWEEP
    assert labels[2] == [label for label, _ in result.prediction.top_k]
    np.testing.assert_allclose([r.hypothesis.score for r in merged_result],
                               [score for _, score in result.prediction.top_k], atol=1e-3)

    # No odometry at the next stamp: the node keeps going on the current sweep alone and says why.
    spin_until(client, lambda: False, 0.5)
    before = feed.sweeps_without_pose()
    assert feed.publish_frame(3, clouds[3], node) == ["unknown"]
    assert spin_until(client, lambda: feed.sweeps_without_pose() > before, 10, node)
