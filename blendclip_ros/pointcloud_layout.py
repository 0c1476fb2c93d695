"""PointCloud2 memory layout as numpy dtypes, shared by the ROS layer and the bag tools.

Works on any object with the PointCloud2 attributes (rclpy messages, ``rosbags``
dataclasses), so it needs no rclpy. Field datatypes follow ``sensor_msgs/PointField``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import MessageFormatError

# sensor_msgs/PointField datatype constants -> numpy base type.
POINTFIELD_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.int8),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int16),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int32),
    6: np.dtype(np.uint32),
    7: np.dtype(np.float32),
    8: np.dtype(np.float64),
}
FLOAT32 = 7


@dataclass(frozen=True)
class FieldSpec:
    """One PointField: name, byte offset, datatype constant and element count."""

    name: str
    offset: int
    datatype: int
    count: int = 1


def fields_dtype(fields: Sequence[Any], point_step: int, is_bigendian: bool) -> np.dtype:
    """Build the structured dtype of one point (``itemsize == point_step``).

    Raises MessageFormatError for unknown datatypes, duplicate names, zero counts and
    fields that overrun ``point_step``.
    """
    if point_step <= 0:
        raise MessageFormatError(f"point_step: must be positive, got {point_step}")
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    for i, field in enumerate(fields):
        name, datatype, count, offset = field.name, int(field.datatype), int(field.count), int(field.offset)
        base = POINTFIELD_DTYPES.get(datatype)
        if base is None:
            raise MessageFormatError(f"fields[{i}] ({name!r}).datatype: unknown datatype {datatype}")
        if name in names:
            raise MessageFormatError(f"fields[{i}].name: duplicate field {name!r}")
        if count < 1:
            count = 1  # count 0 is seen in the wild and means a single element
        if offset < 0 or offset + base.itemsize * count > point_step:
            raise MessageFormatError(
                f"fields[{i}] ({name!r}).offset: {offset} + {base.itemsize * count} bytes overruns "
                f"point_step {point_step}")
        names.append(name)
        formats.append((base.newbyteorder(order), (count,)) if count > 1 else base.newbyteorder(order))
        offsets.append(offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def float32_fields(names: Sequence[str]) -> list[FieldSpec]:
    """Packed float32 fields (offsets 0, 4, 8, ...) for an ``(N, len(names))`` float32 array."""
    return [FieldSpec(name, 4 * i, FLOAT32, 1) for i, name in enumerate(names)]
