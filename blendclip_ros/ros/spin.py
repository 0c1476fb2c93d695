"""Spin a node until the process is asked to stop, then clean up (shared by the console scripts)."""

from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


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
        node.destroy_node()
        rclpy.try_shutdown()
