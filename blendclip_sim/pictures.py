"""PNG pictures (matplotlib, Agg): a scene in bird's-eye view, and one class in both domains."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .bag_export import frame_boxes  # noqa: E402
from .lidar import hdl32e  # noqa: E402
from .objects import make_object, object_seed  # noqa: E402
from .object_sets import lidar_view  # noqa: E402
from .scene import Frame  # noqa: E402
from .surface import sample_surface  # noqa: E402

CLASS_COLOURS = {
    "car": "#ff9e00", "truck": "#ff6a00", "bus": "#ff3d3d", "trailer": "#ffd000", "construction vehicle": "#e0e000",
    "other vehicle": "#ffb080", "motorcycle": "#ff40c0", "bicycle": "#d070ff", "pedestrian": "#00c8ff",
    "animal": "#80ff80", "traffic cone": "#ff2020", "barrier": "#b0b0b0", "traffic sign": "#4080ff",
}


def _corners(centre: np.ndarray, size: np.ndarray, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1], [1, 1]]) * size[:2] / 2
    return local @ np.array([[c, s], [-s, c]]) + centre[:2]


def bev_picture(frame: Frame, path: Path | str, extent: float = 40.0, title: str = "") -> Path:
    """Bird's-eye view of one sweep (sensor frame, coloured by height) with labelled ground-truth boxes."""
    pts = frame.points
    keep = (np.abs(pts[:, 0]) < extent) & (np.abs(pts[:, 1]) < extent)
    fig, ax = plt.subplots(figsize=(9, 9), dpi=110)
    fig.patch.set_facecolor("black")
    ax.set_facecolor("black")
    ax.scatter(pts[keep, 0], pts[keep, 1], c=np.clip(pts[keep, 2], -2.0, 2.5), s=1.2, cmap="viridis", linewidths=0)
    centres, sizes, quats, _, labels = frame_boxes(frame, min_points=1)
    yaws = 2 * np.arctan2(quats[:, 2], quats[:, 3])
    for c, sz, yaw, label in zip(centres, sizes, yaws, labels):
        if np.abs(c[:2]).max() > extent:
            continue
        col = CLASS_COLOURS.get(label, "white")
        corners = _corners(c, sz, yaw)
        ax.plot(corners[:, 0], corners[:, 1], color=col, lw=1.2)
        nose = c[:2] + np.array([np.cos(yaw), np.sin(yaw)]) * sz[0] / 2
        ax.plot([c[0], nose[0]], [c[1], nose[1]], color=col, lw=1.0)
        ax.text(c[0], c[1] + sz[1] / 2 + 0.6, label, color=col, fontsize=6.5, ha="center")
    ax.plot([0], [0], marker=(3, 0, -90), color="red", ms=10)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.tick_params(colors="grey", labelsize=7)
    ax.set_xlabel("x (m, forward)", color="grey")
    ax.set_ylabel("y (m, left)", color="grey")
    ax.set_title(title or f"simulated HDL-32E sweep, {len(pts):,} points, {len(labels)} boxes", color="white")
    return _save(fig, path)


def _scatter_views(ax, pts: np.ndarray, size: np.ndarray, colour: str, title: str) -> None:
    ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=1.5 if len(pts) > 500 else 6, c=colour, depthshade=True,
               linewidths=0)
    r = max(size) / 2
    ax.set_xlim(-r, r)
    ax.set_ylim(-r, r)
    ax.set_zlim(-r, r)
    ax.view_init(elev=22, azim=-60)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)


def gallery_picture(class_name: str, path: Path | str, n: int = 4, seed: int = 0, distances=(8.0, 15.0, 25.0, 40.0),
                    cad_points: int = 4096) -> Path:
    """The same ``n`` instances of a class as dense CAD clouds (top) and simulated LiDAR views (bottom)."""
    fig = plt.figure(figsize=(3.0 * n, 6.2), dpi=110)
    pattern = hdl32e()
    for i in range(n):
        obj = make_object(class_name, object_seed(seed, class_name, i))
        cad, _ = sample_surface(obj.mesh, cad_points, seed=i)
        _scatter_views(fig.add_subplot(2, n, i + 1, projection="3d"), cad, obj.size, "#1f77b4",
                       f"CAD, {cad_points} pts\n{obj.attributes.get('style', '')}")
        d = distances[i % len(distances)]
        rng = np.random.default_rng([seed, i])
        pts, occ = lidar_view(obj, d, float(rng.uniform(-np.pi, np.pi)), np.radians(-35.0), rng, pattern)
        _scatter_views(fig.add_subplot(2, n, n + i + 1, projection="3d"), pts, obj.size, "#d62728",
                       f"LiDAR at {d:.0f} m: {len(pts)} pts")
    fig.suptitle(f"{class_name}: synthetic CAD (top) vs simulated HDL-32E (bottom)", fontsize=11)
    return _save(fig, path)


def _save(fig, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, facecolor=fig.get_facecolor(), bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path
