"""Make an editable install of blendclip_ros visible to ``ros2 launch`` and ``ros2 pkg``.

An editable (``pip install -e``) install writes no ``data_files``, so the ament index has no
entry for the package and ``share/blendclip_ros`` is missing. This links into a prefix (the
venv) what colcon would install there, taken from setup.py itself: every ``data_files`` entry
(ament index marker, package.xml, launch and config files, bundled data) as a symlink to the
source file, and every console script under ``lib/blendclip_ros/`` (setup.cfg's install dir).
Symlinks keep source edits live, as ``colcon build --symlink-install`` does.

    python scripts/ament_overlay.py PREFIX
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]


def setup_arguments() -> dict:
    """The keyword arguments setup.py passes to ``setup()`` (setup.py itself is not changed)."""
    captured: dict = {}
    cwd = Path.cwd()
    os.chdir(ROOT)  # setup.py's globs are relative to the repository root
    try:
        with mock.patch("setuptools.setup", side_effect=lambda **kwargs: captured.update(kwargs)):
            runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    finally:
        os.chdir(cwd)
    return captured


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def overlay(prefix: Path) -> list[Path]:
    """Create the links under ``prefix``; returns them. Stale links of earlier runs are removed."""
    args = setup_arguments()
    package = args["name"]
    for owned in (prefix / "share" / package, prefix / "lib" / package):
        shutil.rmtree(owned, ignore_errors=True)
    links = []
    for destination, sources in args["data_files"]:
        for source in sources:
            link = prefix / destination / Path(source).name
            _link(ROOT / source, link)
            links.append(link)
    for line in args["entry_points"]["console_scripts"]:
        name = line.split("=", 1)[0].strip()
        script = prefix / "bin" / name
        if not script.is_file():
            raise SystemExit(f"ament_overlay: console script {script} missing (is the package installed?)")
        link = prefix / "lib" / package / name
        _link(script, link)
        links.append(link)
    return links


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    made = overlay(Path(sys.argv[1]).resolve())
    print(f"ament overlay: {len(made)} links in {sys.argv[1]} (share/ and lib/ of the package)")
