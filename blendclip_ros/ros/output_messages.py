"""Build the node's output messages: labelled detections, label map, vision info, markers."""

from __future__ import annotations

import colorsys
import zlib

from collections.abc import Sequence

from geometry_msgs.msg import PoseWithCovariance
from std_msgs.msg import ColorRGBA, Header
from vision_msgs.msg import Detection3DArray, LabelInfo, ObjectHypothesis, ObjectHypothesisWithPose, VisionClass
from vision_msgs.msg import VisionInfo
from visualization_msgs.msg import Marker, MarkerArray

UNKNOWN = "unknown"


def hypotheses(ranked: Sequence[tuple[str, float]], pose) -> list[ObjectHypothesisWithPose]:
    """Hypotheses in the given order; each carries the box centre as its pose."""
    return [ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=label, score=float(score)),
                                     pose=PoseWithCovariance(pose=pose)) for label, score in ranked]


def label_detections(msg: Detection3DArray, ranked: Sequence[Sequence[tuple[str, float]] | None]) -> None:
    """Write results into ``msg`` in place; ``None`` keeps a detection's input results.

    Header, boxes and ids stay untouched, so the output pairs with its input.
    """
    for detection, result in zip(msg.detections, ranked):
        if result is not None:
            detection.results = hypotheses(result, detection.bbox.center)


def label_info(header: Header, labels: Sequence[str], threshold: float) -> LabelInfo:
    """The prompt labels as a class map (index -> label) with the score threshold."""
    return LabelInfo(header=header, threshold=float(threshold),
                     class_map=[VisionClass(class_id=i, class_name=label) for i, label in enumerate(labels)])


def vision_info(header: Header, method: str, location: str, version: int) -> VisionInfo:
    return VisionInfo(header=header, method=method, database_location=location, database_version=version)


def _colour(label: str) -> ColorRGBA:
    """A stable colour per label (grey for unknown)."""
    hue = (zlib.crc32(label.encode()) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8 if label != UNKNOWN else 0.0, 0.9)
    return ColorRGBA(r=r, g=g, b=b, a=0.5)


def markers(msg: Detection3DArray, namespace: str = "blendclip") -> MarkerArray:
    """A DELETEALL, then a translucent cube and a 'label score' text per detection."""
    out = [Marker(header=msg.header, action=Marker.DELETEALL)]
    for i, det in enumerate(msg.detections):
        top = det.results[0].hypothesis if det.results else ObjectHypothesis(class_id=UNKNOWN, score=0.0)
        cube = Marker(header=msg.header, ns=namespace, id=2 * i, type=Marker.CUBE, action=Marker.ADD,
                      pose=det.bbox.center, color=_colour(top.class_id))
        cube.scale.x, cube.scale.y, cube.scale.z = (max(v, 1e-3) for v in (det.bbox.size.x, det.bbox.size.y,
                                                                            det.bbox.size.z))
        text = Marker(header=msg.header, ns=namespace, id=2 * i + 1, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, text=f"{top.class_id} {top.score:.2f}",
                      color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0))
        text.pose.position.x = det.bbox.center.position.x
        text.pose.position.y = det.bbox.center.position.y
        text.pose.position.z = det.bbox.center.position.z + det.bbox.size.z / 2 + 0.3
        text.pose.orientation.w = 1.0
        text.scale.z = 0.5
        out += [cube, text]
    return MarkerArray(markers=out)
