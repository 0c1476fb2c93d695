"""Triangle meshes with a per-face reflectivity, and the primitives objects are built from.

All primitives are returned in their own frame (z up) and placed with :meth:`Mesh.transformed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blendclip_ros.errors import ConfigError


@dataclass(frozen=True)
class Mesh:
    """A triangle soup: ``vertices`` (V, 3) float64, ``faces`` (F, 3) int64, ``reflectivity`` (F,)."""

    vertices: np.ndarray
    faces: np.ndarray
    reflectivity: np.ndarray

    def __post_init__(self) -> None:
        v, f, r = self.vertices, self.faces, self.reflectivity
        if v.ndim != 2 or v.shape[1] != 3:
            raise ConfigError(f"mesh.vertices: expected shape (V, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ConfigError(f"mesh.faces: expected shape (F, 3), got {f.shape}")
        if r.shape != (f.shape[0],):
            raise ConfigError(f"mesh.reflectivity: expected shape ({f.shape[0]},), got {r.shape}")
        if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
            raise ConfigError("mesh.faces: vertex index out of range")

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned (min, max) corners."""
        return self.vertices.min(axis=0), self.vertices.max(axis=0)

    def triangles(self) -> np.ndarray:
        """(F, 3, 3) vertex coordinates per face."""
        return self.vertices[self.faces]

    def face_areas(self) -> np.ndarray:
        t = self.triangles()
        return 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)

    def transformed(self, rotation: np.ndarray | None = None, translation=(0.0, 0.0, 0.0)) -> Mesh:
        """Apply ``v -> R v + t`` (R a 3x3 rotation matrix, identity when None)."""
        v = self.vertices if rotation is None else self.vertices @ np.asarray(rotation).T
        return Mesh(v + np.asarray(translation, dtype=np.float64), self.faces, self.reflectivity)

    def with_reflectivity(self, value: float) -> Mesh:
        return Mesh(self.vertices, self.faces, np.full(len(self.faces), value, dtype=np.float32))


def merge(meshes: list[Mesh]) -> Mesh:
    """Concatenate meshes into one (faces re-indexed)."""
    if not meshes:
        raise ConfigError("merge: need at least one mesh")
    offsets = np.cumsum([0] + [m.vertices.shape[0] for m in meshes[:-1]])
    return Mesh(
        np.concatenate([m.vertices for m in meshes]),
        np.concatenate([m.faces + o for m, o in zip(meshes, offsets)]),
        np.concatenate([m.reflectivity for m in meshes]),
    )


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(pitch: float) -> np.ndarray:
    c, s = np.cos(pitch), np.sin(pitch)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _mesh(vertices, faces, reflectivity: float) -> Mesh:
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    return Mesh(np.asarray(vertices, dtype=np.float64), faces,
                np.full(len(faces), reflectivity, dtype=np.float32))


# Faces of a hexahedron whose corners are ordered bottom (0-3) then top (4-7), counter-clockwise.
_HEX_FACES = np.array([
    [0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7],
    [0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5],
    [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7],
])


def hexahedron(bottom: np.ndarray, top: np.ndarray, reflectivity: float = 0.3) -> Mesh:
    """A six-sided solid from 4 bottom and 4 top corners (each counter-clockwise seen from above)."""
    return _mesh(np.concatenate([bottom, top]), _HEX_FACES, reflectivity)


def box(center, size, reflectivity: float = 0.3) -> Mesh:
    """Axis-aligned box with full extents ``size`` = (l, w, h) around ``center``."""
    cx, cy, cz = center
    hl, hw, hh = np.asarray(size, dtype=np.float64) / 2
    return tapered_box(cx - hl, cx + hl, hw, cz - hh, cz + hh, reflectivity=reflectivity, cy=cy)


def tapered_box(x0: float, x1: float, half_width: float, z0: float, z1: float, *,
                top_x0: float | None = None, top_x1: float | None = None,
                top_half_width: float | None = None, cy: float = 0.0,
                reflectivity: float = 0.3) -> Mesh:
    """A box spanning x0..x1, z0..z1 whose top face may be shorter/narrower (car cabins, hoods)."""
    tx0 = x0 if top_x0 is None else top_x0
    tx1 = x1 if top_x1 is None else top_x1
    thw = half_width if top_half_width is None else top_half_width
    bottom = np.array([[x0, cy - half_width, z0], [x1, cy - half_width, z0],
                       [x1, cy + half_width, z0], [x0, cy + half_width, z0]])
    top = np.array([[tx0, cy - thw, z1], [tx1, cy - thw, z1], [tx1, cy + thw, z1], [tx0, cy + thw, z1]])
    return hexahedron(bottom, top, reflectivity)


