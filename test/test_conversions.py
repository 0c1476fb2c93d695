"""PointCloud2 and Detection3DArray conversions: layouts, round trips, malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs.msg")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import Detection3DArray  # noqa: E402

from blendclip_ros.errors import MessageFormatError  # noqa: E402
from blendclip_ros.ros.conversions import (  # noqa: E402
    array_to_pointcloud2,
    arrays_to_detections,
    cloud_view,
    detections_to_arrays,
    pointcloud2_to_array,
)

pytestmark = pytest.mark.ros
FIELD_TYPES = {np.dtype(np.int8): 1, np.dtype(np.uint8): 2, np.dtype(np.int16): 3, np.dtype(np.uint16): 4,
               np.dtype(np.int32): 5, np.dtype(np.uint32): 6, np.dtype(np.float32): 7, np.dtype(np.float64): 8}
EXTRA_FIELDS = {"intensity": np.float32, "ring": np.uint16, "time": np.float64}
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _wire(msg: PointCloud2) -> PointCloud2:
    """Serialise and deserialise, so `data` is what a subscriber really gets."""
    return deserialize_message(serialize_message(msg), PointCloud2)


@st.composite
def cloud_layouts(draw):
    """A random point layout: xyz float32/float64, optional extras, any order, padding, endianness."""
    xyz_type = draw(st.sampled_from([np.float32, np.float64]))
    extras = draw(st.lists(st.sampled_from(sorted(EXTRA_FIELDS)), unique=True, max_size=3))
    names = draw(st.permutations(["x", "y", "z", *extras]))
    types = {n: xyz_type if n in "xyz" else EXTRA_FIELDS[n] for n in names}
    offsets, offset = {}, 0
    for name in names:
        offset += draw(st.integers(0, 3))  # padding between fields
        offsets[name] = offset
        offset += np.dtype(types[name]).itemsize
    point_step = offset + draw(st.integers(0, 8))
    height = draw(st.integers(1, 4))
    width = draw(st.integers(0, 30))
    row_pad = draw(st.integers(0, 16)) if height > 1 else 0
    bigendian = draw(st.booleans())
    return names, types, offsets, point_step, height, width, row_pad, bigendian


def _build_cloud(layout, values: np.ndarray) -> PointCloud2:
    """Write `values` (height*width, k) into a PointCloud2 with the given layout."""
    names, types, offsets, point_step, height, width, row_pad, bigendian = layout
    order = ">" if bigendian else "<"
    dtype = np.dtype({"names": list(names), "formats": [np.dtype(types[n]).newbyteorder(order) for n in names],
                      "offsets": [offsets[n] for n in names], "itemsize": point_step})
    row_step = width * point_step + row_pad
    buffer = np.zeros(height * row_step, dtype=np.uint8)
    rows = np.ndarray((height, width), dtype=dtype, buffer=buffer, strides=(row_step, point_step))
    for k, name in enumerate(names):
        rows[name] = values[:, k].reshape(height, width)
    fields = [PointField(name=n, offset=offsets[n], datatype=FIELD_TYPES[np.dtype(types[n])], count=1)
              for n in names]
    msg = PointCloud2(height=height, width=width, fields=fields, is_bigendian=bigendian, point_step=point_step,
                      row_step=row_step, is_dense=True)
    msg.data = buffer.tobytes()
    return msg


@FAST
@given(layout=cloud_layouts(), data=st.data())
def test_any_layout_reads_back_its_values(layout, data):
    names, types, _, _, height, width, _, _ = layout
    n = height * width
    columns = []
    for name in names:
        if np.issubdtype(types[name], np.floating):
            col = data.draw(arrays(np.float32, n, elements=st.floats(-1e4, 1e4, width=32)))
        else:
            col = data.draw(arrays(np.uint16, n)).astype(np.float64)
        columns.append(col.astype(np.float64))
    values = np.stack(columns, axis=1) if columns else np.zeros((n, 0))
    msg = _wire(_build_cloud(layout, values))
    wanted = ("x", "y", "z", *[f for f in names if f not in "xyz"])
    got = pointcloud2_to_array(msg, wanted, dtype=np.float64)
    expected = values[:, [list(names).index(f) for f in wanted]]
    np.testing.assert_array_equal(got, expected.astype(np.float32).astype(np.float64)
                                  if types["x"] is np.float32 else expected)
    assert cloud_view(msg).shape == (height, width)


@FAST
@given(points=arrays(np.float32, st.tuples(st.integers(0, 200), st.just(5)),
                     elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_round_trip_keeps_or_drops_nonfinite(points):
    msg = _wire(array_to_pointcloud2(points, Header(frame_id="lidar")))
    kept = pointcloud2_to_array(msg, ("x", "y", "z", "intensity", "ring"), keep_nonfinite=True)
    np.testing.assert_array_equal(kept, points)
    finite = np.isfinite(points[:, :3]).all(axis=1)
    dropped = pointcloud2_to_array(msg, ("x", "y", "z", "intensity", "ring"))
    np.testing.assert_array_equal(dropped, points[finite])
    assert msg.is_dense == bool(finite.all())


def test_packed_float32_xyz_is_a_zero_copy_view():
    points = np.arange(40, dtype=np.float32).reshape(8, 5)
    msg = _wire(array_to_pointcloud2(points, Header()))
    xyz = pointcloud2_to_array(msg)
    assert np.shares_memory(xyz, np.frombuffer(msg.data, dtype=np.uint8))
    np.testing.assert_array_equal(xyz, points[:, :3])


def test_structured_array_round_trip_keeps_mixed_types():
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("ring", "<u2"), ("time", "<f8")])
    points = np.zeros(5, dtype=dtype)
    points["x"], points["ring"], points["time"] = np.arange(5), np.arange(5) * 3, np.linspace(0, 1, 5)
    msg = _wire(array_to_pointcloud2(points, Header()))
    assert [f.datatype for f in msg.fields] == [7, 7, 7, 4, 8]
    np.testing.assert_array_equal(pointcloud2_to_array(msg, ("ring", "time"), dtype=np.float64)[:, 1],
                                  points["time"])


def _valid_cloud() -> PointCloud2:
    return _wire(array_to_pointcloud2(np.ones((4, 5), np.float32), Header()))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda m: setattr(m, "data", bytes(m.data)[:-3]), "data: length"),
    (lambda m: setattr(m, "fields", [f for f in m.fields if f.name != "y"]), "missing y"),
    (lambda m: setattr(m.fields[3], "datatype", 42), "unknown datatype 42"),
    (lambda m: setattr(m.fields[4], "offset", 18), "overruns point_step"),
    (lambda m: setattr(m, "point_step", 0), "point_step"),
    (lambda m: setattr(m, "row_step", 3), "row_step"),
])
def test_malformed_clouds_raise_one_typed_error(mutate, message):
    msg = _valid_cloud()
    mutate(msg)
    with pytest.raises(MessageFormatError, match=message):
        pointcloud2_to_array(msg)


@FAST
@given(width=st.integers(1, 50), extra=st.integers(1, 40), step=st.sampled_from([12, 16, 20]))
def test_any_wrong_data_length_is_rejected(width, extra, step):
    msg = PointCloud2(height=1, width=width, point_step=step, row_step=width * step,
                      fields=[PointField(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")])
    msg.data = bytes(width * step + extra)
    with pytest.raises(MessageFormatError, match="data: length"):
        pointcloud2_to_array(msg)


quaternions = arrays(np.float64, 4, elements=st.floats(-1, 1)).filter(lambda q: np.linalg.norm(q) > 1e-3)


@FAST
@given(boxes=st.lists(st.tuples(arrays(np.float64, 3, elements=st.floats(-100, 100)),
                                arrays(np.float64, 3, elements=st.floats(0, 20)), quaternions), max_size=20))
def test_detection_round_trip(boxes):
    centers = np.array([b[0] for b in boxes]).reshape(-1, 3)
    sizes = np.array([b[1] for b in boxes]).reshape(-1, 3)
    quats = np.array([b[2] for b in boxes]).reshape(-1, 4)
    header = Header(frame_id="lidar_top")
    header.stamp.sec = 17
    msg = arrays_to_detections(header, centers, sizes, quats, [f"id{i}" for i in range(len(boxes))])
    msg = deserialize_message(serialize_message(msg), Detection3DArray)
    got = detections_to_arrays(msg)
    np.testing.assert_array_equal(got.centers, centers)
    np.testing.assert_array_equal(got.sizes, sizes)
    np.testing.assert_allclose(got.quaternions, quats / np.linalg.norm(quats, axis=1, keepdims=True), atol=1e-12)
    assert got.ids == [f"id{i}" for i in range(len(boxes))]
    assert got.header.frame_id == "lidar_top" and got.header.stamp.sec == 17
    assert got.valid.all() and not got.problems


@pytest.mark.parametrize(("size", "quat", "message"), [
    ((1, 1, 1), (0, 0, 0, 0), "orientation is a zero quaternion"),
    ((1, 1, 1), (0, np.nan, 0, 1), "orientation is not finite"),
    ((1, -2, 1), (0, 0, 0, 1), "bbox.size is negative"),
    ((1, np.nan, 1), (0, 0, 0, 1), "bbox.size is NaN or inf"),
])
def test_malformed_boxes(size, quat, message):
    centers = np.zeros((3, 3))
    sizes = np.array([(1, 1, 1), size, (2, 2, 2)], dtype=float)
    quats = np.array([(0, 0, 0, 1), quat, (0, 0, 0, 1)], dtype=float)
    msg = arrays_to_detections(Header(), centers, sizes, quats, ["a", "b", "c"])
    with pytest.raises(MessageFormatError, match=rf"detections\[1\]: .*{message.split()[-1]}"):
        detections_to_arrays(msg)
    lenient = detections_to_arrays(msg, strict=False)
    assert lenient.valid.tolist() == [True, False, True]
    assert message in lenient.problems[1]
    assert np.isfinite(lenient.quaternions).all()
