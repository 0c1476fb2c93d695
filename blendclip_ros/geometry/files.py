"""Point files (.bin, .npy, ASCII/binary .pcd) and BOXES.json readers.

Every problem with a file becomes a :class:`PointFileError` whose one-line message names
the file and, for boxes, the box index/id and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import PointFileError
from .boxes import Boxes

BIN_DIMS = 4  # KITTI-style x, y, z, reflectance
PCD_BIN_DIMS = 5  # nuScenes *.pcd.bin: x, y, z, intensity, ring
_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4",
              ("I", 8): "i8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}
_BOX_KEYS = {"id", "center", "size", "yaw", "rotation"}


def load_points(path: str | Path, point_dims: int | None = None) -> np.ndarray:
    """Points of a ``.bin``, ``.npy`` or ``.pcd`` file as ``(N, D)`` float32, x, y, z first.

    ``.bin`` is raw little-endian float32 rows of ``point_dims`` columns (default 5 for
    ``*.pcd.bin`` as in nuScenes, else 4 as in KITTI). For ``.npy`` and ``.pcd`` the file
    defines the columns and ``point_dims``, if given, must match. PCD fields are reordered
    so that x, y, z come first, then the other fields in file order (padding ``_`` fields
    are dropped); ``binary_compressed`` PCD is not supported.
    """
    path = Path(path)
    if point_dims is not None and (
        isinstance(point_dims, bool) or not isinstance(point_dims, (int, np.integer)) or point_dims < 3
    ):
        raise PointFileError(f"{path}: point_dims must be an integer >= 3, got {point_dims!r}")
    if not path.is_file():
        raise PointFileError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(".bin"):
        dims = point_dims or (PCD_BIN_DIMS if name.endswith(".pcd.bin") else BIN_DIMS)
        points = _read_bin(path, int(dims))
    elif name.endswith(".npy"):
        points = _read_npy(path)
    elif name.endswith(".pcd"):
        points = _read_pcd(path)
    else:
        raise PointFileError(f"{path}: unknown point file type (expected .bin, .npy or .pcd)")
    if point_dims is not None and points.shape[1] != point_dims:
        raise PointFileError(f"{path}: has {points.shape[1]} columns, point_dims is {point_dims}")
    return points


def _read_bin(path: Path, dims: int) -> np.ndarray:
    raw = np.fromfile(path, dtype="<f4")
    if raw.size % dims:
        raise PointFileError(
            f"{path}: {path.stat().st_size} bytes is not a whole number of float32 rows of "
            f"{dims} columns (point_dims)"
        )
    return raw.reshape(-1, dims).astype(np.float32)


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PointFileError(f"{path}: not a readable .npy array ({exc})") from exc
    if array.ndim != 2 or array.shape[1] < 3:
        raise PointFileError(f"{path}: expected an (N, >=3) array, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise PointFileError(f"{path}: expected a real numeric array, got dtype {array.dtype}")
    return array.astype(np.float32)


def _read_pcd(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    header, position = {}, 0
    while "DATA" not in header:
        end = raw.find(b"\n", position)
        if end < 0:
            raise PointFileError(f"{path}: PCD header has no DATA line")
        line = raw[position:end].decode("ascii", errors="replace").strip()
        position = end + 1
        if line and not line.startswith("#"):
            key, *values = line.split()
            header[key.upper()] = values
    dtype, columns = _pcd_layout(path, header)
    count = _pcd_point_count(path, header)
    mode = header["DATA"][0].lower() if header["DATA"] else ""
    body = raw[position:]
    if mode == "ascii":
        try:
            values = np.array(body.decode("ascii").split(), dtype=np.float64)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PointFileError(f"{path}: PCD ascii data is not numeric ({exc})") from exc
        widths = [dtype[name].shape[0] if dtype[name].shape else 1 for name in dtype.names]
        if values.size != count * sum(widths):
            raise PointFileError(f"{path}: PCD ascii data has {values.size} values, expected "
                                 f"POINTS {count} x {sum(widths)}")
        first_column = dict(zip(dtype.names, np.cumsum([0] + widths[:-1])))
        index = [first_column[name] + k for name, k in columns]
        return values.reshape(count, sum(widths))[:, index].astype(np.float32)
    if mode == "binary":
        if len(body) != count * dtype.itemsize:
            raise PointFileError(f"{path}: PCD binary data has {len(body)} bytes, expected "
                                 f"POINTS {count} x {dtype.itemsize}")
        records = np.frombuffer(body, dtype=dtype, count=count)
        out = np.empty((count, len(columns)), dtype=np.float32)
        for j, (name, k) in enumerate(columns):
            field = records[name]
            out[:, j] = field[:, k] if field.ndim == 2 else field
        return out
    if mode == "binary_compressed":
        raise PointFileError(f"{path}: PCD DATA binary_compressed is not supported; save it as "
                             f"binary or ascii (e.g. pcl_convert_pcd_ascii_binary)")
    raise PointFileError(f"{path}: PCD DATA must be ascii or binary, got {' '.join(header['DATA'])!r}")


def _pcd_layout(path: Path, header: dict) -> tuple[np.dtype, list[tuple[str, int]]]:
    """Record dtype of one PCD point and the output columns as (field, component) pairs."""
    fields = header.get("FIELDS")
    if not fields:
        raise PointFileError(f"{path}: PCD header field FIELDS is missing")
    sizes = header.get("SIZE", [])
    types = header.get("TYPE", [])
    counts = header.get("COUNT", ["1"] * len(fields))
    for key, values in (("SIZE", sizes), ("TYPE", types), ("COUNT", counts)):
        if len(values) != len(fields):
            raise PointFileError(f"{path}: PCD header field {key} has {len(values)} entries for "
                                 f"{len(fields)} FIELDS")
    spec, other = [], []
    for position, (name, size, kind, count) in enumerate(zip(fields, sizes, types, counts)):
        try:
            code = _PCD_TYPES[(kind.upper(), int(size))]
            width = int(count)
            if width < 1:
                raise ValueError
        except (KeyError, ValueError) as exc:
            raise PointFileError(f"{path}: PCD field {name!r} has unsupported TYPE/SIZE/COUNT "
                                 f"{kind}/{size}/{count}") from exc
        key = f"{position}:{name}"  # unique even when names repeat (e.g. several '_')
        spec.append((key, "<" + code, (width,)) if width > 1 else (key, "<" + code))
        if name != "_":
            other.extend((key, k) for k in range(width))
    by_name = {key.split(":", 1)[1]: key for key, *_ in spec}
    missing = [axis for axis in ("x", "y", "z") if axis not in by_name]
    if missing:
        raise PointFileError(f"{path}: PCD FIELDS has no {missing[0]!r} field ({' '.join(fields)})")
    xyz = [by_name[axis] for axis in ("x", "y", "z")]
    columns = [(key, 0) for key in xyz] + [c for c in other if c[0] not in xyz]
    return np.dtype(spec), columns


def _pcd_point_count(path: Path, header: dict) -> int:
    try:
        width, height = int(header["WIDTH"][0]), int(header["HEIGHT"][0])
        points = int(header["POINTS"][0]) if "POINTS" in header else width * height
    except (KeyError, IndexError, ValueError) as exc:
        raise PointFileError(f"{path}: PCD header fields WIDTH/HEIGHT/POINTS must be integers") from exc
    if points != width * height or points < 0:
        raise PointFileError(f"{path}: PCD POINTS {points} != WIDTH {width} x HEIGHT {height}")
    return points


def load_boxes_json(path: str | Path) -> tuple[list[str], Boxes]:
    """Box ids and :class:`Boxes` from a JSON list of box objects.

    Each object has ``center`` [x, y, z] (m), ``size`` [sx, sy, sz] (full extents along the
    box axes, > 0), exactly one of ``yaw`` (rad, about +z) or ``rotation`` [qx, qy, qz, qw],
    and an optional string ``id`` (default: the box index as a string; ids must be unique).
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PointFileError(f"{path}: cannot read boxes file ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PointFileError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(entries, list):
        raise PointFileError(f"{path}: expected a JSON list of boxes, got {type(entries).__name__}")
    ids, centers, sizes, quaternions = [], [], [], []
    for index, entry in enumerate(entries):
        box_id, center, size, quaternion = _parse_box(path, index, entry)
        if box_id in ids:
            raise PointFileError(f"{path}: box {index} field 'id': duplicate id {box_id!r}")
        ids.append(box_id)
        centers.append(center)
        sizes.append(size)
        quaternions.append(quaternion)
    if not entries:
        return [], Boxes.empty()
    return ids, Boxes.from_quaternions(centers, sizes, quaternions)


def _parse_box(path: Path, index: int, entry: object) -> tuple[str, list, list, list]:
    where = f"{path}: box {index}"
    if not isinstance(entry, dict):
        raise PointFileError(f"{where}: expected an object, got {type(entry).__name__}")
    box_id = entry.get("id", str(index))
    if not isinstance(box_id, str):
        raise PointFileError(f"{where} field 'id': expected a string, got {box_id!r}")
    where = f"{path}: box {index} (id {box_id!r})"
    unknown = sorted(set(entry) - _BOX_KEYS)
    if unknown:
        raise PointFileError(f"{where}: unknown field {unknown[0]!r} (allowed: "
                             f"{', '.join(sorted(_BOX_KEYS))})")
    center = _numbers(where, entry, "center", 3)
    size = _numbers(where, entry, "size", 3)
    if min(size) <= 0:
        raise PointFileError(f"{where} field 'size': extents must be > 0, got {size}")
    if ("yaw" in entry) == ("rotation" in entry):
        raise PointFileError(f"{where} field 'yaw'/'rotation': give exactly one of them")
    if "yaw" in entry:
        yaw = entry["yaw"]
        if isinstance(yaw, bool) or not isinstance(yaw, (int, float)) or not math.isfinite(yaw):
            raise PointFileError(f"{where} field 'yaw': expected a finite number, got {yaw!r}")
        quaternion = [0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)]
    else:
        quaternion = _numbers(where, entry, "rotation", 4)
        if not any(quaternion):
            raise PointFileError(f"{where} field 'rotation': the zero quaternion is not a rotation")
    return box_id, center, size, quaternion


def _numbers(where: str, entry: dict, field: str, count: int) -> list[float]:
    """``entry[field]`` as ``count`` finite floats, else a PointFileError naming the field."""
    value = entry.get(field)
    if value is None:
        raise PointFileError(f"{where} field {field!r}: missing")
    if (
        not isinstance(value, list)
        or len(value) != count
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise PointFileError(f"{where} field {field!r}: expected {count} numbers, got {value!r}")
    if not all(math.isfinite(v) for v in value):
        raise PointFileError(f"{where} field {field!r}: values must be finite, got {value!r}")
    return [float(v) for v in value]
