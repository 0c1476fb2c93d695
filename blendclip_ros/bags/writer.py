"""Write rosbag2 bags (MCAP or sqlite3) of PointCloud2, Detection3DArray and poses without rclpy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from scipy.spatial.transform import Rotation

from ..pointcloud_layout import float32_fields
from .typestore import typestore

CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
DETECTIONS_TYPE = "vision_msgs/msg/Detection3DArray"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
TF_TYPE = "tf2_msgs/msg/TFMessage"
_STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagWriter:
    """Context manager that writes clouds and detection arrays to a new rosbag2 folder.

    Output depends only on the arguments (no wall-clock time), so a bag can be
    regenerated bit for bit.
    """

    def __init__(self, path: Path | str, storage: str = "mcap") -> None:
        if storage not in _STORAGE:
            raise ValueError(f"storage: expected one of {sorted(_STORAGE)}, got {storage!r}")
        self._writer = Writer(Path(path), version=9, storage_plugin=_STORAGE[storage])
        self._connections: dict[str, object] = {}
        self._store = typestore()

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._writer.close()

    def _connection(self, topic: str, msgtype: str) -> object:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self._store)
        return self._connections[topic]

    def write_raw(self, topic: str, msgtype: str, stamp_ns: int, cdr: bytes) -> None:
        """Write an already serialised (CDR) message."""
        self._writer.write(self._connection(topic, msgtype), int(stamp_ns), cdr)

    def _header(self, stamp_ns: int, frame_id: str) -> object:
        types = self._store.types
        stamp = types["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9))
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def write_cloud(self, topic: str, stamp_ns: int, frame_id: str, points: np.ndarray,
                    field_names: Sequence[str] = ("x", "y", "z", "intensity", "ring")) -> None:
        """Write an ``(N, D)`` float32 array as an unorganised PointCloud2 with D float32 fields."""
        points = np.ascontiguousarray(points, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] != len(field_names):
            raise ValueError(f"points: expected shape (N, {len(field_names)}), got {points.shape}")
        types = self._store.types
        point_field = types["sensor_msgs/msg/PointField"]
        fields = [point_field(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                  for f in float32_fields(field_names)]
        step = 4 * points.shape[1]
        msg = types[CLOUD_TYPE](
            header=self._header(stamp_ns, frame_id), height=1, width=points.shape[0], fields=fields,
            is_bigendian=False, point_step=step, row_step=step * points.shape[0],
            data=points.view(np.uint8).reshape(-1), is_dense=bool(np.isfinite(points[:, :3]).all()))
        self.write_raw(topic, CLOUD_TYPE, stamp_ns, self._store.serialize_cdr(msg, CLOUD_TYPE))

    def write_detections(self, topic: str, stamp_ns: int, frame_id: str, centers: np.ndarray,
                         sizes: np.ndarray, quaternions: np.ndarray, ids: Sequence[str],
                         labels: Sequence[str] | None = None,
                         scores: Sequence[float] | None = None) -> None:
        """Write boxes (centres, vision_msgs sizes, x,y,z,w quaternions) as a Detection3DArray.

        With ``labels``, each detection carries one hypothesis (score 1.0 unless given).
        """
        types = self._store.types
        header = self._header(stamp_ns, frame_id)
        point, quat, vec = (types[f"geometry_msgs/msg/{n}"] for n in ("Point", "Quaternion", "Vector3"))
        pose_t, pose_cov = types["geometry_msgs/msg/Pose"], types["geometry_msgs/msg/PoseWithCovariance"]
        hyp, hyp_pose = types["vision_msgs/msg/ObjectHypothesis"], types["vision_msgs/msg/ObjectHypothesisWithPose"]
        detections = []
        for i, box_id in enumerate(ids):
            pose = pose_t(position=point(*map(float, centers[i])), orientation=quat(*map(float, quaternions[i])))
            results = []
            if labels is not None:
                score = 1.0 if scores is None else float(scores[i])
                results.append(hyp_pose(hypothesis=hyp(class_id=labels[i], score=score),
                                        pose=pose_cov(pose=pose, covariance=np.zeros(36))))
            bbox = types["vision_msgs/msg/BoundingBox3D"](center=pose, size=vec(*map(float, sizes[i])))
            detections.append(types["vision_msgs/msg/Detection3D"](
                header=header, results=results, bbox=bbox, id=str(box_id)))
        msg = types[DETECTIONS_TYPE](header=header, detections=detections)
        self.write_raw(topic, DETECTIONS_TYPE, stamp_ns, self._store.serialize_cdr(msg, DETECTIONS_TYPE))

    def _pose(self, pose: np.ndarray) -> tuple[object, object]:
        """The translation (x, y, z) and the geometry_msgs Quaternion of a 4x4 transform."""
        types = self._store.types
        x, y, z, w = Rotation.from_matrix(np.asarray(pose)[:3, :3]).as_quat()
        return tuple(map(float, np.asarray(pose)[:3, 3])), types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)

    def write_odometry(self, topic: str, stamp_ns: int, frame_id: str, child_frame_id: str,
                       pose: np.ndarray) -> None:
        """Write a nav_msgs/Odometry: the 4x4 pose ``frame_id <- child_frame_id`` (zero twist)."""
        types = self._store.types
        translation, rotation = self._pose(pose)
        pose_msg = types["geometry_msgs/msg/Pose"](position=types["geometry_msgs/msg/Point"](*translation),
                                                   orientation=rotation)
        zero = types["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0)
        msg = types[ODOMETRY_TYPE](
            header=self._header(stamp_ns, frame_id), child_frame_id=child_frame_id,
            pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose_msg, covariance=np.zeros(36)),
            twist=types["geometry_msgs/msg/TwistWithCovariance"](
                twist=types["geometry_msgs/msg/Twist"](linear=zero, angular=zero), covariance=np.zeros(36)))
        self.write_raw(topic, ODOMETRY_TYPE, stamp_ns, self._store.serialize_cdr(msg, ODOMETRY_TYPE))

    def write_transforms(self, topic: str, stamp_ns: int,
                         transforms: Sequence[tuple[str, str, np.ndarray]]) -> None:
        """Write a tf2_msgs/TFMessage of ``(parent, child, 4x4 parent <- child)`` transforms."""
        types = self._store.types
        stamped = []
        for parent, child, pose in transforms:
            translation, rotation = self._pose(pose)
            stamped.append(types["geometry_msgs/msg/TransformStamped"](
                header=self._header(stamp_ns, parent), child_frame_id=child,
                transform=types["geometry_msgs/msg/Transform"](
                    translation=types["geometry_msgs/msg/Vector3"](*translation), rotation=rotation)))
        msg = types[TF_TYPE](transforms=stamped)
        self.write_raw(topic, TF_TYPE, stamp_ns, self._store.serialize_cdr(msg, TF_TYPE))
