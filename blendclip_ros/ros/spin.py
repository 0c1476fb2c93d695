"""Spin a node until the process is asked to stop, then clean up (shared by the console scripts)."""

from __future__ import annotations

import signal
import threading

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def _ignore_further_interrupts() -> None:
    """Ignore SIGINT from here on: the stop is under way.

    A terminal's Ctrl-C reaches ``ros2 launch`` and the node alike, and launch signals the node
    again; a second SIGINT during cleanup would raise ``KeyboardInterrupt`` in it (a traceback),
    and one during the interpreter's teardown (seconds with torch loaded) would kill the process
    with the default action (exit -2). ``SIG_IGN`` is the one setting Python keeps through its
    teardown. Called again after rclpy's shutdown, which restores the handler rclpy replaced.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def spin_until_shutdown(node: Node) -> None:
    """Spin ``node`` until Ctrl-C or SIGTERM, then destroy it and shut rclpy down.

    A SIGTERM that lands while the executor is busy raises ``RuntimeError`` from the wait
    set; that is a normal shutdown when ``rclpy.ok()`` is already False.
    """
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        if rclpy.ok():
            raise
    finally:
        stop_quietly(node)


def stop_quietly(node: Node | None) -> None:
    """Destroy ``node`` (if any) and shut rclpy down, ignoring further Ctrl-C meanwhile."""
    _ignore_further_interrupts()
    if node is not None:
        node.destroy_node()
    rclpy.try_shutdown()
    _ignore_further_interrupts()
