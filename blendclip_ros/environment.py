"""The one place that defines the process environment for ROS 2 processes of this project.

Sets the library path for ROS 2 from PyPI wheels, ``AMENT_PREFIX_PATH``, loopback-only DDS
discovery, the Fast DDS shared-memory profile (large best-effort clouds are lost without
it) and offline model hubs. Values the user already set are kept.

This file is standalone (no package imports) so ``scripts/env.sh`` can run it with
``python -S environment.py --shell`` before anything else is importable.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

PROFILE_NAME = "fastdds_shm_16m.xml"
_FASTDDS_2_DISTROS = {"humble", "iron", "jazzy"}
_IN_PROCESS_KEYS = ("AMENT_PREFIX_PATH", "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE",
                    "FASTRTPS_DEFAULT_PROFILES_FILE", "HF_HUB_OFFLINE")


def fastdds_profile_path() -> Path:
    """The shipped Fast DDS profile: from the source tree, else from the install share dir."""
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "config" / PROFILE_NAME]
    candidates += [Path(p) / "share" / "blendclip_ros" / "config" / PROFILE_NAME
                   for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates.append(Path(sys.prefix) / "share" / "blendclip_ros" / "config" / PROFILE_NAME)
    for path in candidates:
        if path.is_file():
            return path
    return candidates[0]


def _prepend(value: str, existing: str | None) -> str:
    parts = [p for p in (existing or "").split(os.pathsep) if p]
    return os.pathsep.join([value] + [p for p in parts if p != value])


def ros_environment(base: Mapping[str, str] | None = None, prefix: Path | None = None) -> dict[str, str]:
    """Return ``base`` (default: ``os.environ``) updated with the project's ROS variables."""
    env = dict(os.environ if base is None else base)
    prefix = Path(prefix or env.get("VIRTUAL_ENV") or sys.prefix)
    wheel_libs = sorted(prefix.glob("lib/python3*/site-packages/ros_*.libs"))
    if wheel_libs:  # ROS 2 from PyPI wheels: do what their bootstrapper would, without re-exec
        ld = env.get("LD_LIBRARY_PATH")
        for lib in reversed([prefix / "lib", *wheel_libs]):
            ld = _prepend(str(lib), ld)
        env["LD_LIBRARY_PATH"] = ld
        env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"
    if (prefix / "share" / "ament_index").is_dir():
        env["AMENT_PREFIX_PATH"] = _prepend(str(prefix), env.get("AMENT_PREFIX_PATH"))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = str(fastdds_profile_path())
    if env.get("ROS_DISTRO", "") in _FASTDDS_2_DISTROS:
        env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", profile)
    else:
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", profile)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def apply_ros_environment() -> None:
    """Update this process's environment before rclpy is imported.

    The library path cannot change inside a running process; the wheels' bootstrapper or
    ``scripts/env.sh`` sets it before start-up.
    """
    env = ros_environment()
    for key in _IN_PROCESS_KEYS:
        if key in env:
            os.environ[key] = env[key]


def _shell_exports(env: Mapping[str, str]) -> str:
    changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(changed.items()))


if __name__ == "__main__":
    if sys.argv[1:] != ["--shell"]:
        sys.exit("usage: python environment.py --shell   (prints export lines for bash)")
    print(_shell_exports(ros_environment()))
