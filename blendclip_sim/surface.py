""""Synthetic CAD" clouds: dense, area-uniform sampling of a whole mesh surface (like ShapeNet/Objaverse)."""

from __future__ import annotations

import numpy as np

from blendclip_ros.errors import ConfigError
from .mesh import Mesh


def sample_surface(mesh: Mesh, n_points: int, seed: int | np.random.Generator = 0,
                   normal_noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n_points`` uniformly by area over the mesh.

    Returns ``(points, normals)``, both (n, 3) float32; with ``normal_noise`` > 0 every point is moved
    along its face normal by N(0, normal_noise) metres.
    """
    if n_points < 1:
        raise ConfigError(f"n_points: must be >= 1, got {n_points}")
    if normal_noise < 0:
        raise ConfigError(f"normal_noise: must be >= 0, got {normal_noise}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    tri = mesh.triangles()
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    total = area.sum()
    if not total > 0:
        raise ConfigError("mesh: has zero surface area")
    face = rng.choice(len(area), size=n_points, p=area / total)
    u, v = rng.random(n_points), rng.random(n_points)
    flip = u + v > 1.0  # fold the unit square onto the triangle: uniform barycentric coordinates
    u, v = np.where(flip, 1.0 - u, u), np.where(flip, 1.0 - v, v)
    t = tri[face]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    normals = cross[face] / np.maximum(2.0 * area[face], 1e-12)[:, None]
    if normal_noise > 0:
        points = points + normals * rng.normal(0.0, normal_noise, n_points)[:, None]
    return points.astype(np.float32), normals.astype(np.float32)
