"""``blendclip-replay``: publish a rosbag2 (MCAP or sqlite3) with its recorded timing.

A stand-in for ``ros2 bag play`` where the ros2 CLI is missing. Messages are published as
their recorded CDR bytes (``Publisher.publish(bytes)``; the compiled message class of each
type must be importable). Publish times are scheduled against one monotonic start time,
``start + (log_time - first_log_time) / rate``, so sleeping errors never accumulate.

QoS per topic (``qos="auto"``): raw sensor streams (:data:`SENSOR_TYPES`) use the sensor-data
profile (best effort, keep last 5, volatile), every other type reliable, keep last 10,
volatile. A best-effort subscriber matches both; a reliable subscriber of a sensor topic
needs ``--qos /topic:=reliable``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import queue
import signal
import struct
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import ReaderError

from ..bags.reader import read_bag
from ..bags.typestore import typestore
from ..errors import BlendClipError, ConfigError

SENSOR_TYPES = frozenset({
    "sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/LaserScan", "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Imu",
})
QOS_PROFILES = ("auto", "sensor", "reliable")
RELIABLE_DEPTH = 10
ACK_TIMEOUT_S = 1.0  # at the end, wait this long at most for reliable subscribers' acknowledgements
_SINGLE_STAMP_LOOP_GAP_NS = 10**9
_log = logging.getLogger(__name__)


class BagError(BlendClipError, ValueError):
    """A bag cannot be opened or replayed (missing, unreadable, unknown message type)."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: messages published, passes started, wall time from the first message,
    and the worst lateness of a publish call against its schedule (s)."""

    published: int
    passes: int
    duration_s: float
    max_lateness_s: float


def parse_remaps(items: Sequence[str]) -> dict[str, str]:
    """``["/from:=/to", ...]`` as a dict; ConfigError naming the bad item."""
    remaps = {}
    for item in items:
        source, sep, target = item.partition(":=")
        if not sep or not source.startswith("/") or not target.startswith("/"):
            raise ConfigError(f"remap: expected '/from:=/to' with absolute topics, got {item!r}")
        remaps[source] = target
    return remaps


def parse_qos(items: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``["sensor", "/topic:=reliable", ...]`` -> (default profile, per-topic profiles)."""
    default, per_topic = "auto", {}
    for item in items:
        topic, sep, profile = item.rpartition(":=")
        if profile not in QOS_PROFILES or (sep and not topic.startswith("/")):
            raise ConfigError(f"qos: expected one of {QOS_PROFILES} or '/topic:=PROFILE', got {item!r}")
        if sep:
            per_topic[topic] = profile
        else:
            default = profile
    return default, per_topic


def bag_topics(path: Path | str) -> dict[str, str]:
    """Topic -> message type of a rosbag2 folder (MCAP or sqlite3); BagError if unreadable."""
    try:
        with AnyReader([Path(path)], default_typestore=typestore()) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except (OSError, AnyReaderError, ReaderError) as exc:
        raise BagError(f"bag: cannot open {path} ({exc})") from exc


