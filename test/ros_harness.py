"""Test-side helpers for talking to a classifier node process over real DDS."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter

REPO = Path(__file__).resolve().parents[1]
NODE_NAME = "blendclip_classifier"


def start_classifier(env: dict[str, str], *ros_args: str, name: str = NODE_NAME) -> subprocess.Popen:
    """Start the node as its own process with the shipped parameter file plus overrides."""
    cmd = [sys.executable, "-m", "blendclip_ros.ros.classifier_node", "--ros-args",
           "--params-file", str(REPO / "config" / "classify.yaml"), "-r", f"__node:={name}", *ros_args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(process: subprocess.Popen) -> str:
    """Interrupt a node process and return its output."""
    if process.poll() is None:
        process.send_signal(subprocess.signal.SIGINT)
    try:
        out, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out or ""


def spin_until(node: Node, condition: Callable[[], bool], timeout: float, process: subprocess.Popen | None = None,
               ) -> bool:
    """Spin ``node`` until ``condition()`` holds; False on timeout or when ``process`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process is not None and process.poll() is not None:
            return condition()
        rclpy.spin_once(node, timeout_sec=0.05)
    return condition()


def set_parameters(node: Node, target: str, params: list[Parameter], timeout: float = 10.0) -> list:
    """Call ``target``'s set_parameters service; returns the SetParametersResult list."""
    client = node.create_client(SetParameters, f"/{target}/set_parameters")
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"/{target}/set_parameters not available")
        request = SetParameters.Request(parameters=[ParameterMsg(name=p.name, value=p.get_parameter_value())
                                                    for p in params])
        future = client.call_async(request)
        spin_until(node, future.done, timeout)
        return future.result().results
    finally:
        node.destroy_client(client)
