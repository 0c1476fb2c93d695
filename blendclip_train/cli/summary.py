"""The one-line JSON summary that the batch CLIs (convert, embed) print on stdout."""

from __future__ import annotations

import json
from typing import Any


def print_summary(fields: dict[str, Any], objects: int, seconds: float) -> None:
    """Print ``fields`` plus the object count, wall time and throughput as one JSON line."""
    print(json.dumps({**fields, "objects": objects, "seconds": round(seconds, 3),
                      "objects_per_second": round(objects / max(seconds, 1e-9), 2)}))
