"""Point-file and BOXES.json readers, on the real nuScenes/KITTI files and PCDs written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blendclip_ros.errors import PointFileError
from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.files import load_boxes_json, load_points

NUSCENES_BIN = "mmdet3d/demo/data/nuscenes/n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"
KITTI_BIN = "mmdet3d/demo/data/kitti/000008.bin"


def write_pcd(path: Path, header: dict[str, str], data: bytes | str, mode: str) -> Path:
    """A PCD file written field by field (independent of the reader)."""
    lines = [f"{key} {value}" for key, value in header.items()] + [f"DATA {mode}"]
    body = data.encode("ascii") if isinstance(data, str) else data
    path.write_bytes(("# .PCD v0.7\n" + "\n".join(lines) + "\n").encode("ascii") + body)
    return path


def pcd_header(fields: str, size: str, type_: str, count: str, n: int) -> dict[str, str]:
    return {"VERSION": "0.7", "FIELDS": fields, "SIZE": size, "TYPE": type_, "COUNT": count,
            "WIDTH": str(n), "HEIGHT": "1", "VIEWPOINT": "0 0 0 1 0 0 0", "POINTS": str(n)}


# ----------------------------------------------------------------------------- real files


def test_nuscenes_pcd_bin_defaults_to_five_columns(shared_data, nuscenes_frame):
    points = load_points(shared_data / NUSCENES_BIN)
    assert points.shape == (34688, 5) and points.dtype == np.float32
    np.testing.assert_array_equal(points, nuscenes_frame.points)
    assert set(np.unique(points[:, 4])) <= set(range(32))  # ring index column
    assert 0 <= points[:, 3].min() and points[:, 3].max() <= 255


def test_kitti_bin_defaults_to_four_columns(shared_data):
    points = load_points(shared_data / KITTI_BIN)
    assert points.shape == (17238, 4)
    assert np.isfinite(points).all()
    assert 0 <= points[:, 3].min() and points[:, 3].max() <= 1  # reflectance
    assert points[:, 0].min() > 0  # cropped to the forward camera view
    with pytest.raises(PointFileError, match="point_dims"):
        load_points(shared_data / KITTI_BIN, point_dims=5)  # 68,952 floats: not rows of 5


def test_explicit_point_dims_and_npy(tmp_path, shared_data):
    nus = load_points(shared_data / NUSCENES_BIN)
    raw = tmp_path / "cloud.bin"
    nus.tofile(raw)
    np.testing.assert_array_equal(load_points(raw, point_dims=5), nus)
    with pytest.raises(PointFileError, match="point_dims"):
        load_points(raw, point_dims=2)
    npy = tmp_path / "cloud.npy"
    np.save(npy, nus[:, :4].astype(np.float64))
    np.testing.assert_array_equal(load_points(npy), nus[:, :4])
    with pytest.raises(PointFileError, match="point_dims is 5"):
        load_points(npy, point_dims=5)


# ----------------------------------------------------------------------------- pcd


def test_binary_pcd_with_mixed_types_counts_and_padding(tmp_path):
    n = 7
    dtype = np.dtype([("intensity", "<u2"), ("x", "<f4"), ("y", "<f4"), ("z", "<f8"),
                      ("_", "u1", (3,)), ("normal", "<f4", (2,)), ("ring", "<i1")])
    rng = np.random.default_rng(0)
    records = np.zeros(n, dtype=dtype)
    for name in ("x", "y", "z"):
        records[name] = rng.normal(size=n)
    records["intensity"] = rng.integers(0, 60000, n)
    records["normal"] = rng.normal(size=(n, 2))
    records["ring"] = rng.integers(-5, 30, n)
    header = pcd_header("intensity x y z _ normal ring", "2 4 4 8 1 4 1", "U F F F U F I",
                        "1 1 1 1 3 2 1", n)
    points = load_points(write_pcd(tmp_path / "a.pcd", header, records.tobytes(), "binary"))
    expected = np.column_stack([records["x"], records["y"], records["z"], records["intensity"],
                                records["normal"], records["ring"]]).astype(np.float32)
    np.testing.assert_array_equal(points, expected)


def test_ascii_pcd_without_count_line_and_with_nan(tmp_path):
    header = pcd_header("x y z rgb", "4 4 4 4", "F F F F", "", 3)
    del header["COUNT"]
    text = "1 2 3 0.5\n-1.5 nan 2 7\n4e1 0 -0 1\n"
    points = load_points(write_pcd(tmp_path / "b.pcd", header, text, "ascii"))
    np.testing.assert_array_equal(points, np.array([[1, 2, 3, 0.5], [-1.5, np.nan, 2, 7],
                                                    [40, 0, 0, 1]], dtype=np.float32))


def test_real_sweep_round_trips_through_ascii_and_binary_pcd(tmp_path, nuscenes_frame):
    points = nuscenes_frame.points
    header = pcd_header("x y z intensity ring", "4 4 4 4 4", "F F F F F", "1 1 1 1 1", len(points))
    binary = write_pcd(tmp_path / "s.pcd", header, points.astype("<f4").tobytes(), "binary")
    np.testing.assert_array_equal(load_points(binary), points)
    text = "\n".join(" ".join(repr(float(v)) for v in row) for row in points[:500])
    header = pcd_header("x y z intensity ring", "4 4 4 4 4", "F F F F F", "1 1 1 1 1", 500)
    np.testing.assert_array_equal(load_points(write_pcd(tmp_path / "t.pcd", header, text, "ascii")),
                                  points[:500])


@pytest.mark.parametrize(
    ("change", "mode", "message"),
    [
        ({}, "binary_compressed", "binary_compressed is not supported"),
        ({}, "ascii", "ascii data has 5 values, expected POINTS 2 x 3"),
        ({"POINTS": "3"}, "binary", "POINTS 3 != WIDTH 2 x HEIGHT 1"),
        ({"FIELDS": "x y w"}, "binary", "no 'z' field"),
        ({"TYPE": "F F"}, "binary", "TYPE has 2 entries for 3 FIELDS"),
        ({"SIZE": "4 4 3"}, "binary", "unsupported TYPE/SIZE/COUNT F/3/1"),
        ({"WIDTH": "two"}, "binary", "must be integers"),
        ({}, "binary", "has 20 bytes, expected POINTS 2 x 12"),
        ({}, "lzf", "must be ascii or binary"),
    ],
)
def test_bad_pcd_files_name_the_problem(tmp_path, change, mode, message):
    header = pcd_header("x y z", "4 4 4", "F F F", "1 1 1", 2)
    header.update(change)
    data = "1 2 3\n4 5\n" if mode == "ascii" else bytes(20)
    path = write_pcd(tmp_path / "bad.pcd", header, data, mode)
    with pytest.raises(PointFileError, match=message) as info:
        load_points(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_point_files(tmp_path):
    with pytest.raises(PointFileError, match="no such file"):
        load_points(tmp_path / "missing.bin")
    (tmp_path / "c.xyz").write_text("1 2 3\n")
    with pytest.raises(PointFileError, match="unknown point file type"):
        load_points(tmp_path / "c.xyz")
    np.save(tmp_path / "flat.npy", np.zeros(9, dtype=np.float32))
    with pytest.raises(PointFileError, match=r"\(N, >=3\)"):
        load_points(tmp_path / "flat.npy")
    np.save(tmp_path / "obj.npy", np.array([[1, "a", None]], dtype=object), allow_pickle=True)
    with pytest.raises(PointFileError, match="obj.npy"):
        load_points(tmp_path / "obj.npy")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(PointFileError, match="broken.npy"):
        load_points(tmp_path / "broken.npy")
    (tmp_path / "nohdr.pcd").write_bytes(b"FIELDS x y z")
    with pytest.raises(PointFileError, match="no DATA line"):
        load_points(tmp_path / "nohdr.pcd")


# ----------------------------------------------------------------------------- boxes json


def test_boxes_json_yaw_and_quaternion_forms(tmp_path):
    entries = [
        {"id": "car-1", "center": [10, -2, 0.8], "size": [4.5, 1.9, 1.6], "yaw": 0.5},
        {"center": [3.5, 1, 0.5], "size": [0.6, 0.6, 1.8], "rotation": [0, 0, 0.6, 0.8]},
    ]
    path = tmp_path / "BOXES.json"
    path.write_text(json.dumps(entries))
    ids, boxes = load_boxes_json(path)
    assert ids == ["car-1", "1"]
    expected = Boxes.from_quaternions([[10, -2, 0.8], [3.5, 1, 0.5]], [[4.5, 1.9, 1.6], [0.6, 0.6, 1.8]],
                                      [[0, 0, np.sin(0.25), np.cos(0.25)], [0, 0, 0.6, 0.8]])
    for name in ("centers", "sizes", "quaternions"):
        np.testing.assert_allclose(getattr(boxes, name), getattr(expected, name), atol=1e-15)
    np.testing.assert_allclose(boxes.yaws[0], 0.5)
    path.write_text("[]")
    ids, boxes = load_boxes_json(path)
    assert ids == [] and len(boxes) == 0


def test_boxes_json_matches_the_mmdet3d_boxes_of_the_real_frame(tmp_path, nuscenes_frame):
    rows = nuscenes_frame.boxes
    entries = [{"id": f"b{i}", "center": r[:3].tolist(), "size": r[3:6].tolist(), "yaw": float(r[6])}
               for i, r in enumerate(rows)]
    (tmp_path / "BOXES.json").write_text(json.dumps(entries))
    ids, boxes = load_boxes_json(tmp_path / "BOXES.json")
    reference = Boxes.from_mmdet3d(rows)
    assert len(ids) == 69
    np.testing.assert_array_equal(boxes.centers, reference.centers)
    np.testing.assert_allclose(boxes.quaternions, reference.quaternions, atol=1e-15)


GOOD = {"id": "a", "center": [0, 0, 0], "size": [1, 1, 1], "yaw": 0.0}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"boxes": []}, "expected a JSON list of boxes"),
        ([GOOD, 5], "box 1: expected an object"),
        ([{**GOOD, "center": [0, 0]}], "box 0 \\(id 'a'\\) field 'center': expected 3 numbers"),
        ([{**GOOD, "size": [1, 0, 1]}], "field 'size': extents must be > 0"),
        ([{**GOOD, "size": [1, "2", 1]}], "field 'size': expected 3 numbers"),
        ([{**GOOD, "center": [0, float("nan"), 0]}], "field 'center': values must be finite"),
        ([{k: v for k, v in GOOD.items() if k != "size"}], "field 'size': missing"),
        ([{**GOOD, "rotation": [0, 0, 0, 1]}], "give exactly one of them"),
        ([{k: v for k, v in GOOD.items() if k != "yaw"}], "give exactly one of them"),
        ([{**GOOD, "yaw": "north"}], "field 'yaw': expected a finite number"),
        ([{"id": "q", "center": [0, 0, 0], "size": [1, 1, 1], "rotation": [0, 0, 0, 0]}],
         "field 'rotation': the zero quaternion"),
        ([{**GOOD, "id": 7}], "box 0 field 'id': expected a string"),
        ([GOOD, GOOD], "box 1 field 'id': duplicate id 'a'"),
        ([{**GOOD, "sizes": [1, 1, 1]}], "unknown field 'sizes'"),
    ],
)
def test_bad_boxes_name_file_box_and_field(tmp_path, entries, message):
    path = tmp_path / "BOXES.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(PointFileError, match=message) as info:
        load_boxes_json(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_boxes_json_unreadable_or_invalid(tmp_path):
    with pytest.raises(PointFileError, match="cannot read boxes file"):
        load_boxes_json(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("[{,]")
    with pytest.raises(PointFileError, match="not valid JSON"):
        load_boxes_json(tmp_path / "x.json")
