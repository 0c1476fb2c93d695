"""Fuzz the classifier node process with malformed clouds and detection arrays over real DDS.

One node process serves the whole module. Hypothesis builds batches of cases, each a cloud
and/or a detection array under one fresh stamp: malformed clouds (wrong data length,
missing x/y/z, unknown datatypes, overrunning point_step, short row_step, duplicate fields)
and awkward but legal ones (NaN/inf/huge coordinates, empty, float64, organised with
padding, big-endian), boxes with NaN/inf/negative/zero sizes, zero/NaN/huge quaternions or
far outside the cloud, arrays in a foreign frame, and inputs without a counterpart. The
test publishes one case at a time and waits for its effect, so it knows exactly what the
node must do with each: every paired detection array in the cloud's frame gets exactly one
output (all "unknown" when its cloud is malformed, "unknown" for each invalid box); a
foreign frame or a missing counterpart is dropped. After each batch the real sweep must be
classified as usual, and at the end /diagnostics must hold every drop under its reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.crop import points_in_boxes
from blendclip_ros.ros.node_parameters import NUSCENES_LABELS

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs.msg")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import Detection3DArray  # noqa: E402

from blendclip_ros.ros.conversions import (  # noqa: E402
    array_to_pointcloud2,
    arrays_to_detections,
    set_cloud_data,
)

from .ros_harness import spin_until, start_classifier, stop  # noqa: E402

pytestmark = pytest.mark.ros
NODE = "blendclip_fuzz"
CLOUD_TOPIC, DETS_TOPIC = "/fuzz/points", "/fuzz/detections"
MIN_POINTS = 3
FRAME = "lidar_top"
LABELS = set(NUSCENES_LABELS)
UNKNOWN_ONLY = [("unknown", 0.0)]
WAIT_S = 15.0


# ----------------------------------------------------------------------------- the node


@pytest.fixture(scope="module")
def node_process(ros_env):
    process = start_classifier(ros_env, "-p", f"classify.min_points:={MIN_POINTS}", "-p", "diagnostics_period:=0.1",
                               "-r", f"points:={CLOUD_TOPIC}", "-r", f"detections:={DETS_TOPIC}", name=NODE)
    yield process
    print(stop(process))


class Feed:
    """Publishes cases under fresh stamps, collects outputs by stamp and the latest diagnostics,
    and keeps the counts the node must report."""

    def __init__(self, node, process, frame):
        self.node, self.process = node, process
        self.points = np.ascontiguousarray(frame.points)
        self.boxes = Boxes.from_mmdet3d(frame.boxes)
        self.cloud_pub = node.create_publisher(PointCloud2, CLOUD_TOPIC, qos_profile_sensor_data)
        self.det_pub = node.create_publisher(Detection3DArray, DETS_TOPIC, 10)
        self.outputs: dict[int, list[Detection3DArray]] = {}
        self.diagnostics: dict[str, str] = {}
        node.create_subscription(Detection3DArray, f"/{NODE}/detections", self._on_output, 50)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.expected: Counter[str] = Counter()
        self.stamp = 1_000

    def _on_output(self, msg: Detection3DArray) -> None:
        self.outputs.setdefault(_stamp_ns(msg.header), []).append(msg)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.hardware_id == f"/{NODE}":
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def header(self, frame_id: str = FRAME) -> Header:
        self.stamp += 1
        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = self.stamp, 123
        return header

    def wait_output(self, header: Header) -> Detection3DArray:
        stamp = _stamp_ns(header)
        got = spin_until(self.node, lambda: stamp in self.outputs, WAIT_S, self.process)
        assert got, f"no output for stamp {header.stamp.sec}: node alive={self.process.poll() is None}"
        return self.outputs[stamp][0]

    def counter(self, key: str) -> int:
        return int(self.diagnostics.get(key, 0))

    def wait_counts(self, keys: tuple[str, ...]) -> None:
        """Spin until /diagnostics reports the expected count of every key in ``keys``."""
        def reached() -> bool:
            return all(self.counter(k) >= self.expected[k] for k in keys)
        assert spin_until(self.node, reached, WAIT_S, self.process), \
            {k: (self.counter(k), self.expected[k]) for k in keys}

    def publish_good_frame(self, quaternions: np.ndarray | None = None) -> Detection3DArray:
        """The real sweep with its 69 boxes must be classified as usual."""
        header = self.header()
        ids = [f"good{i}" for i in range(len(self.boxes))]
        quaternions = self.boxes.quaternions if quaternions is None else quaternions
        self.cloud_pub.publish(array_to_pointcloud2(self.points, header))
        self.det_pub.publish(arrays_to_detections(header, self.boxes.centers, self.boxes.sizes, quaternions, ids))
        self.expected["published"] += 1
        out = self.wait_output(header)
        assert [d.id for d in out.detections] == ids
        counts = [len(i) for i in points_in_boxes(self.points, self.boxes)]
        for det, count in zip(out.detections, counts):
            ranked = [(r.hypothesis.class_id, r.hypothesis.score) for r in det.results]
            if count < MIN_POINTS:
                assert ranked == UNKNOWN_ONLY
            else:
                assert len(ranked) == 3 and {label for label, _ in ranked} <= LABELS, ranked
        return out


@pytest.fixture(scope="module")
def feed(client, node_process, nuscenes_frame):
    feed = Feed(client, node_process, nuscenes_frame)
    ready = spin_until(client, lambda: feed.det_pub.get_subscription_count() > 0
                       and feed.cloud_pub.get_subscription_count() > 0 and bool(feed.diagnostics), 60, node_process)
    assert ready, f"classifier did not come up: {stop(node_process)}"
    return feed


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


# ----------------------------------------------------------------------------- malformed clouds


@dataclass
class CloudCase:
    """A cloud message to build under a header, and whether the node must reject it."""

    kind: str
    fields: list[tuple[str, int, int, int]]  # name, offset, datatype, count
    data: np.ndarray  # uint8
    height: int
    width: int
    point_step: int
    row_step: int
    big_endian: bool = False

    @property
    def malformed(self) -> bool:
        return self.kind in MALFORMED_CLOUDS

    def message(self, header: Header) -> PointCloud2:
        msg = PointCloud2(header=header, height=self.height, width=self.width, is_bigendian=self.big_endian,
                          point_step=self.point_step, row_step=self.row_step, is_dense=False,
                          fields=[PointField(name=n, offset=o, datatype=t, count=c) for n, o, t, c in self.fields])
        set_cloud_data(msg, self.data)
        return msg


XYZIR = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1), ("ring", 16, 7, 1)]
LEGAL_CLOUDS = ("plain", "nonfinite", "huge", "empty", "float64", "organised", "big_endian")
MALFORMED_CLOUDS = ("truncated", "extended", "missing_xyz", "unknown_datatype", "point_step_overrun",
                    "short_row_step", "wrong_dimensions", "duplicate_field", "field_count")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _bytes(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).view(np.uint8).reshape(-1)


@st.composite
def cloud_cases(draw, points: np.ndarray, kinds: tuple[str, ...] = LEGAL_CLOUDS + MALFORMED_CLOUDS) -> CloudCase:
    kind = draw(st.sampled_from(kinds))
    n = 0 if kind == "empty" else draw(st.integers(1 if kind in MALFORMED_CLOUDS else 0, 3000))
    start = draw(st.integers(0, len(points) - n))
    pts = points[start:start + n].copy()
    fields = list(XYZIR)
    if kind in ("nonfinite", "huge"):
        values = [np.nan, np.inf, -np.inf] if kind == "nonfinite" else [FLOAT32_MAX, -FLOAT32_MAX, 1e30, -1e30]
        for _ in range(draw(st.integers(1, 20)) if n else 0):
            pts[draw(st.integers(0, n - 1)), draw(st.integers(0, 2))] = draw(st.sampled_from(values))
    if kind == "float64":  # x, y, z as float64 (some beyond float32's range), intensity float32
        layout = np.dtype({"names": ["x", "y", "z", "intensity"], "formats": ["<f8", "<f8", "<f8", "<f4"],
                           "offsets": [0, 8, 16, 24], "itemsize": 28})
        cloud = np.zeros(n, layout)
        for axis, name in enumerate("xyz"):
            cloud[name] = pts[:, axis]
        if n:
            cloud["x"][draw(st.integers(0, n - 1))] = draw(st.sampled_from([1e300, -1e300, 1e39]))
        return CloudCase(kind, [("x", 0, 8, 1), ("y", 8, 8, 1), ("z", 16, 8, 1), ("intensity", 24, 7, 1)],
                         _bytes(cloud), 1, n, 28, 28 * n)
    if kind == "organised":  # height rows of width points, each row padded
        height = draw(st.integers(1, 4))
        width, pad = n // height, draw(st.integers(0, 12))
        rows = np.zeros((height, width * 20 + pad), np.uint8)
        rows[:, :width * 20] = _bytes(pts[:height * width]).reshape(height, width * 20)
        return CloudCase(kind, fields, rows.reshape(-1), height, width, 20, width * 20 + pad)
    if kind == "big_endian":
        return CloudCase(kind, fields, _bytes(pts.astype(">f4")), 1, n, 20, 20 * n, big_endian=True)
    data, step, row_step, width, height = _bytes(pts), 20, 20 * n, n, 1
    if kind == "truncated":
        data = data[:len(data) - draw(st.integers(1, min(len(data), 64)))]
    elif kind == "extended":
        data = np.concatenate([data, np.zeros(draw(st.integers(1, 64)), np.uint8)])
    elif kind == "missing_xyz":
        fields.pop(draw(st.integers(0, 2)))
    elif kind == "unknown_datatype":
        index = draw(st.integers(0, len(fields) - 1))
        fields[index] = (*fields[index][:2], draw(st.sampled_from([0]) | st.integers(9, 255)), 1)
    elif kind == "point_step_overrun":  # fields run past the declared point size
        step = draw(st.integers(0, 19))
        row_step = step * n
    elif kind == "short_row_step":
        row_step = draw(st.integers(0, 20 * n - 1))
    elif kind == "wrong_dimensions":  # consistent steps, but more points claimed than sent
        if draw(st.booleans()):
            width = draw(st.integers(n + 1, (2**32 - 1) // 20))
            row_step = 20 * width
        else:
            height = draw(st.integers(2, 2**16))
    elif kind == "duplicate_field":
        fields.append(fields[draw(st.integers(0, len(fields) - 1))])
    elif kind == "field_count":
        index = draw(st.integers(0, 2))
        fields[index] = (*fields[index][:3], draw(st.integers(2, 8)))
    return CloudCase(kind, fields, data, height, width, step, row_step)


# ----------------------------------------------------------------------------- degenerate boxes

# defect -> (is the box invalid for the node, does its output have to be "unknown")
BOX_DEFECTS = {
    "none": (False, False), "nan_center": (True, True), "inf_center": (True, True), "nan_size": (True, True),
    "inf_size": (True, True), "negative_size": (True, True), "zero_size": (False, True),
    "zero_quaternion": (True, True), "nan_quaternion": (True, True), "inf_quaternion": (True, True),
    "scaled_quaternion": (False, False), "far_away": (False, True), "huge_size": (True, True),  # > max_box_size
}


@dataclass
class DetectionCase:
    centers: np.ndarray
    sizes: np.ndarray
    quaternions: np.ndarray
    defects: list[str]

    @property
    def invalid(self) -> np.ndarray:
        return np.array([BOX_DEFECTS[d][0] for d in self.defects], dtype=bool)

    @property
    def must_be_unknown(self) -> np.ndarray:
        return np.array([BOX_DEFECTS[d][1] for d in self.defects], dtype=bool)

    @property
    def ids(self) -> list[str]:
        return [f"box{i}_{d}" for i, d in enumerate(self.defects)]

    def message(self, header: Header) -> Detection3DArray:
        return arrays_to_detections(header, self.centers, self.sizes, self.quaternions, self.ids)


@st.composite
def detection_cases(draw, boxes: Boxes, defects: tuple[str, ...] = tuple(BOX_DEFECTS)) -> DetectionCase:
    n = draw(st.integers(0, 30))
    source = np.array(draw(st.lists(st.integers(0, len(boxes) - 1), min_size=n, max_size=n)), dtype=np.int64)
    centers, sizes = boxes.centers[source].copy(), boxes.sizes[source].copy()
    quats = boxes.quaternions[source].copy()
    chosen = draw(st.lists(st.sampled_from(defects), min_size=n, max_size=n))
    for i, defect in enumerate(chosen):
        axis = draw(st.integers(0, 2))
        if defect in ("nan_center", "inf_center"):
            centers[i, axis] = np.nan if defect == "nan_center" else draw(st.sampled_from([np.inf, -np.inf]))
        elif defect in ("nan_size", "inf_size"):
            sizes[i, axis] = np.nan if defect == "nan_size" else np.inf
        elif defect == "negative_size":
            sizes[i, axis] = -draw(st.floats(1e-300, 1e300))
        elif defect == "zero_size":
            sizes[i, axis] = 0.0
        elif defect == "zero_quaternion":
            quats[i] = 0.0
        elif defect in ("nan_quaternion", "inf_quaternion"):
            quats[i, draw(st.integers(0, 3))] = np.nan if defect == "nan_quaternion" else np.inf
        elif defect == "scaled_quaternion":  # any non-zero multiple is the same rotation
            quats[i] *= draw(st.sampled_from([1e-6, 1e-3, 7.0, 1e10, 1e200, 1e300]))
        elif defect == "far_away":
            centers[i, axis] += draw(st.sampled_from([-1.0, 1.0])) * draw(st.floats(1e4, 1e300))
        elif defect == "huge_size":
            sizes[i] = draw(st.floats(1e3, 1e300))
    return DetectionCase(centers, sizes, quats, chosen)


# ----------------------------------------------------------------------------- cases


def _ranked(det) -> list[tuple[str, float]]:
    return [(r.hypothesis.class_id, r.hypothesis.score) for r in det.results]


def _box_arrays(msg: Detection3DArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = [d.bbox for d in msg.detections]
    centers = np.array([[b.center.position.x, b.center.position.y, b.center.position.z] for b in boxes])
    sizes = np.array([[b.size.x, b.size.y, b.size.z] for b in boxes])
    quats = np.array([[b.center.orientation.x, b.center.orientation.y, b.center.orientation.z,
                       b.center.orientation.w] for b in boxes])
    return centers.reshape(-1, 3), sizes.reshape(-1, 3), quats.reshape(-1, 4)


def run_pair(feed: Feed, cloud: CloudCase, dets: DetectionCase, detections_first: bool) -> None:
    """Publish a cloud and a detection array under one stamp; check the one output."""
    header = feed.header()
    messages = [(feed.cloud_pub, cloud.message(header)), (feed.det_pub, dets.message(header))]
    for publisher, msg in (messages[::-1] if detections_first else messages):
        publisher.publish(msg)
    feed.expected["published"] += 1
    feed.expected["dropped_malformed_clouds"] += cloud.malformed
    feed.expected["dropped_invalid_boxes"] += int(dets.invalid.sum())
    out = feed.wait_output(header)
    assert len(feed.outputs[_stamp_ns(header)]) == 1
    assert out.header.frame_id == FRAME
    assert [d.id for d in out.detections] == dets.ids
    for got, sent in zip(_box_arrays(out), (dets.centers, dets.sizes, dets.quaternions)):
        np.testing.assert_array_equal(got, sent)  # boxes untouched (NaN compares equal here)
    unknown = np.ones(len(dets.ids), bool) if cloud.malformed else dets.must_be_unknown
    for det, must_be_unknown, defect in zip(out.detections, unknown, dets.defects):
        ranked = _ranked(det)
        if must_be_unknown:
            assert ranked == UNKNOWN_ONLY, (cloud.kind, defect, ranked)
        else:
            assert ranked == UNKNOWN_ONLY or (len(ranked) == 3 and {label for label, _ in ranked} <= LABELS), \
                (cloud.kind, defect, ranked)


def run_foreign_frame(feed: Feed, cloud: CloudCase, dets: DetectionCase) -> None:
    """Boxes in another frame (no tf2 here): the pair is dropped and counted, with no output."""
    header = feed.header()
    feed.cloud_pub.publish(cloud.message(header))
    foreign = feed.header("map")
    foreign.stamp = header.stamp
    feed.det_pub.publish(dets.message(foreign))
    feed.expected["dropped_frame_mismatch"] += 1
    feed.wait_counts(("dropped_frame_mismatch",))
    assert _stamp_ns(header) not in feed.outputs


def run_orphan(feed: Feed, cloud: CloudCase, dets: DetectionCase, cloud_only: bool) -> None:
    """A message whose counterpart never comes; counted when a newer pair matches."""
    header = feed.header()
    if cloud_only:
        feed.cloud_pub.publish(cloud.message(header))
        feed.expected["dropped_cloud_unmatched"] += 1
    else:
        feed.det_pub.publish(dets.message(header))
        feed.expected["dropped_detections_unmatched"] += 1


def check_diagnostics(feed: Feed) -> None:
    keys = ("published", "dropped_malformed_clouds", "dropped_invalid_boxes", "dropped_frame_mismatch",
            "dropped_cloud_unmatched", "dropped_detections_unmatched")
    feed.wait_counts(keys)
    assert {k: feed.counter(k) for k in keys} == {k: feed.expected[k] for k in keys}
    for reason in ("dropped_internal_errors", "dropped_superseded_pairs"):
        assert feed.counter(reason) == 0, feed.diagnostics
    assert feed.process.poll() is None


MODES = ["pair"] * 6 + ["foreign_frame", "orphan_cloud", "orphan_detections"]
# No shrinking: each attempt talks to the node (a missing output costs WAIT_S), and the
# generated failing example is reported as it is.
FUZZ = settings(deadline=None, database=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def batches(draw, points: np.ndarray, boxes: Boxes) -> list[tuple[str, CloudCase, DetectionCase, bool]]:
    cases = []
    for _ in range(draw(st.integers(1, 4))):
        mode = draw(st.sampled_from(MODES))
        defects = ("none",) if mode == "foreign_frame" else tuple(BOX_DEFECTS)  # dropped before box checks
        cases.append((mode, draw(cloud_cases(points)), draw(detection_cases(boxes, defects)), draw(st.booleans())))
    return cases


@pytest.mark.parametrize("kind", LEGAL_CLOUDS + MALFORMED_CLOUDS)
def test_each_cloud_kind_gives_one_output_per_detection_array(feed, kind):
    @settings(FUZZ, max_examples=4)
    @given(cloud=cloud_cases(feed.points, (kind,)), dets=detection_cases(feed.boxes), first=st.booleans())
    def fuzz(cloud, dets, first):
        run_pair(feed, cloud, dets, detections_first=first)

    fuzz()
    feed.publish_good_frame()
    check_diagnostics(feed)


def test_mixed_batches_never_stop_the_node(feed):
    """Random sequences of pairs, foreign frames and orphans; the real sweep after each batch."""
    defects_seen: set[str] = set()

    @settings(FUZZ, max_examples=40)
    @given(batch=batches(feed.points, feed.boxes))
    def fuzz(batch):
        for mode, cloud, dets, flag in batch:
            if mode == "pair":
                run_pair(feed, cloud, dets, detections_first=flag)
                defects_seen.update(dets.defects)
            elif mode == "foreign_frame":
                run_foreign_frame(feed, cloud, dets)
            else:
                run_orphan(feed, cloud, dets, cloud_only=mode == "orphan_cloud")
        feed.publish_good_frame()

    fuzz()
    check_diagnostics(feed)
    assert defects_seen == set(BOX_DEFECTS)  # the batches did exercise every box defect


def test_ten_thousand_boxes_get_one_complete_output(feed):
    """The 69 real boxes and 9,931 boxes centred on cloud points (200 of 0.5 m, the rest 1 cm, so
    that only a few hundred crops are encoded), every 97th with a NaN size."""
    rng = np.random.default_rng(0)
    count = 10_000
    extra = count - len(feed.boxes)
    centers = np.concatenate([feed.boxes.centers, feed.points[rng.integers(0, len(feed.points), extra), :3]])
    sizes = np.concatenate([feed.boxes.sizes, np.full((200, 3), 0.5), np.full((extra - 200, 3), 0.01)])
    quats = np.concatenate([feed.boxes.quaternions, np.tile([0.0, 0.0, 0.0, 1.0], (extra, 1))])
    sizes[len(feed.boxes)::97, 2] = np.nan
    invalid = np.isnan(sizes).any(axis=1)
    dets = DetectionCase(centers, sizes, quats, ["nan_size" if bad else "none" for bad in invalid])
    cloud = CloudCase("plain", list(XYZIR), _bytes(feed.points), 1, len(feed.points), 20, 20 * len(feed.points))
    run_pair(feed, cloud, dets, detections_first=False)
    out = feed.outputs[max(feed.outputs)][0]
    assert len(out.detections) == count
    labelled = sum(_ranked(d) != UNKNOWN_ONLY for d in out.detections)
    crops = points_in_boxes(feed.points, Boxes.from_quaternions(centers[~invalid], sizes[~invalid], quats[~invalid]))
    assert labelled == sum(len(c) >= MIN_POINTS for c in crops)
    feed.publish_good_frame()
    check_diagnostics(feed)


def test_scaled_quaternions_classify_like_unit_ones(feed):
    """Any positive multiple of a quaternion is the same rotation, even 1e300 times it."""
    scales = np.resize([1e-6, 7.0, 1e200, 1e300], len(feed.boxes))[:, None]
    unit, scaled = feed.publish_good_frame(), feed.publish_good_frame(feed.boxes.quaternions * scales)
    for a, b in zip(unit.detections, scaled.detections):
        assert [label for label, _ in _ranked(a)] == [label for label, _ in _ranked(b)]
        np.testing.assert_allclose([s for _, s in _ranked(a)], [s for _, s in _ranked(b)], rtol=1e-5)
    check_diagnostics(feed)
