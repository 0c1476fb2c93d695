"""A ``rosbags`` type store for ROS 2 Kilted plus vision_msgs, registered from .msg files."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

_REPO_MSGS = Path(__file__).resolve().parents[2] / "msgs"


def vision_msgs_dir() -> Path:
    """The folder with vision_msgs ``.msg`` files: an installed package first, else ours."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        candidate = Path(prefix) / "share" / "vision_msgs" / "msg"
        if prefix and candidate.is_dir():
            return candidate
    return _REPO_MSGS / "vision_msgs" / "msg"


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """ROS 2 Kilted message types plus all vision_msgs messages."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for msg_file in sorted(vision_msgs_dir().glob("*.msg")):
        types.update(get_types_from_msg(msg_file.read_text(), f"vision_msgs/msg/{msg_file.stem}"))
    store.register(types)
    return store
