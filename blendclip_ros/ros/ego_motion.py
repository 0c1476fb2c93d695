"""The node's multi-sweep accumulation: cloud ring, ego poses from tf2 or odometry, box tracks.

Poses of the cloud frame in ``fixed_frame`` come from tf2 (``lookup_transform`` at the sweep's
stamp) where ``tf2_ros`` is installed, and otherwise from ``nav_msgs/Odometry`` on the node's
``odom`` topic, whose ``header.frame_id`` must be the fixed frame and ``child_frame_id`` the
cloud's frame (without tf2 no other frame can be related to it).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from ..errors import ConfigError, MessageFormatError
from ..geometry.boxes import Boxes
from .accumulate import BoxTracks, PoseError, PoseHistory, SweepRing, pose_matrix
from .conversions import XYZ, pointcloud2_to_array

ODOMETRY_TOPIC = "odom"


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class EgoMotion:
    """Accumulates the node's last ``sweeps`` clouds into the current one's frame.

    ``add_cloud`` is cheap (called on the executor thread for every cloud, paired or not);
    conversion and merging happen on the worker thread in :meth:`merged`.
    """

    def __init__(self, node: Any, sweeps: int, fixed_frame: str, timeout_s: float,
                 fields: tuple[str, ...] = XYZ) -> None:
        self.node = node
        self.fields = fields
        self.fixed_frame = fixed_frame
        self.timeout_s = timeout_s
        self.ring = SweepRing(sweeps, self._pose_at)
        self.tracks = BoxTracks()
        self._pending: deque[Any] = deque(maxlen=sweeps)
        self._cloud_frame = ""
        self._odometry = PoseHistory()
        self.problems: dict[str, int] = {}
        try:
            import tf2_ros  # noqa: PLC0415 - optional, present on real ROS installs
        except ImportError:
            self._tf = None
            try:
                from nav_msgs.msg import Odometry  # noqa: PLC0415
            except ImportError:
                raise ConfigError("accumulate.sweeps > 1 needs tf2_ros or nav_msgs (Odometry) installed") from None

            self.subscription = node.create_subscription(Odometry, ODOMETRY_TOPIC, self._on_odometry, 50)
        else:
            self._tf = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._tf, node)
            self.subscription = None

    @property
    def source(self) -> str:
        return "tf2" if self._tf is not None else f"odometry ({self.node.resolve_topic_name(ODOMETRY_TOPIC)})"

    def _count(self, problem: str) -> None:
        self.problems[problem] = self.problems.get(problem, 0) + 1

    def _on_odometry(self, msg: Any) -> None:
        if msg.header.frame_id != self.fixed_frame:
            self._count("odometry_wrong_frame")
            self.node.get_logger().warning(
                f"odometry in frame '{msg.header.frame_id}' ignored: accumulate.fixed_frame is "
                f"'{self.fixed_frame}'", throttle_duration_sec=5.0)
            return
        if self._cloud_frame and msg.child_frame_id != self._cloud_frame:
            self._count("odometry_wrong_child")
            self.node.get_logger().warning(
                f"odometry of '{msg.child_frame_id}' ignored: clouds are in '{self._cloud_frame}' and without "
                "tf2 the odometry must describe the cloud's frame", throttle_duration_sec=5.0)
            return
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        try:
            self._odometry.add(stamp_ns(msg.header.stamp), (p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
        except PoseError:
            self._count("odometry_invalid")

    def _pose_at(self, stamp: int) -> np.ndarray:
        if self._tf is None:
            return self._odometry.at(stamp)
        from rclpy.duration import Duration  # noqa: PLC0415
        from rclpy.time import Time  # noqa: PLC0415

        try:
            tf = self._tf.lookup_transform(self.fixed_frame, self._cloud_frame, Time(nanoseconds=stamp),
                                           timeout=Duration(seconds=self.timeout_s))
        except Exception as exc:  # tf2 raises several unrelated exception types
            raise PoseError(f"no transform {self.fixed_frame} <- {self._cloud_frame} at {stamp} ns: {exc}") from exc
        t, r = tf.transform.translation, tf.transform.rotation
        return pose_matrix((t.x, t.y, t.z), (r.x, r.y, r.z, r.w))

    def add_cloud(self, msg: Any) -> None:
        """Remember a received cloud (converted later, on the worker thread)."""
        self._pending.append(msg)

    def merged(self, cloud: Any, points: np.ndarray, boxes: Boxes, ids: list[str],
               track_velocity: bool) -> np.ndarray:
        """``points`` of ``cloud`` plus the previous sweeps, in its frame (moving boxes followed)."""
        frame = cloud.header.frame_id
        if frame != self._cloud_frame:  # a new sensor frame: earlier sweeps cannot be related
            if self._cloud_frame:
                self.ring = SweepRing(self.ring.sweeps, self._pose_at)
                self._odometry.clear()
            self._cloud_frame = frame
        while self._pending:
            msg = self._pending.popleft()
            if msg.header.frame_id != frame:
                continue
            try:
                self.ring.add(stamp_ns(msg.header.stamp), pointcloud2_to_array(msg, self.fields))
            except MessageFormatError as exc:
                self._count("malformed_sweeps")
                self.node.get_logger().warning(f"past sweep left out: {exc}", throttle_duration_sec=5.0)
        now = stamp_ns(cloud.header.stamp)
        velocities = None
        if track_velocity and len(boxes):
            try:
                velocities = self.tracks.velocities(now, ids, boxes.centers, self._pose_at(now))
            except PoseError:
                velocities = None
        merged, missing = self.ring.merged(now, points, boxes, velocities)
        if missing:
            self._count("sweeps_without_pose")
            self.node.get_logger().warning(f"{missing} past sweeps left out: no pose in '{self.fixed_frame}' "
                                           f"from {self.source}", throttle_duration_sec=5.0)
        return merged