def message_class(msgtype: str) -> type:
    """The compiled rclpy class of ``pkg/msg/Name`` (imported as ``pkg.msg.Name``)."""
    package, _, name = msgtype.replace("/msg/", "/").partition("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"type {msgtype}: no compiled message class {package}.msg.{name} is installed") from exc


def _message_classes(topics: Mapping[str, str], explicit: bool) -> dict[str, tuple[str, type]]:
    """Topic -> (type, class); topics of uninstalled types are skipped with a warning unless
    they were asked for explicitly (then BagError)."""
    classes = {}
    for topic, msgtype in topics.items():
        try:
            classes[topic] = (msgtype, message_class(msgtype))
        except BagError as exc:
            if explicit:
                raise
            _log.warning("skipping %s: %s", topic, exc)
    if not classes:
        raise BagError(f"bag: no topic has an installed message type ({sorted(set(topics.values()))})")
    return classes


def qos_profile(msgtype: str, profile: str) -> object:
    """The rclpy QoS profile for ``profile`` (auto resolves by message type, see module doc)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if profile == "sensor" or (profile == "auto" and msgtype in SENSOR_TYPES):
        return qos_profile_sensor_data
    return QoSProfile(depth=RELIABLE_DEPTH, reliability=ReliabilityPolicy.RELIABLE)


def _has_header(cls: type) -> bool:
    fields = list(cls.get_fields_and_field_types().items())
    return bool(fields) and fields[0][1] == "std_msgs/Header"


def restamp(cdr: bytes, stamp_ns: int) -> bytes:
    """CDR of a message whose first field is a ``std_msgs/Header`` with the stamp replaced."""
    order = "<" if cdr[1] & 1 else ">"
    sec, nanosec = divmod(int(stamp_ns), 10**9)
    return cdr[:4] + struct.pack(f"{order}iI", sec, nanosec) + cdr[12:]


def _header_stamp_ns(cdr: bytes) -> int:
    sec, nanosec = struct.unpack_from("<iI" if cdr[1] & 1 else ">iI", cdr, 4)
    return sec * 10**9 + nanosec


class _Publishers:
    """One publisher per replayed topic, under its remapped name."""

    def __init__(self, node: object, classes: Mapping[str, tuple[str, type]], remaps: Mapping[str, str],
                 default_qos: str, topic_qos: Mapping[str, str]) -> None:
        self.publishers, self.restampable = {}, set()
        for topic, (msgtype, cls) in classes.items():
            profile = qos_profile(msgtype, topic_qos.get(topic, default_qos))
            self.publishers[topic] = node.create_publisher(cls, remaps.get(topic, topic), profile)
            if _has_header(cls):
                self.restampable.add(topic)

    def wait_for_acks(self, timeout_s: float) -> None:
        """Give reliable subscribers time to acknowledge the last messages before shutting down."""
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout_s
        for publisher in self.publishers.values():
            publisher.wait_for_all_acked(Duration(nanoseconds=max(0, round((deadline - time.monotonic()) * 1e9))))

    def wait_for_subscribers(self, count: int, timeout_s: float, stop: threading.Event) -> None:
        """Block until every publisher has ``count`` subscribers; TimeoutError naming the short ones."""
        deadline = time.monotonic() + timeout_s
        while True:
            counts = {p.topic_name: p.get_subscription_count() for p in self.publishers.values()}
            short = {topic: n for topic, n in counts.items() if n < count}
            if not short or stop.is_set():
                return
            if time.monotonic() >= deadline:
                detail = ", ".join(f"{topic} has {n}" for topic, n in sorted(short.items()))
                raise TimeoutError(f"wait-for-subscribers: fewer than {count} after {timeout_s:g} s ({detail})")
            stop.wait(0.02)


def replay(path: Path | str, *, rate: float = 1.0, loop: bool = False, topics: Sequence[str] | None = None,
           remaps: Mapping[str, str] | None = None, qos: str = "auto", topic_qos: Mapping[str, str] | None = None,
           start_delay_s: float = 0.0, wait_for_subscribers: int = 0, wait_timeout_s: float = 10.0,
           restamp_headers: bool = False, stop: threading.Event | None = None,
           node_name: str = "blendclip_replay", ros_args: Sequence[str] | None = None) -> ReplayResult:
    """Publish the bag at ``path`` with its recorded timing, scaled by ``rate``.

    Runs in its own rclpy context (installs no signal handlers); set ``stop`` to end early.
    With ``loop`` it restarts until stopped; a new pass starts one mean message interval
    after the previous pass's last message (1 s if the bag has a single log time).
    ``restamp_headers`` rewrites the top-level header stamp of each message to
    ``now_at_start + (stamp - first_stamp) / rate`` (plus the pass offset when looping),
    so equal stamps stay equal and stamps keep increasing across passes; nested headers
    (e.g. ``Detection3D.header``) keep their recorded stamps.
    """
    if not rate > 0:
        raise ConfigError(f"rate: must be positive, got {rate}")
    if start_delay_s < 0 or wait_timeout_s < 0 or wait_for_subscribers < 0:
        raise ConfigError("start-delay/wait-timeout/wait-for-subscribers: must be non-negative")
    if qos not in QOS_PROFILES:
        raise ConfigError(f"qos: expected one of {QOS_PROFILES}, got {qos!r}")
    available = bag_topics(path)
    selected = available if topics is None else {t: available[t] for t in topics if t in available}
    missing = sorted(set(topics or ()) - set(available))
    if missing or not selected:
        raise ConfigError(f"topics: {missing or 'none'} not in the bag (it has {sorted(available)})")
    for name, given in (("remap", remaps or {}), ("qos", topic_qos or {})):
        if unknown := sorted(set(given) - set(selected)):
            raise ConfigError(f"{name}: {unknown} not among the replayed topics {sorted(selected)}")
    classes = _message_classes(selected, explicit=topics is not None)
    stop = stop or threading.Event()

    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(args=list(ros_args or ()), context=context)
    node = rclpy.create_node(node_name, context=context)
    try:
        publishers = _Publishers(node, classes, remaps or {}, qos, topic_qos or {})
        publishers.wait_for_subscribers(wait_for_subscribers, wait_timeout_s, stop)
        if stop.wait(start_delay_s):
            return ReplayResult(0, 0, 0.0, 0.0)
        result = _play(path, list(classes), publishers, node, rate, loop, restamp_headers, stop)
        publishers.wait_for_acks(ACK_TIMEOUT_S)
        return result
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


_END_OF_PASS = object()
_PREFETCH = 8  # messages read ahead of the schedule (bounds memory)


def _prefetch(path: Path | str, topics: list[str], loop: bool, stop: threading.Event, out: queue.Queue) -> None:
    """Reader thread: messages, ``_END_OF_PASS`` after each pass, then ``None`` (or the exception)."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        while not stop.is_set():
            for message in read_bag(path, topics):
                if not put(message):
                    return
            if not put(_END_OF_PASS) or not loop:
                break
    except Exception as exc:  # noqa: BLE001 - handed to the playing thread, which raises it
        put(exc)
    finally:
        put(None)


def _play(path: Path | str, topics: list[str], publishers: _Publishers, node: object, rate: float,
          loop: bool, restamp_headers: bool, stop: threading.Event) -> ReplayResult:
    """Publish on schedule while a reader thread keeps the next messages ready (re-opening the
    bag for a new pass takes tens of ms, which would otherwise delay the pass's first message)."""
    pending: queue.Queue = queue.Queue(maxsize=_PREFETCH)
    done = threading.Event()
    reader = threading.Thread(target=_prefetch, args=(path, topics, loop, done, pending), daemon=True)
    reader.start()
    start = clock_start_ns = first = first_stamp = None
    pass_offset_ns, published, passes, max_late, new_pass = 0.0, 0, 0, 0.0, True
    log_times: set[int] = set()
    try:
        while not stop.is_set():
            try:
                item = pending.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                break
            if isinstance(item, Exception):
                raise BagError(f"bag: cannot read {path} ({item})") from item
            if item is _END_OF_PASS:
                if not log_times:  # nothing to loop over
                    break
                span = max(log_times) - min(log_times)
                gap = span / (len(log_times) - 1) if len(log_times) > 1 else _SINGLE_STAMP_LOOP_GAP_NS
                pass_offset_ns += (span + gap) / rate
                log_times, new_pass = set(), True
                continue
            passes, new_pass = passes + new_pass, False
            if first is None:  # the schedule starts with the first message in hand
                start, clock_start_ns, first = time.monotonic(), node.get_clock().now().nanoseconds, item.log_time_ns
            log_times.add(item.log_time_ns)
            due = start + ((item.log_time_ns - first) / rate + pass_offset_ns) * 1e-9
            if stop.wait(max(0.0, due - time.monotonic())):
                break
            max_late = max(max_late, time.monotonic() - due)
            cdr = item.cdr
            if restamp_headers and item.topic in publishers.restampable:
                recorded = _header_stamp_ns(cdr)
                first_stamp = recorded if first_stamp is None else first_stamp
                cdr = restamp(cdr, clock_start_ns + round(pass_offset_ns + (recorded - first_stamp) / rate))
            publishers.publishers[item.topic].publish(cdr)
            published += 1
    finally:
        done.set()
        reader.join()
    return ReplayResult(published, passes, 0.0 if start is None else time.monotonic() - start, max_late)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blendclip-replay",
        description=(
            "Publish a rosbag2 bag (MCAP or sqlite3, ours or recorded by 'ros2 bag record') with its\n"
            "recorded timing: messages go out at start + (log_time - first log_time) / rate, scheduled\n"
            "against one monotonic clock (no drift). Raw CDR bytes are published, so each message\n"
            "type's Python package (e.g. vision_msgs) must be installed.\n\n"
            "QoS 'auto': PointCloud2, LaserScan, Image, CompressedImage and Imu use the sensor-data\n"
            "profile (best effort, keep last 5); other types reliable, keep last 10; all volatile.\n"
            "Exit codes: 0 done or stopped by SIGINT/SIGTERM, 1 wait-for-subscribers timed out,\n"
            "2 bad input (one line on stderr)."),
        epilog="examples:\n"
               "  blendclip-replay my_bag --rate 2 --remap /lidar/points:=/points\n"
               "  blendclip-replay my_bag --loop --restamp --wait-for-subscribers 1\n"
               "  blendclip-replay my_bag --qos /detections:=sensor -- --ros-args -r __ns:=/replay\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", type=Path, help="rosbag2 folder (holds metadata.yaml)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default: %(default)s)")
    parser.add_argument("--loop", action="store_true", help="replay until stopped (SIGINT/SIGTERM)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="only these topics (default: all)")
    parser.add_argument("--remap", action="append", default=[], metavar="/FROM:=/TO",
                        help="publish topic /FROM as /TO (repeatable)")
    parser.add_argument("--qos", action="append", default=[], metavar="PROFILE|/TOPIC:=PROFILE",
                        help=f"QoS profile {QOS_PROFILES} for all topics or one topic (repeatable; "
                             "default: auto)")
    parser.add_argument("--start-delay", type=float, default=0.0, metavar="S",
                        help="seconds to wait after the publishers are created (and subscribers matched)")
    parser.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                        help="before publishing, wait until every topic has N subscribers")
    parser.add_argument("--wait-timeout", type=float, default=10.0, metavar="S",
                        help="give up waiting for subscribers after S seconds (exit 1; default: %(default)s)")
    parser.add_argument("--restamp", action="store_true",
                        help="rewrite top-level header stamps to the time of publishing (stamps that were "
                             "equal stay equal; nested headers keep their recorded stamps)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code. Arguments after ``--ros-args`` go to rclpy."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    own = argv[:len(argv) - len(ros_args)]
    args = _parser().parse_args([a for a in own if a != "--"] if ros_args else own)
    logging.basicConfig(format="blendclip-replay: %(message)s", level=logging.INFO)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        default_qos, topic_qos = parse_qos(args.qos)
        result = replay(args.bag, rate=args.rate, loop=args.loop, topics=args.topics,
                        remaps=parse_remaps(args.remap), qos=default_qos, topic_qos=topic_qos,
                        start_delay_s=args.start_delay, wait_for_subscribers=args.wait_for_subscribers,
                        wait_timeout_s=args.wait_timeout, restamp_headers=args.restamp, stop=stop,
                        ros_args=["blendclip-replay", *ros_args])
    except BlendClipError as exc:
        print(f"blendclip-replay: error: {exc}", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"blendclip-replay: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"published {result.published} messages in {result.passes} pass(es) over {result.duration_s:.3f} s "
          f"(max lateness {1e3 * result.max_lateness_s:.1f} ms)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
