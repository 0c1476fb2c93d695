"""``blendclip_classifier``: label 3D detections with an open-vocabulary point-cloud classifier.

A lifecycle node. Configure loads the model and the text bank, activate starts
classifying, deactivate stops (and frees cached GPU memory), cleanup drops the model.
Run as a plain process it configures and activates itself (``autostart``).

Inputs ``points`` (PointCloud2) and ``detections`` (Detection3DArray) are paired by stamp;
each pair is cropped, encoded in one batch and classified against the prompt set, and
``~/detections`` gets the input array back with top-k hypotheses per box. With
``accumulate.sweeps`` > 1 each cloud is joined with the previous ones first (``ego_motion``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings
from typing import Any

import numpy as np
import torch

from ..environment import apply_ros_environment

apply_ros_environment()

import rclpy  # noqa: E402
from rclpy._rclpy_pybind11 import RCLError  # noqa: E402
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult  # noqa: E402
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException  # noqa: E402
from rclpy.lifecycle import Node, State, TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.signals import SignalHandlerOptions, install_signal_handlers  # noqa: E402
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,  # noqa: E402
                       qos_profile_sensor_data)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from vision_msgs.msg import Detection3DArray, LabelInfo, VisionInfo  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from ..errors import BlendClipError, ConfigError, MessageFormatError  # noqa: E402
from ..geometry.boxes import Boxes  # noqa: E402
from ..pipeline import ObjectClassifier  # noqa: E402
from .conversions import XYZ, detections_to_arrays, pointcloud2_to_array  # noqa: E402
from .ego_motion import EgoMotion  # noqa: E402
from .frames import FrameError, FrameResolver, transform_boxes  # noqa: E402
from .node_parameters import PROMPT_PARAMS, SPECS, check_value, prompt_set_from  # noqa: E402
from .node_stats import NodeStats, diagnostic_array  # noqa: E402
from .output_messages import UNKNOWN, label_detections, label_info, markers, vision_info  # noqa: E402
from .spin import spin_until_shutdown, stop_quietly  # noqa: E402
from .stamp_sync import LatestSlot, StampSynchronizer, Stamped  # noqa: E402

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     history=HistoryPolicy.KEEP_LAST)
WORKER_JOIN_TIMEOUT_S = 10.0
LIVE_PARAMS = ("classify.top_k", "classify.score_threshold", "classify.min_points", "classify.max_points",
               "classify.box_margin")


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _descriptor(spec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.range is not None:
        if isinstance(spec.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                                  to_value=float(spec.range[1]))]
        else:
            descriptor.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]))]
    return descriptor


class ClassifierNode(Node):
    """The BlendCLIP classifier as a ROS 2 lifecycle node."""

    def __init__(self, name: str = "blendclip_classifier", **kwargs: Any) -> None:
        # Worker state first: destroy_node() may run if a parameter declaration below fails.
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._slot: LatestSlot[tuple[Stamped, Stamped]] = LatestSlot()
        self._active = False
        super().__init__(name, **kwargs)
        for spec in SPECS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = NodeStats()
        self.classifier: ObjectClassifier | None = None
        self.prompt_version = 0
        self._prompt_lock = threading.Lock()
        self._sync: StampSynchronizer | None = None
        self._inputs: list[Any] = []  # not `_subscriptions`: that is rclpy.Node's own list of every subscription
        self._ego: EgoMotion | None = None
        self._fields: tuple[str, ...] = XYZ  # PointCloud2 fields read: xyz, plus intensity for rgb models
        self._frames = FrameResolver(self, float(self.get_parameter("tf_timeout").value))

    # ------------------------------------------------------------------ parameters
    def _value(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            reason = check_value(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        changed = {p.name: p.value for p in params}
        if self.classifier is not None and any(name in changed for name in PROMPT_PARAMS):
            values = {name: changed.get(name, self._value(name)) for name in PROMPT_PARAMS}
            try:
                prompt_set = prompt_set_from(values)
            except BlendClipError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            threading.Thread(target=self._swap_prompts, args=(prompt_set,), daemon=True).start()
        if self.classifier is not None:
            live = {name.split(".", 1)[1]: value for name, value in changed.items() if name in LIVE_PARAMS}
            if live:
                self.classifier.update(**live)
        if "tf_timeout" in changed:
            self._frames.timeout_s = float(changed["tf_timeout"])
        if "sync.mode" in changed or "sync.slop" in changed or "sync.queue_size" in changed:
            previous, self._sync = self._sync, self._make_sync(changed)
            if previous is not None:
                self._sync.dropped.update(previous.dropped)
        return SetParametersResult(successful=True)

    def _swap_prompts(self, prompt_set) -> None:
        """Re-encode the prompts off the message path, then swap them in atomically."""
        with self._prompt_lock:
            try:
                self.classifier.set_prompts(prompt_set)
            except BlendClipError as exc:
                self.get_logger().error(f"prompt change failed, keeping the previous prompts: {exc}")
                return
            self.prompt_version += 1
            self.get_logger().info(f"prompts now: {', '.join(prompt_set.labels)} (version {self.prompt_version})")
            self._publish_label_info()

    def _make_sync(self, overrides: dict[str, Any] | None = None) -> StampSynchronizer:
        values = {n: (overrides or {}).get(n, self._value(n)) for n in ("sync.mode", "sync.slop", "sync.queue_size")}
        slop = float(values["sync.slop"]) if values["sync.mode"] == "approximate" else 0.0
        return StampSynchronizer(slop_s=slop, queue_size=int(values["sync.queue_size"]))

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            values = {spec.name: self._value(spec.name) for spec in SPECS}
            problems = [reason for name, value in values.items() if (reason := check_value(name, value))]
            if problems:
                raise ConfigError("; ".join(problems))
            bank = values["prompts.bank"] or None
            prompt_set = None if bank else prompt_set_from(values)
            checkpoint = values["model.checkpoint"] or None
            tower = {"type": values["text.tower"], "model": values["text.model"],
                     "weights": values["text.weights"] or None}
            if int(values["model.threads"]):  # before the model: onnxruntime takes torch's thread count
                torch.set_num_threads(int(values["model.threads"]))
            self.get_logger().info(f"configuring: loading {checkpoint or values['model.encoder'] + ' encoder'}")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.classifier = ObjectClassifier.from_config(
                    checkpoint=checkpoint, encoder=values["model.encoder"],
                    seed=int(values["model.seed"]), device=values["model.device"],
                    text_tower=None if checkpoint else tower, default_text_tower=tower,
                    prompts=prompt_set, bank=bank, text_weights=values["text.weights"] or None,
                    cache_dir=values["text.cache_dir"] or None,
                    top_k=int(values["classify.top_k"]), score_threshold=float(values["classify.score_threshold"]),
                    min_points=int(values["classify.min_points"]), max_points=int(values["classify.max_points"]),
                    margin=float(values["classify.box_margin"]), backend=values["model.backend"],
                    colour=values["model.colour"] or None)
            self._fields = (*XYZ, "intensity") if self.classifier.convention.reads_intensity else XYZ
            sweeps = int(values["accumulate.sweeps"])
            self._ego = EgoMotion(self, sweeps, values["accumulate.fixed_frame"], float(values["tf_timeout"]),
                                  self._fields) if sweeps > 1 else None
        except (BlendClipError, OSError, ValueError, RuntimeError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.classifier = None
            return TransitionCallbackReturn.FAILURE
        for warning in caught:
            self.get_logger().warning(str(warning.message))
        self.prompt_version = 1
        self._sync = self._make_sync()
        depth = int(self._value("qos.detections.depth"))
        self._out = self.create_lifecycle_publisher(Detection3DArray, "~/detections", depth)
        self._label_info_pub = self.create_lifecycle_publisher(LabelInfo, "~/label_info", LATCHED)
        self._vision_info_pub = self.create_lifecycle_publisher(VisionInfo, "~/vision_info", LATCHED)
        self._markers_pub = self.create_lifecycle_publisher(MarkerArray, "~/markers", 1)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        cloud_qos = QoSProfile(depth=int(self._value("qos.points.depth")),
                               reliability=ReliabilityPolicy.BEST_EFFORT
                               if self._value("qos.points.reliability") == "best_effort"
                               else ReliabilityPolicy.RELIABLE,
                               durability=qos_profile_sensor_data.durability, history=HistoryPolicy.KEEP_LAST)
        self._inputs = [
            self.create_subscription(PointCloud2, "points", self._on_cloud, cloud_qos),
            self.create_subscription(Detection3DArray, "detections", self._on_detections, depth),
        ]
        self._diag_timer = self.create_timer(float(self._value("diagnostics_period")), self._publish_diagnostics)
        rgb = f", rgb from {self.classifier.convention.colour}" if self.classifier.convention.channels == 6 else ""
        self.get_logger().info(f"configured: {self.classifier.description} on {self.classifier.device}{rgb}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._stopping.clear()
        self._active = True
        self._worker = threading.Thread(target=self._work, name="blendclip-classify", daemon=True)
        self._worker.start()
        result = super().on_activate(state)
        self._publish_label_info()
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        if self.classifier is not None:
            self.classifier.release_cached_memory()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        if self._ego is not None and self._ego.subscription is not None:
            self._inputs.append(self._ego.subscription)
        self._ego = None
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        self.destroy_timer(self._diag_timer)
        for pub in (self._out, self._label_info_pub, self._vision_info_pub, self._markers_pub):
            self.destroy_lifecycle_publisher(pub)
        self.destroy_publisher(self._diagnostics_pub)
        if self.classifier is not None:
            self.classifier.release_cached_memory()
        self.classifier = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._stop_worker()
        super().destroy_node()

    def _stop_worker(self) -> None:
        self._active = False
        self._stopping.set()
        self._slot.wake()
        if self._worker is not None:
            self._worker.join(timeout=WORKER_JOIN_TIMEOUT_S)
            if self._worker.is_alive():
                self.get_logger().warning("a frame is still being classified; abandoning it to stop")
            else:
                self._worker = None

    @property
    def busy(self) -> bool:
        """True while a frame that could not be waited for is still being classified."""
        return self._worker is not None and self._worker.is_alive()

    # ------------------------------------------------------------------ message path
    def _on_cloud(self, msg: PointCloud2) -> None:
        self.stats.receive("clouds")
        if self._active and self._ego is not None:
            self._ego.add_cloud(msg)
        if self._active:
            self._offer(self._sync.add_cloud(Stamped(_stamp_ns(msg.header), time.monotonic_ns(), msg)))

    def _on_detections(self, msg: Detection3DArray) -> None:
        self.stats.receive("detections")
        if self._active:
            self._offer(self._sync.add_detections(Stamped(_stamp_ns(msg.header), time.monotonic_ns(), msg)))

    def _offer(self, pair: tuple[Stamped, Stamped] | None) -> None:
        if pair is not None and self._slot.put(pair) is not None:
            self.stats.drop("superseded_pairs")  # the worker was busy: only the newest pair is kept

    def _work(self) -> None:
        while not self._stopping.is_set():
            pair = self._slot.take(timeout=0.5)
            if pair is None or self._stopping.is_set():
                continue
            try:
                self._process_pair(*pair)
            except RCLError:
                if self.context.ok():
                    raise
                return  # Ctrl-C shut rclpy down while this frame was in flight: nothing can be published

    def _process_pair(self, cloud: Stamped[PointCloud2], dets: Stamped[Detection3DArray]) -> None:
        """Classify one pair and publish exactly one output (unless its frames cannot be related)."""
        start = time.monotonic_ns()
        out = dets.msg
        arrays = detections_to_arrays(out, strict=False)
        try:
            centers, quats = self._in_cloud_frame(arrays, cloud.msg.header.frame_id, out.header)
        except FrameError as exc:
            self.stats.drop("frame_mismatch")
            self.get_logger().error(f"dropped a pair: {exc}", throttle_duration_sec=5.0)
            return
        try:
            ranked = self._rank(cloud.msg, arrays, centers, quats)
        except Exception as exc:  # the node must survive anything a message can do
            self.stats.drop("internal_errors")
            self.get_logger().error(f"labelled a frame {UNKNOWN} after an unexpected error: {exc!r}",
                                    throttle_duration_sec=5.0)
            ranked = [[(UNKNOWN, 0.0)]] * len(arrays)
        inference_ms = (time.monotonic_ns() - start) / 1e6
        label_detections(out, ranked)
        self._out.publish(out)
        self.stats.publish((time.monotonic_ns() - max(cloud.received_ns, dets.received_ns)) / 1e6, inference_ms)
        if self._value("publish_markers") and self._markers_pub.get_subscription_count():
            self._markers_pub.publish(markers(out))

    def _in_cloud_frame(self, arrays, cloud_frame: str, header) -> tuple[np.ndarray, np.ndarray]:
        """Box centres and orientations in the cloud's frame (tf2 at the stamp when they differ)."""
        if not header.frame_id or not cloud_frame or header.frame_id == cloud_frame:
            return arrays.centers, arrays.quaternions
        translation, rotation = self._frames.lookup(cloud_frame, header.frame_id, header.stamp)
        return transform_boxes(arrays.centers, arrays.quaternions, translation, rotation)

    def _rank(self, cloud: PointCloud2, arrays, centers: np.ndarray,
              quats: np.ndarray) -> list[list[tuple[str, float]] | None]:
        """Ranked labels per box; None keeps a box's input results (``sparse_policy: keep``)."""
        valid = arrays.valid & (arrays.sizes <= float(self._value("classify.max_box_size"))).all(axis=1)
        if not valid.all():
            self.stats.drop("invalid_boxes", int((~valid).sum()))
            first = int(np.flatnonzero(~valid)[0])
            reason = arrays.problems.get(first, "bbox.size exceeds classify.max_box_size")
            self.get_logger().warning(f"{int((~valid).sum())} invalid boxes labelled {UNKNOWN} "
                                      f"(detections[{first}]: {reason})", throttle_duration_sec=5.0)
        try:
            points = pointcloud2_to_array(cloud, self._fields)
        except MessageFormatError as exc:
            self.stats.drop("malformed_clouds")
            self.get_logger().warning(f"malformed cloud, its {len(arrays)} boxes labelled {UNKNOWN}: {exc}",
                                      throttle_duration_sec=5.0)
            points = np.zeros((0, len(self._fields)), dtype=np.float32)
        keep_input = self._value("classify.sparse_policy") == "keep"
        ranked: list[list[tuple[str, float]] | None] = [None if keep_input else [(UNKNOWN, 0.0)]] * len(arrays)
        indices = np.flatnonzero(valid)
        boxes = Boxes.from_quaternions(centers[indices], arrays.sizes[indices], quats[indices])
        if self._ego is not None:
            points = self._ego.merged(cloud, points, boxes, [arrays.ids[i] for i in indices],
                                      bool(self._value("accumulate.track_velocity")))
        for index, result in zip(indices, self.classifier.classify(points, boxes)):
            prediction = result.prediction
            if prediction.top_k:  # encoded; below the threshold, "unknown" leads the ranked labels
                ranked[index] = [(UNKNOWN, prediction.score), *prediction.top_k] if prediction.is_unknown \
                    else prediction.top_k
        return ranked

    # ------------------------------------------------------------------ side outputs
    def _publish_label_info(self) -> None:
        if self.classifier is None or not self._active:
            return
        header = self._header_now()
        self._label_info_pub.publish(label_info(header, self.classifier.labels,
                                                float(self._value("classify.score_threshold"))))
        location = self._value("prompts.bank") or self._value("prompts.file") or "prompts.labels"
        self._vision_info_pub.publish(vision_info(header, self.classifier.description, location,
                                                  self.prompt_version))

    def _header_now(self):
        header = Detection3DArray().header
        header.stamp = self.get_clock().now().to_msg()
        return header

    def _publish_diagnostics(self) -> None:
        values: dict[str, object] = self.stats.snapshot()
        values.update({"device": str(self.classifier.device) if self.classifier else "none",
                       "prompt_version": self.prompt_version, "active": self._active})
        if self._sync is not None:
            values.update({f"dropped_{k}": v for k, v in self._sync.dropped.items()})
        if self._ego is not None:
            values.update({f"accumulate_{k}": v for k, v in self._ego.problems.items()})
        dropped = sum(v for k, v in values.items() if k.startswith("dropped_"))
        level = DiagnosticStatus.WARN if dropped else DiagnosticStatus.OK
        message = f"{dropped} messages or boxes dropped" if dropped else "ok"
        self._diagnostics_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_name()}: classifier", self.get_fully_qualified_name(),
            values, level=level, message=message))


def main(argv: list[str] | None = None) -> int:
    """Console script ``blendclip-classifier`` (accepts ``--ros-args --params-file FILE``)."""
    # rclpy's handlers come after start-up: until then Ctrl-C is a plain KeyboardInterrupt, also
    # when the process inherited SIGINT ignored (started in the background by a shell, as rclpy would)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        rclpy.init(args=sys.argv if argv is None else argv, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as exc:  # rcl rejects malformed --ros-args and parameter files
        print(f"blendclip-classifier: bad arguments: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    node = None
    try:
        node = ClassifierNode()
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                stop_quietly(node)
                return 1
            node.trigger_activate()
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        print(f"blendclip-classifier: bad parameter: {exc}", file=sys.stderr)
        stop_quietly(node)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while the model loads: stop without a traceback
        print("blendclip-classifier: interrupted while starting", file=sys.stderr)
        stop_quietly(node)
        return 0
    install_signal_handlers(SignalHandlerOptions.ALL)
    spin_until_shutdown(node)
    if node.busy:  # a frame is still in torch: leaving through the interpreter would abort the process
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
