"""The classifier node as a separate process over real DDS, fed the real nuScenes sweep."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import yaml

from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.crop import points_in_boxes
from blendclip_ros.ros.node_parameters import SPECS, markdown_table, yaml_document

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs.msg")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import Detection3DArray, LabelInfo  # noqa: E402

from blendclip_ros.ros.conversions import array_to_pointcloud2, arrays_to_detections  # noqa: E402

from .conftest import REPO  # noqa: E402
from .ros_harness import NODE_NAME, set_parameters, spin_until, start_classifier, stop  # noqa: E402

pytestmark = pytest.mark.ros
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
NUSCENES = ["barrier", "bicycle", "bus", "car", "construction vehicle", "motorcycle", "pedestrian",
            "traffic cone", "trailer", "truck"]


def test_shipped_parameter_file_and_readme_table_are_generated_from_the_specs():
    assert (REPO / "config" / "classify.yaml").read_text() == yaml_document()
    assert markdown_table() in (REPO / "README.md").read_text()
    params = yaml.safe_load((REPO / "config" / "classify.yaml").read_text())["/**"]["ros__parameters"]

    def lookup(name):
        value = params
        for part in name.split("."):
            value = value[part]
        return value

    for spec in SPECS:
        assert lookup(spec.name) == spec.default, spec.name


@pytest.fixture(scope="module")
def classifier(ros_env):
    process = start_classifier(ros_env, "-p", "classify.min_points:=3", "-p", "publish_markers:=true")
    yield process
    output = stop(process)
    print(output)


class Feed:
    """Publishes frames of the real sweep and collects the node's outputs."""

    def __init__(self, node, frame):
        self.node, self.frame = node, frame
        self.boxes = Boxes.from_mmdet3d(frame.boxes)
        self.ids = [f"{frame.token}_{i}" for i in range(len(self.boxes))]
        self.cloud_pub = node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
        self.det_pub = node.create_publisher(Detection3DArray, "detections", 10)
        self.outputs: list[Detection3DArray] = []
        node.create_subscription(Detection3DArray, f"/{NODE_NAME}/detections", self.outputs.append, 10)

    def header(self, index: int) -> Header:
        header = Header(frame_id="lidar_top")
        header.stamp.sec, header.stamp.nanosec = 1_000 + index, 5_000
        return header

    def publish(self, index: int) -> None:
        header = self.header(index)
        self.cloud_pub.publish(array_to_pointcloud2(self.frame.points, header))
        self.det_pub.publish(arrays_to_detections(header, self.boxes.centers, self.boxes.sizes,
                                                  self.boxes.quaternions, self.ids))


@pytest.fixture(scope="module")
def feed(client, classifier, nuscenes_frame):
    """A connected feed: a warm-up frame is republished until its output comes back.

    Seeing our subscription count is not enough: the node may still be between configure and
    activate, or may not have matched our publishers yet (discovery is not symmetric).
    """
    feed = Feed(client, nuscenes_frame)
    ready = spin_until(client, lambda: feed.det_pub.get_subscription_count() > 0
                       and feed.cloud_pub.get_subscription_count() > 0, 60, classifier)
    assert ready, f"classifier did not come up: {stop(classifier)}"
    for _ in range(30):
        feed.publish(-1)
        if spin_until(client, lambda: bool(feed.outputs), 2, classifier):
            break
    assert feed.outputs, f"no output for the warm-up frame: {stop(classifier)}"
    return feed


def test_every_frame_gets_one_output_with_all_boxes_labelled(feed, client, classifier, nuscenes_frame):
    start = len(feed.outputs)
    for index in range(3):
        feed.publish(index)
        assert spin_until(client, lambda: len(feed.outputs) >= start + index + 1, 30, classifier)  # noqa: B023
    outputs = feed.outputs[start:]
    assert [o.header.stamp.sec for o in outputs] == [1000, 1001, 1002]
    counts = [len(i) for i in points_in_boxes(nuscenes_frame.points, feed.boxes)]
    for out in outputs:
        assert out.header.frame_id == "lidar_top" and out.header.stamp.nanosec == 5000
        assert [d.id for d in out.detections] == feed.ids
        centers = np.array([[d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.position.z]
                            for d in out.detections])
        sizes = np.array([[d.bbox.size.x, d.bbox.size.y, d.bbox.size.z] for d in out.detections])
        np.testing.assert_array_equal(centers, feed.boxes.centers)
        np.testing.assert_array_equal(sizes, feed.boxes.sizes)
        for det, count in zip(out.detections, counts):
            labels = [r.hypothesis.class_id for r in det.results]
            if count < 3:
                assert labels == ["unknown"]
            else:
                assert len(labels) == 3 and set(labels) <= set(NUSCENES)
                scores = [r.hypothesis.score for r in det.results]
                assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
                assert det.results[0].pose.pose == det.bbox.center