def frustum(radius_bottom: float, radius_top: float, height: float, segments: int = 16,
            reflectivity: float = 0.3) -> Mesh:
    """A closed truncated cone along +z from z=0 (``radius_top`` 0 gives a cone)."""
    a = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=1)
    bottom = ring * [radius_bottom, radius_bottom, 0.0]
    top = ring * [radius_top, radius_top, 0.0] + [0.0, 0.0, height]
    verts = np.concatenate([bottom, top, [[0.0, 0.0, 0.0], [0.0, 0.0, height]]])
    i = np.arange(segments)
    j = (i + 1) % segments
    n = segments
    side = np.concatenate([np.stack([i, j, j + n], 1), np.stack([i, j + n, i + n], 1)])
    caps = np.concatenate([np.stack([np.full(n, 2 * n), j, i], 1), np.stack([np.full(n, 2 * n + 1), i + n, j + n], 1)])
    return _mesh(verts, np.concatenate([side, caps]), reflectivity)


def _frame_from_z(axis: np.ndarray) -> np.ndarray:
    """A rotation matrix whose third column is the unit vector ``axis``."""
    z = axis / np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def tube(p0, p1, radius: float, segments: int = 8, radius_end: float | None = None,
         reflectivity: float = 0.3) -> Mesh:
    """A closed cylinder (or frustum) from point ``p0`` to point ``p1``."""
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    axis = p1 - p0
    length = float(np.linalg.norm(axis))
    if length <= 0:
        raise ConfigError("tube: p0 and p1 must differ")
    m = frustum(radius, radius if radius_end is None else radius_end, length, segments, reflectivity)
    return m.transformed(_frame_from_z(axis), p0)


def wheel(center, radius: float, width: float, segments: int = 14, reflectivity: float = 0.05) -> Mesh:
    """A cylinder with its axis along y (a wheel of a vehicle driving along x)."""
    c = np.asarray(center, dtype=np.float64)
    return tube(c - [0.0, width / 2, 0.0], c + [0.0, width / 2, 0.0], radius, segments,
                reflectivity=reflectivity)


def ellipsoid(center, radii, rings: int = 6, segments: int = 10, reflectivity: float = 0.3) -> Mesh:
    """A UV ellipsoid with semi-axes ``radii`` (rx, ry, rz)."""
    theta = np.linspace(0.0, np.pi, rings + 1)[1:-1]
    phi = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    body = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1).reshape(-1, 3)
    verts = np.concatenate([[[0.0, 0.0, 1.0]], body, [[0.0, 0.0, -1.0]]]) * radii + center
    r_idx = np.arange(rings - 2)[:, None]
    s_idx = np.arange(segments)[None, :]
    a = 1 + r_idx * segments + s_idx
    b = 1 + r_idx * segments + (s_idx + 1) % segments
    c, d = a + segments, b + segments
    quads = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    s = np.arange(segments)
    sn = (s + 1) % segments
    last = 1 + (rings - 2) * segments
    south = len(verts) - 1
    caps = np.concatenate([np.stack([np.zeros(segments, int), 1 + s, 1 + sn], 1),
                           np.stack([np.full(segments, south), last + sn, last + s], 1)])
    return _mesh(verts, np.concatenate([quads, caps]), reflectivity)


def extruded_profile(profile_xz: np.ndarray, width: float, reflectivity: float = 0.3) -> Mesh:
    """Extrude a convex x-z polygon (counter-clockwise, seen from -y) along y, centred on y=0."""
    p = np.asarray(profile_xz, dtype=np.float64)
    n = len(p)
    if n < 3:
        raise ConfigError("extruded_profile: the profile needs at least 3 points")
    left = np.stack([p[:, 0], np.full(n, width / 2), p[:, 1]], 1)
    right = np.stack([p[:, 0], np.full(n, -width / 2), p[:, 1]], 1)
    i = np.arange(n)
    j = (i + 1) % n
    side = np.concatenate([np.stack([i, j, j + n], 1), np.stack([i, j + n, i + n], 1)])
    fan = np.arange(1, n - 1)
    caps = np.concatenate([np.stack([np.zeros(n - 2, int), fan + 1, fan], 1),
                           np.stack([np.full(n - 2, n), fan + n, fan + 1 + n], 1)])
    return _mesh(np.concatenate([left, right]), np.concatenate([side, caps]), reflectivity)


def torus(center, major_radius: float, minor_radius: float, major_segments: int = 16,
          minor_segments: int = 6, reflectivity: float = 0.1) -> Mesh:
    """A torus in the x-z plane (its axis along y): a bicycle tyre."""
    u = np.linspace(0.0, 2 * np.pi, major_segments, endpoint=False)[:, None]
    v = np.linspace(0.0, 2 * np.pi, minor_segments, endpoint=False)[None, :]
    rad = np.broadcast_to(major_radius + minor_radius * np.cos(v), (major_segments, minor_segments))
    verts = np.stack([rad * np.cos(u), np.broadcast_to(minor_radius * np.sin(v), rad.shape),
                      rad * np.sin(u)], axis=-1).reshape(-1, 3) + center
    i = np.arange(major_segments)[:, None]
    j = np.arange(minor_segments)[None, :]
    a = i * minor_segments + j
    b = ((i + 1) % major_segments) * minor_segments + j
    c = i * minor_segments + (j + 1) % minor_segments
    d = ((i + 1) % major_segments) * minor_segments + (j + 1) % minor_segments
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return _mesh(verts, faces, reflectivity)
