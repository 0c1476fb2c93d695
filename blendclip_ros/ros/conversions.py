"""Conversions between ROS messages and numpy arrays.

``PointCloud2`` is read through zero-copy structured views of the message buffer for any
field layout; numpy arrays become ``PointCloud2`` without per-point work. Detection arrays
convert to and from centre/size/quaternion arrays. Malformed messages raise
:class:`~blendclip_ros.errors.MessageFormatError` naming the field and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import BoundingBox3D, Detection3D, Detection3DArray

from ..errors import MessageFormatError
from ..pointcloud_layout import POINTFIELD_DTYPES, fields_dtype, float32_fields

XYZ = ("x", "y", "z")


# --------------------------------------------------------------------------- PointCloud2


@dataclass(frozen=True)
class _CloudBuffer:
    """A validated PointCloud2 buffer and its layout."""

    buffer: np.ndarray  # uint8, the message's own memory
    dtype: np.dtype  # structured dtype of one point, itemsize == point_step
    height: int
    width: int
    row_step: int

    @property
    def rows_are_packed(self) -> bool:
        return self.height <= 1 or self.row_step == self.width * self.dtype.itemsize


def _cloud_buffer(msg: Any) -> _CloudBuffer:
    height, width, step, row_step = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    dtype = fields_dtype(msg.fields, step, bool(msg.is_bigendian))
    data = msg.data
    buffer = data.view(np.uint8).reshape(-1) if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    if height < 0 or width < 0:
        raise MessageFormatError(f"height/width: must be non-negative, got {height}x{width}")
    if height * width and row_step < width * step:
        raise MessageFormatError(f"row_step: {row_step} is less than width*point_step = {width * step}")
    expected = height * row_step
    if buffer.size != expected:
        raise MessageFormatError(
            f"data: length {buffer.size} does not match height*row_step = {height}*{row_step} = {expected} "
            f"(width*height*point_step = {width * height * step})")
    return _CloudBuffer(buffer, dtype, height, width, row_step)


def cloud_view(msg: Any) -> np.ndarray:
    """Return a zero-copy structured view ``(height, width)`` of a PointCloud2's points.

    Accepts rclpy messages and any object with the same attributes. Padded rows
    (``row_step > width * point_step``) are skipped by the view's strides.
    """
    cloud = _cloud_buffer(msg)
    if cloud.height * cloud.width == 0:
        return np.zeros((cloud.height, cloud.width), dtype=cloud.dtype)
    return np.ndarray((cloud.height, cloud.width), dtype=cloud.dtype, buffer=cloud.buffer,
                      strides=(cloud.row_step, cloud.dtype.itemsize))


def pointcloud2_to_array(msg: Any, fields: Sequence[str] = XYZ, *, keep_nonfinite: bool = False,
                         dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Return the points of ``msg`` as an ``(N, len(fields))`` array, organised clouds flattened.

    When the requested fields are consecutive, native-endian and already of ``dtype``
    (the usual packed x, y, z float32 layout) and no point is dropped, the result is a
    zero-copy strided view of the message buffer. Points whose x, y or z is NaN or inf
    are dropped unless ``keep_nonfinite``.
    """
    cloud = _cloud_buffer(msg)
    dtype = np.dtype(dtype)
    names = cloud.dtype.names or ()
    missing = [n for n in (*XYZ, *fields) if n not in names]
    if missing:
        raise MessageFormatError(f"fields: missing {', '.join(dict.fromkeys(missing))} (have {list(names)})")
    view = cloud_view(msg).reshape(-1)
    out = _column_view(cloud, fields, dtype)
    if out is None:
        out = np.empty((view.shape[0], len(fields)), dtype=dtype)
        for column, name in enumerate(fields):
            values = view[name]
            if values.ndim != 1:
                raise MessageFormatError(f"fields: {name!r} has count {values.shape[1]}, expected 1")
            with np.errstate(over="ignore"):  # beyond dtype's range becomes inf, dropped below
                out[:, column] = values
    if keep_nonfinite:
        return out
    finite = np.ones(view.shape[0], dtype=bool)
    for name in XYZ:  # finite in the output dtype (float64 1e300 is inf as float32)
        column = fields.index(name) if name in fields else None
        with np.errstate(over="ignore"):
            finite &= np.isfinite(out[:, column] if column is not None else view[name].astype(dtype))
    return out if finite.all() else out[finite]


def _column_view(cloud: _CloudBuffer, fields: Sequence[str], dtype: np.dtype) -> np.ndarray | None:
    """A zero-copy ``(N, k)`` view when the fields are consecutive elements of ``dtype``."""
    if not fields or not dtype.isnative or not cloud.rows_are_packed or cloud.buffer.size == 0:
        return None
    first_offset = cloud.dtype.fields[fields[0]][1]
    for k, name in enumerate(fields):
        field_dtype, offset = cloud.dtype.fields[name][:2]
        if field_dtype != dtype or offset != first_offset + k * dtype.itemsize:
            return None
    return np.ndarray((cloud.height * cloud.width, len(fields)), dtype=dtype, buffer=cloud.buffer,
                      offset=first_offset, strides=(cloud.dtype.itemsize, dtype.itemsize))


def set_cloud_data(msg: PointCloud2, points: np.ndarray) -> None:
    """Set ``msg.data`` from a C-contiguous array without copying where rclpy allows it.

    rclpy's generated setter copies into an ``array.array``; its C converter reads any
    buffer, so assigning the private ``_data`` slot avoids both copies. Falls back to the
    public setter when that slot does not exist.
    """
    flat = np.ascontiguousarray(points).view(np.uint8).reshape(-1)
    if hasattr(msg, "_data"):
        msg._data = flat  # noqa: SLF001 - documented zero-copy path, see docstring
    else:
        msg.data = flat.tobytes()


