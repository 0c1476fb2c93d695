"""Read rosbag2 bags (MCAP or sqlite3, ours or ``ros2 bag``'s) as raw CDR messages."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rosbags.highlevel import AnyReader

from .typestore import typestore


@dataclass(frozen=True)
class BagMessage:
    """One recorded message: topic, type name, log time (ns) and its CDR bytes."""

    topic: str
    msgtype: str
    log_time_ns: int
    cdr: bytes


def read_bag(path: Path | str, topics: Sequence[str] | None = None) -> Iterator[BagMessage]:
    """Yield the messages of a bag in log-time order, optionally only some topics."""
    with AnyReader([Path(path)], default_typestore=typestore()) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        for connection, timestamp, raw in reader.messages(connections=connections):
            yield BagMessage(connection.topic, connection.msgtype, int(timestamp), bytes(raw))


def decode(message: BagMessage) -> object:
    """Deserialise a bag message into a ``rosbags`` dataclass (for inspection and tests)."""
    return typestore().deserialize_cdr(message.cdr, message.msgtype)
