# Source this (bash) to run project processes: library path, ament prefix, loopback-only
# DDS discovery and the Fast DDS shared-memory profile. The variables themselves are defined
# in one place, blendclip_ros/environment.py; this file only exports them.
_blendclip_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV="${BLENDCLIP_VENV:-$_blendclip_root/.venv}"
export PATH="$VIRTUAL_ENV/bin:$PATH"
eval "$("$VIRTUAL_ENV/bin/python" -S "$_blendclip_root/blendclip_ros/environment.py" --shell)"
unset _blendclip_root