def array_to_pointcloud2(points: np.ndarray, header: Header,
                         field_names: Sequence[str] = ("x", "y", "z", "intensity", "ring")) -> PointCloud2:
    """Build an unorganised PointCloud2 with float32 fields from an ``(N, D)`` array.

    A structured array is also accepted: its own field layout is published as is.
    """
    if points.dtype.names:
        names = points.dtype.names
        fields = [PointField(name=n, offset=points.dtype.fields[n][1],
                             datatype=_pointfield_type(points.dtype.fields[n][0]), count=1) for n in names]
        step, n_points = points.dtype.itemsize, points.size
        data = np.ascontiguousarray(points.reshape(-1))
    else:
        if points.ndim != 2 or points.shape[1] != len(field_names):
            raise MessageFormatError(f"points: expected shape (N, {len(field_names)}), got {points.shape}")
        data = np.ascontiguousarray(points, dtype=np.float32)
        fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                  for f in float32_fields(field_names)]
        step, n_points = 4 * data.shape[1], data.shape[0]
    xyz_finite = (all(np.isfinite(data[n]).all() for n in XYZ if n in (data.dtype.names or ()))
                  if data.dtype.names else bool(np.isfinite(data[:, :3]).all()))
    msg = PointCloud2(header=header, height=1, width=n_points, fields=fields, is_bigendian=False,
                      point_step=step, row_step=step * n_points, is_dense=xyz_finite)
    set_cloud_data(msg, data)
    return msg


def _pointfield_type(dtype: np.dtype) -> int:
    for code, base in POINTFIELD_DTYPES.items():
        if base == dtype.newbyteorder("="):
            return code
    raise MessageFormatError(f"points: dtype {dtype} has no PointField datatype")


# ----------------------------------------------------------------------- Detection3DArray


@dataclass(frozen=True)
class DetectionArrays:
    """The boxes of a Detection3DArray as arrays, in message order.

    ``quaternions`` are x, y, z, w and normalised; ``valid[i]`` is False where box ``i``
    has a non-finite centre, a negative or non-finite size, or a zero or non-finite
    quaternion (only possible with ``strict=False``; ``problems`` says why).
    """

    header: Any
    centers: np.ndarray
    sizes: np.ndarray
    quaternions: np.ndarray
    ids: list[str]
    valid: np.ndarray
    problems: dict[int, str]

    def __len__(self) -> int:
        return len(self.ids)


def detections_to_arrays(msg: Detection3DArray, *, strict: bool = True) -> DetectionArrays:
    """Convert a Detection3DArray to arrays; ``strict`` raises on the first bad box."""
    count = len(msg.detections)
    raw = np.empty((count, 10), dtype=np.float64)
    ids = []
    for i, det in enumerate(msg.detections):
        c, q, s = det.bbox.center.position, det.bbox.center.orientation, det.bbox.size
        raw[i] = (c.x, c.y, c.z, s.x, s.y, s.z, q.x, q.y, q.z, q.w)
        ids.append(det.id)
    centers, sizes, quats = raw[:, 0:3], raw[:, 3:6], raw[:, 6:10]
    problems = _box_problems(centers, sizes, quats)
    if strict and problems:
        first = min(problems)
        raise MessageFormatError(f"detections[{first}]: {problems[first]}")
    valid = np.ones(count, dtype=bool)
    valid[list(problems)] = False
    quats = np.where(valid[:, None], _unit_quaternions(quats), np.array([0.0, 0.0, 0.0, 1.0]))
    return DetectionArrays(msg.header, np.ascontiguousarray(centers), np.ascontiguousarray(sizes),
                           np.ascontiguousarray(quats), ids, valid, problems)


def _unit_quaternions(quats: np.ndarray) -> np.ndarray:
    """Normalise rows without overflow (1e200 components) by dividing by the largest first;
    zero or non-finite rows give garbage that the caller masks out."""
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = quats / np.abs(quats).max(axis=1, keepdims=True)
        return scaled / np.linalg.norm(scaled, axis=1, keepdims=True)


def _box_problems(centers: np.ndarray, sizes: np.ndarray, quats: np.ndarray) -> dict[int, str]:
    with np.errstate(over="ignore"):
        norms = np.linalg.norm(quats, axis=1)
    checks = (
        (~np.isfinite(centers).all(axis=1), "bbox.center.position is not finite"),
        (~np.isfinite(sizes).all(axis=1), "bbox.size is NaN or inf"),
        ((sizes < 0).any(axis=1), "bbox.size is negative"),
        (~np.isfinite(quats).all(axis=1), "bbox.center.orientation is not finite"),
        (norms < 1e-9, "bbox.center.orientation is a zero quaternion"),
    )
    problems: dict[int, str] = {}
    for mask, text in checks:
        for index in np.flatnonzero(mask):
            problems.setdefault(int(index), text)
    return problems


def arrays_to_detections(header: Header, centers: np.ndarray, sizes: np.ndarray,
                         quaternions: np.ndarray, ids: Sequence[str]) -> Detection3DArray:
    """Build a Detection3DArray (no hypotheses) from box arrays; each detection gets ``header``."""
    detections = []
    for center, size, quat, box_id in zip(np.asarray(centers, dtype=float), np.asarray(sizes, dtype=float),
                                          np.asarray(quaternions, dtype=float), ids):
        pose = Pose(position=Point(x=center[0], y=center[1], z=center[2]),
                    orientation=Quaternion(x=quat[0], y=quat[1], z=quat[2], w=quat[3]))
        detections.append(Detection3D(header=header, bbox=BoundingBox3D(
            center=pose, size=Vector3(x=size[0], y=size[1], z=size[2])), id=str(box_id)))
    return Detection3DArray(header=header, detections=detections)
