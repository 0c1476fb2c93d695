"""``blendclip-bag-from-nuscenes``: a rosbag2 of LiDAR keyframes and their annotated boxes.

Writes ``sensor_msgs/PointCloud2`` and ``vision_msgs/Detection3DArray`` pairs with the same
stamp and frame from a nuScenes-format dataset (through the nuscenes-devkit) or from an
mmdet3d info file. From nuScenes it also writes the ego poses, so the classifier node can
accumulate sweeps from a replay: ``nav_msgs/Odometry`` of the LiDAR frame in the fixed frame
and ``tf2_msgs/TFMessage`` (fixed -> base_link on ``/tf``, base_link -> LiDAR on ``/tf_static``).
Needs no rclpy: only the ROS-free bag writer is used.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import WriterError
from tqdm import tqdm

from ..bags.writer import BagWriter
from ..data.nuscenes_frames import (AnnotatedCloud, lidar_mount, mmdet3d_frame_count, mmdet3d_frames,
                                    nuscenes_frames, open_nuscenes, sample_tokens)
from ..errors import BlendClipError, ConfigError

DEFAULT_FRAME_ID = "lidar_top"
DEFAULT_CLOUD_TOPIC = "/lidar/points"
DEFAULT_DETECTIONS_TOPIC = "/detections"
DEFAULT_ODOM_TOPIC = "/odom"
DEFAULT_FIXED_FRAME = "odom"
BASE_FRAME = "base_link"


def repeated(frames: Callable[[], Iterable[AnnotatedCloud]], repeat: int, period_s: float) -> Iterator[AnnotatedCloud]:
    """The sequence ``frames()`` ``repeat`` times; each pass starts ``period_s`` after the last one ended.

    With a single frame the stamps are ``t0, t0 + period, t0 + 2 * period, ...``.
    """
    if repeat < 1:
        raise ConfigError(f"repeat: must be at least 1, got {repeat}")
    if not period_s > 0:
        raise ConfigError(f"period: must be positive, got {period_s}")
    period_ns = round(period_s * 1e9)
    first = last = None
    for k in range(repeat):
        offset = 0 if k == 0 else k * (last - first + period_ns)
        for frame in frames():
            if k == 0:
                first = frame.stamp_ns if first is None else first
                last = frame.stamp_ns
            yield frame.shifted(offset)


def write_annotated_bag(frames: Iterable[AnnotatedCloud], output: Path | str, *, storage: str = "mcap",
                        frame_id: str = DEFAULT_FRAME_ID, cloud_topic: str = DEFAULT_CLOUD_TOPIC,
                        detections_topic: str = DEFAULT_DETECTIONS_TOPIC, odom_topic: str = DEFAULT_ODOM_TOPIC,
                        fixed_frame: str = DEFAULT_FIXED_FRAME, base_from_lidar: np.ndarray | None = None,
                        total: int | None = None, progress: bool = True) -> int:
    """Write each frame as a cloud and a detection array (log time = stamp); return the frame count.

    Each detection carries one hypothesis: the frame's label with score 1.0. Frames with a pose
    also get an odometry message (the LiDAR frame in ``fixed_frame``) and a /tf transform
    (``fixed_frame`` -> base_link); ``base_from_lidar`` (the sensor mount, identity if None) goes
    on /tf_static once. Intermediate sweeps (``annotated`` False) get no detection array.
    """
    count = 0
    base_from_lidar = np.eye(4) if base_from_lidar is None else base_from_lidar
    lidar_from_base = np.linalg.inv(base_from_lidar)
    with BagWriter(output, storage=storage) as writer:
        for frame in tqdm(frames, total=total, unit="frame", disable=not progress, desc="writing bag"):
            if frame.pose is not None:
                if count == 0:
                    writer.write_transforms("/tf_static", frame.stamp_ns, [(BASE_FRAME, frame_id, base_from_lidar)])
                writer.write_transforms("/tf", frame.stamp_ns,
                                        [(fixed_frame, BASE_FRAME, frame.pose @ lidar_from_base)])
                writer.write_odometry(odom_topic, frame.stamp_ns, fixed_frame, frame_id, frame.pose)
            writer.write_cloud(cloud_topic, frame.stamp_ns, frame_id, frame.points, frame.field_names)
            if frame.annotated:
                writer.write_detections(detections_topic, frame.stamp_ns, frame_id, frame.boxes.centers,
                                        frame.boxes.sizes, frame.boxes.quaternions, frame.ids, frame.labels)
            count += 1
    return count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blendclip-bag-from-nuscenes",
        description=(
            "Write a rosbag2 (MCAP or sqlite3) of LiDAR keyframes and their annotated boxes from a\n"
            "nuScenes-format dataset (through the nuscenes-devkit) or an mmdet3d info file.\n\n"
            "  clouds:     sensor_msgs/PointCloud2, float32 fields x, y, z, intensity, ring (+ time)\n"
            "  detections: vision_msgs/Detection3DArray, boxes in the LiDAR frame, size = [l, w, h],\n"
            "              id = instance token, one hypothesis = category name with score 1.0\n"
            "Both share the stamp (the LiDAR timestamp) and frame_id; the bag's log time is the stamp.\n"
            "Bad input: one line on stderr and exit code 2."),
        epilog="examples:\n"
               "  blendclip-bag-from-nuscenes out_bag --dataroot /data/nuscenes --version v1.0-mini \\\n"
               "      --scene scene-0061 --sweeps 10\n"
               "  blendclip-bag-from-nuscenes sweep_bag --mmdet3d-info demo/n015-...pkl --repeat 50 --period 0.1\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="bag folder to create (must not exist)")
    source = parser.add_argument_group("source (exactly one of --dataroot, --mmdet3d-info)")
    source.add_argument("--dataroot", type=Path, help="nuScenes-format dataset root (holds VERSION/*.json)")
    source.add_argument("--version", default="v1.0-mini", help="table folder under --dataroot (default: %(default)s)")
    source.add_argument("--scene", help="only this scene (by name, e.g. scene-0061); default: every scene")
    source.add_argument("--sweeps", type=int, default=1,
                        help="LiDAR sweeps per cloud, the keyframe and its predecessors, ego-motion compensated "
                             "into the keyframe's LiDAR frame (nuScenes only). With N > 1 the cloud gets a "
                             "6th float32 field 'time' = seconds the sweep is older than the keyframe "
                             "(default: %(default)s = keyframe file unchanged)")
    source.add_argument("--all-sweeps", action="store_true",
                        help="also write the LiDAR sweeps between keyframes (20 Hz in nuScenes) as clouds "
                             "without detections, for the node's accumulate.sweeps (nuScenes only)")
    source.add_argument("--min-distance", type=float, default=1.0,
                        help="with --sweeps > 1, drop points closer than this in both x and y, as the devkit "
                             "does (m, default: %(default)s)")
    source.add_argument("--mmdet3d-info", type=Path,
                        help="mmdet3d v1.1 info .pkl (its .pcd.bin beside it); box ids are '<token>_<index>'")
    output = parser.add_argument_group("output")
    output.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="default: %(default)s")
    output.add_argument("--frame-id", default=DEFAULT_FRAME_ID, help="header frame_id (default: %(default)s)")
    output.add_argument("--cloud-topic", default=DEFAULT_CLOUD_TOPIC, help="default: %(default)s")
    output.add_argument("--detections-topic", default=DEFAULT_DETECTIONS_TOPIC, help="default: %(default)s")
    output.add_argument("--odom-topic", default=DEFAULT_ODOM_TOPIC,
                        help="nav_msgs/Odometry of the LiDAR frame, nuScenes only (default: %(default)s)")
    output.add_argument("--fixed-frame", default=DEFAULT_FIXED_FRAME,
                        help="name of the nuScenes global frame in odometry and /tf (default: %(default)s, "
                             "the classifier's accumulate.fixed_frame)")
    output.add_argument("--repeat", type=int, default=1,
                        help="write the frame sequence K times with increasing stamps (default: %(default)s)")
    output.add_argument("--period", type=float, default=0.1,
                        help="with --repeat: seconds from the end of one pass to the start of the next, "
                             "i.e. the frame period when the source has one frame (default: %(default)s)")
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _check(args: argparse.Namespace) -> None:
    if (args.dataroot is None) == (args.mmdet3d_info is None):
        raise ConfigError("source: give exactly one of --dataroot and --mmdet3d-info")
    if args.mmdet3d_info is not None and (args.sweeps != 1 or args.scene is not None or args.all_sweeps):
        raise ConfigError("--sweeps/--scene/--all-sweeps: only available with --dataroot (the info file has no "
                          "sweeps)")
    if args.all_sweeps and args.sweeps != 1:
        raise ConfigError("--all-sweeps: write single sweeps (--sweeps 1) and let the node accumulate them")
    if args.sweeps < 1:
        raise ConfigError(f"--sweeps: must be at least 1, got {args.sweeps}")
    if args.min_distance < 0:
        raise ConfigError(f"--min-distance: must be non-negative, got {args.min_distance}")
    if args.output.exists():
        raise ConfigError(f"output: {args.output} already exists")
    for name in ("cloud_topic", "detections_topic", "odom_topic"):
        if not getattr(args, name).startswith("/"):
            raise ConfigError(f"--{name.replace('_', '-')}: topic must be absolute (start with '/')")
    if len({args.cloud_topic, args.detections_topic, args.odom_topic}) < 3:
        raise ConfigError("--cloud-topic/--detections-topic/--odom-topic: must differ")
    if not args.frame_id or not args.fixed_frame:
        raise ConfigError("--frame-id/--fixed-frame: must not be empty")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (2 with one line on stderr for bad input)."""
    args = _parser().parse_args(argv)
    created_before = args.output.exists()
    try:
        _check(args)
        if args.dataroot is not None:
            nusc = open_nuscenes(args.dataroot, args.version)
            tokens = sample_tokens(nusc, args.scene)
            source = lambda: nuscenes_frames(nusc, tokens, args.sweeps, args.min_distance,  # noqa: E731
                                             args.all_sweeps)
            per_pass, mount = len(tokens), lidar_mount(nusc, tokens[0])
        else:
            per_pass, mount = mmdet3d_frame_count(args.mmdet3d_info), None
            source = lambda: mmdet3d_frames(args.mmdet3d_info)  # noqa: E731
        count = write_annotated_bag(
            repeated(source, args.repeat, args.period), args.output, storage=args.storage,
            frame_id=args.frame_id, cloud_topic=args.cloud_topic, detections_topic=args.detections_topic,
            odom_topic=args.odom_topic, fixed_frame=args.fixed_frame, base_from_lidar=mount,
            total=None if args.all_sweeps else per_pass * args.repeat, progress=not args.quiet)
    except (BlendClipError, WriterError) as exc:
        if args.output.is_dir() and not created_before:
            shutil.rmtree(args.output)  # a partial bag of ours, never a folder that existed before
        print(f"blendclip-bag-from-nuscenes: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {count} clouds to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