def test_label_info_reaches_a_late_subscriber(feed, client, classifier):
    received: list[LabelInfo] = []
    sub = client.create_subscription(LabelInfo, f"/{NODE_NAME}/label_info", received.append, LATCHED)
    try:
        assert spin_until(client, lambda: bool(received), 20, classifier)
        assert [c.class_name for c in received[-1].class_map] == NUSCENES
        assert [c.class_id for c in received[-1].class_map] == list(range(10))
    finally:
        client.destroy_subscription(sub)


def test_diagnostics_report_rates_latency_and_device(feed, client, classifier):
    received: list[DiagnosticArray] = []
    sub = client.create_subscription(DiagnosticArray, "/diagnostics", received.append, 10)
    try:
        assert spin_until(client, lambda: bool(received), 10, classifier)
        values = {kv.key: kv.value for kv in received[-1].status[0].values}
        assert values["device"] == "cpu"
        assert int(values["published"]) >= 3
        assert float(values["latency_p99_ms"]) > 0
    finally:
        client.destroy_subscription(sub)


def test_bad_parameter_values_are_rejected_and_the_old_ones_stay(feed, client, classifier):
    results = set_parameters(client, NODE_NAME, [Parameter("classify.top_k", value=0)])
    assert not results[0].successful
    results = set_parameters(client, NODE_NAME, [Parameter("prompts.file", value="/no/such/prompts.yaml")])
    assert not results[0].successful and "does not exist" in results[0].reason
    results = set_parameters(client, NODE_NAME, [Parameter("prompts.labels", value=["car", "car"])])
    assert not results[0].successful and "unique" in results[0].reason
    start = len(feed.outputs)
    feed.publish(10)
    assert spin_until(client, lambda: len(feed.outputs) > start, 30, classifier)
    labelled = [d.results for d in feed.outputs[-1].detections if d.results[0].hypothesis.class_id != "unknown"]
    assert labelled and all(len(r) == 3 for r in labelled)


def test_changing_the_prompts_changes_the_labels_on_the_next_frame(feed, client, classifier):
    new_labels = ["street lamp", "mailbox", "bench"]
    label_infos: list[LabelInfo] = []
    sub = client.create_subscription(LabelInfo, f"/{NODE_NAME}/label_info", label_infos.append, LATCHED)
    try:
        results = set_parameters(client, NODE_NAME, [Parameter("prompts.labels", value=new_labels)])
        assert results[0].successful, results[0].reason
        assert spin_until(client, lambda: any([c.class_name for c in li.class_map] == new_labels
                                              for li in label_infos), 30, classifier)
    finally:
        client.destroy_subscription(sub)
    start = len(feed.outputs)
    feed.publish(20)
    assert spin_until(client, lambda: len(feed.outputs) > start, 30, classifier)
    labels = {r.hypothesis.class_id for d in feed.outputs[-1].detections for r in d.results}
    assert labels - {"unknown"} and labels <= set(new_labels) | {"unknown"}


@pytest.mark.parametrize(("override", "expected"), [
    ("model.checkpoint:=/no/such/model.safetensors", "/no/such/model.safetensors"),
    ("prompts.file:=/no/such/prompts.yaml", "/no/such/prompts.yaml"),
    ("sync.mode:=bogus", "sync.mode"),
    ("classify.top_k:=0", "classify.top_k"),
    ("file:/**:\n  ros__parameters:\n    classify:\n      top_k: many\n", "classify.top_k"),
    ("file:[broken", "bad arguments"),
])
def test_bad_configuration_fails_start_up_with_one_clear_message(ros_env, tmp_path, override, expected):
    if override.startswith("file:"):  # a parameter file given after the shipped one
        params = tmp_path / "params.yaml"
        params.write_text(override[5:])
        args = ("--params-file", str(params))
    else:
        args = ("-p", override)
    process = start_classifier(ros_env, *args, name="blendclip_bad_config")
    try:
        output = process.communicate(timeout=90)[0]
    finally:
        if process.poll() is None:  # it should have exited: do not leave it running
            stop(process)
    assert process.returncode == 1, output
    assert "Traceback" not in output
    ours = [line for line in output.splitlines() if "configure failed" in line or "blendclip-classifier:" in line]
    assert len(ours) == 1 and expected in ours[0], output


def test_ctrl_c_while_the_model_loads_stops_cleanly(ros_env, tmp_path):
    """SIGINT during configure (a large prompt set keeps the text tower busy): exit 0, no traceback."""
    labels = "[" + ", ".join(f"'class {i}'" for i in range(400)) + "]"
    templates = "[" + ", ".join(f"'a point cloud of a {{}} seen {i}.'" for i in range(10)) + "]"
    process = start_classifier(ros_env, "-p", f"prompts.labels:={labels}", "-p", f"prompts.templates:={templates}",
                               "-p", f"text.cache_dir:={tmp_path}", name="blendclip_interrupted")
    lines = []
    try:
        for line in process.stdout:  # wait until the model is loading
            lines.append(line)
            if "configuring: loading" in line:
                break
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        output = "".join(lines) + process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            stop(process)
    assert process.returncode == 0, output
    assert "interrupted while starting" in output and "configured:" not in output, output
    assert "Traceback" not in output, output
