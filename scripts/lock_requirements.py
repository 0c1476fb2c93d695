"""Write requirements/lock.txt from the current .venv (run with the venv's python).

Only pip-installed distributions (``.dist-info``) are pinned: the ROS wheels also carry
``.egg-info`` records of their bundled Python packages, and the cmake-built interface
packages (vision_msgs) leave one too; neither can be installed from an index.
"""

from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements" / "lock.txt"
HEADER = """# Every package of the environment, pinned. Top-level wishes are in requirements/*.in.
# Regenerate after changing them: .venv/bin/python scripts/lock_requirements.py
"""


def main() -> None:
    pins = {}
    for dist in metadata.distributions():
        path = str(getattr(dist, "_path", ""))
        name = dist.metadata["Name"]
        if not path.endswith(".dist-info") or name is None or name.lower() == "blendclip-ros":
            continue
        if (dist.read_text("direct_url.json") or "").find('"editable": true') >= 0:
            continue
        pins[name.lower()] = f"{name}=={dist.version}"
    LOCK.write_text(HEADER + "\n".join(pins[k] for k in sorted(pins)) + "\n")
    print(f"{LOCK}: {len(pins)} pins")


if __name__ == "__main__":
    main()
