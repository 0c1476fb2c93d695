"""The main job: the bundled bag through the classifier node with the bundled model (separate processes)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import pytest
import yaml

pytestmark = pytest.mark.ros

NODE = "blendclip_demo_classifier"
SIM_CLASSES = {"car", "truck", "bus", "trailer", "construction vehicle", "other vehicle", "motorcycle", "bicycle",
               "pedestrian", "animal", "traffic cone", "barrier", "traffic sign"}


def box_tables(stdout: str) -> list[list[dict]]:
    """The per-box table under every frame line, parsed by the header's column positions."""
    tables = []
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("frame "):
            continue
        header = lines[i + 1]
        true_at, label_at, score_at = (header.index(name) for name in ("true class", "label", "score"))
        rows = []
        for row in lines[i + 2:]:
            if not row.startswith("  "):
                break
            score, points = row[score_at:].split()
            rows.append({"id": row[2:true_at].strip(), "true": row[true_at:label_at].strip(),
                         "label": row[label_at:score_at].strip(), "score": float(score), "points": int(points)})
        tables.append(rows)
    return tables


def test_demo_labels_every_frame_prints_box_tables_and_records_mcap(ros_env, tmp_path):
    record = tmp_path / "labelled"
    # A quarter of the bag's rate: on a loaded machine the node would drop frames it cannot take in time.
    result = subprocess.run([sys.executable, "-m", "blendclip_ros.demo", "--record", str(record), "--rate", "0.25"],
                            env=ros_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    frames = re.findall(r"^frame [\d.]+: (\d+) points, (\d+) boxes -> ", result.stdout, re.MULTILINE)
    assert len(frames) == 6, result.stdout
    assert all(int(points) > 30_000 and int(boxes) >= 30 for points, boxes in frames)
    agree, total = map(int, re.search(r"agrees with the bag's ground truth on (\d+)/(\d+)", result.stdout).groups())
    assert total >= 100
    assert agree / total > 0.3  # 13 classes: chance is under 8 %; the bundled model scores about 50 %

    tables = box_tables(result.stdout)
    assert [len(t) for t in tables] == [int(boxes) for _, boxes in frames]
    rows = [row for table in tables for row in table]
    assert {r["true"] for r in rows} <= SIM_CLASSES and {r["label"] for r in rows} <= SIM_CLASSES | {"unknown"}
    # The demo counts points itself; the node (min_points 5, no margin) encodes exactly the boxes with >= 5.
    assert all((r["label"] == "unknown") == (r["points"] < 5) for r in rows), [r for r in rows if r["points"] < 5]
    assert sum(r["label"] == r["true"] for r in rows) == agree
    assert all(0.0 < r["score"] <= 1.0 for r in rows if r["label"] != "unknown")

    # The recording: a rosbag2 folder (ros2 bag) holding one MCAP file (Foxglove).
    from blendclip_ros.bags.reader import decode, read_bag

    meta = yaml.safe_load((record / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "mcap" and meta["relative_file_paths"] == ["labelled.mcap"]
    messages = list(read_bag(record))
    counts = Counter(m.topic for m in messages)
    assert counts["/lidar/points"] == counts[f"/{NODE}/detections"] == counts[f"/{NODE}/markers"] == 6, counts
    assert [m.log_time_ns for m in messages] == sorted(m.log_time_ns for m in messages)
    labelled = [decode(m) for m in messages if m.topic == f"/{NODE}/detections"]
    for msg, table in zip(labelled, tables):
        assert [d.id for d in msg.detections] == [r["id"] for r in table]
        assert [d.results[0].hypothesis.class_id for d in msg.detections] == [r["label"] for r in table]

    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with (record / "labelled.mcap").open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        schemas = {s.name: s.encoding for s in reader.get_summary().schemas.values()}
        assert schemas == {"sensor_msgs/msg/PointCloud2": "ros2msg", "vision_msgs/msg/Detection3DArray": "ros2msg",
                           "visualization_msgs/msg/MarkerArray": "ros2msg"}
        decoded = [(channel.topic, msg) for _, channel, _, msg in reader.iter_decoded_messages()]
    clouds = [msg for topic, msg in decoded if topic == "/lidar/points"]
    assert [c.width for c in clouds] == [int(points) for points, _ in frames]
    markers = [msg for topic, msg in decoded if topic == f"/{NODE}/markers"]
    assert len(markers[0].markers) == 1 + 2 * len(tables[0])  # DELETEALL, then a cube and a text per box


def test_demo_rejects_an_existing_record_folder(tmp_path, ros_env):
    result = subprocess.run([sys.executable, "-m", "blendclip_ros.demo", "--record", str(tmp_path)], env=ros_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "already exists" in result.stderr
