"""Vectorised ray casting against triangle meshes (numpy).

Acceleration is a three-level bounding-volume hierarchy per mesh: the mesh's box; groups of
``group_size`` clusters; clusters of ``leaf_size`` triangles taken consecutively in Morton (Z-curve)
order of their centroids. Rays are tested against boxes in bulk (slab test) level by level, and
only surviving (ray, cluster) pairs go through a batched Möller-Trumbore test. Work is chunked,
so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blendclip_ros.errors import ConfigError
from .mesh import Mesh

_EPS = 1e-9
_PAIR_BUDGET = 1 << 18  # (ray, triangle) tests per chunk: ~50 MB of float64 temporaries


@dataclass(frozen=True)
class MeshBVH:
    """Triangles of a mesh regrouped into boxed clusters (padding triangles are degenerate)."""

    v0: np.ndarray  # (C*K, 3) first vertex
    e1: np.ndarray  # (C*K, 3) edge v1 - v0
    e2: np.ndarray  # (C*K, 3) edge v2 - v0
    face: np.ndarray  # (C*K,) original face index, -1 for padding
    lo: np.ndarray  # (G*S, 3) cluster box minimum
    hi: np.ndarray  # (G*S, 3) cluster box maximum
    group_lo: np.ndarray  # (G, 3) box of each group of S consecutive clusters
    group_hi: np.ndarray  # (G, 3)
    leaf_size: int
    group_size: int

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.group_lo.min(axis=0), self.group_hi.max(axis=0)


@dataclass(frozen=True)
class RayHits:
    """Nearest hit per ray: distance ``t`` (inf for a miss) and face index (-1 for a miss)."""

    t: np.ndarray
    face: np.ndarray


def _spread_bits(x: np.ndarray) -> np.ndarray:
    """Insert two zero bits between the 10 low bits of ``x`` (Morton code helper)."""
    x = x.astype(np.uint64) & np.uint64(0x3FF)
    for shift, mask in ((16, 0x030000FF), (8, 0x0300F00F), (4, 0x030C30C3), (2, 0x09249249)):
        x = (x | (x << np.uint64(shift))) & np.uint64(mask)
    return x


def build_bvh(mesh: Mesh, leaf_size: int = 8, group_size: int = 8) -> MeshBVH:
    """Cluster a mesh's triangles for :func:`intersect`."""
    if leaf_size < 1 or group_size < 1:
        raise ConfigError(f"leaf_size/group_size: must be >= 1, got {leaf_size}, {group_size}")
    tri = mesh.triangles()
    n = len(tri)
    if n == 0:
        raise ConfigError("mesh: has no faces")
    centroid = tri.mean(axis=1)
    lo, hi = centroid.min(axis=0), centroid.max(axis=0)
    q = ((centroid - lo) / np.maximum(hi - lo, 1e-12) * 1023).astype(np.int64)
    code = _spread_bits(q[:, 0]) | (_spread_bits(q[:, 1]) << np.uint64(1)) | (_spread_bits(q[:, 2]) << np.uint64(2))
    order = np.argsort(code, kind="stable")
    n_groups = -(-n // (leaf_size * group_size))
    n_clusters = n_groups * group_size
    pad = n_clusters * leaf_size - n  # zero-area triangles (and point boxes) at the last vertex
    face = np.concatenate([order, np.full(pad, -1, dtype=np.int64)])
    tri = tri[order]
    tri = np.concatenate([tri, np.repeat(tri[-1:, :1], pad, axis=0).repeat(3, axis=1)])
    grouped = tri.reshape(n_clusters, leaf_size * 3, 3)
    lo, hi = grouped.min(axis=1), grouped.max(axis=1)
    return MeshBVH(tri[:, 0].copy(), tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], face, lo, hi,
                   lo.reshape(n_groups, group_size, 3).min(axis=1), hi.reshape(n_groups, group_size, 3).max(axis=1),
                   leaf_size, group_size)


def _slab(origins: np.ndarray, inv_dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Entry/exit distances of rays (..., 3) against boxes (broadcast), per component."""
    near = far = None
    for i in range(3):
        a = (lo[..., i] - origins[..., i]) * inv_dirs[..., i]
        b = (hi[..., i] - origins[..., i]) * inv_dirs[..., i]
        lo_i, hi_i = np.minimum(a, b), np.maximum(a, b)
        near = lo_i if near is None else np.maximum(near, lo_i)
        far = hi_i if far is None else np.minimum(far, hi_i)
    return near, far


def _overlapping_pairs(rays: np.ndarray, origins: np.ndarray, inv: np.ndarray, t_max: np.ndarray,
                       lo: np.ndarray, hi: np.ndarray, children: np.ndarray | None = None):
    """(ray, box) index pairs whose slabs overlap; ``children`` (P, S) restricts each ray to its boxes."""
    if children is None:
        near, far = _slab(origins[rays, None], inv[rays, None], lo[None], hi[None])
        pr, pc = np.nonzero((near <= far) & (far >= 0) & (near < t_max[rays, None]))
        return rays[pr], pc
    near, far = _slab(origins[rays, None], inv[rays, None], lo[children], hi[children])
    pr, pc = np.nonzero((near <= far) & (far >= 0) & (near < t_max[rays, None]))
    return rays[pr], children[pr, pc]


def _inverse(dirs: np.ndarray) -> np.ndarray:
    safe = np.where(np.abs(dirs) < 1e-12, np.where(dirs < 0, -1e-12, 1e-12), dirs)
    return 1.0 / safe


def moller_trumbore(o: np.ndarray, d: np.ndarray, v0: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """Hit distance of rays ``o, d`` (broadcast against) triangles ``v0, e1, e2``; inf where missed.

    Written per component (no stacked cross products) to keep temporaries small.
    """
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
    ax, ay, az = e1[..., 0], e1[..., 1], e1[..., 2]
    bx, by, bz = e2[..., 0], e2[..., 1], e2[..., 2]
    px, py, pz = dy * bz - dz * by, dz * bx - dx * bz, dx * by - dy * bx  # d x e2
    det = ax * px + ay * py + az * pz
    ok = np.abs(det) > _EPS
    inv = 1.0 / np.where(ok, det, 1.0)
    sx, sy, sz = o[..., 0] - v0[..., 0], o[..., 1] - v0[..., 1], o[..., 2] - v0[..., 2]
    u = (sx * px + sy * py + sz * pz) * inv
    qx, qy, qz = sy * az - sz * ay, sz * ax - sx * az, sx * ay - sy * ax  # s x e1
    v = (dx * qx + dy * qy + dz * qz) * inv
    t = (bx * qx + by * qy + bz * qz) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > _EPS)
    return np.where(hit, t, np.inf)


def _reduce_min(n_rays: int, ray: np.ndarray, t: np.ndarray, face: np.ndarray) -> RayHits:
    """Per ray, keep the smallest ``t`` over candidate (ray, t, face) rows."""
    best_t = np.full(n_rays, np.inf)
    best_face = np.full(n_rays, -1, dtype=np.int64)
    if len(ray):
        order = np.lexsort((t, ray))
        ray, t, face = ray[order], t[order], face[order]
        first = np.r_[True, ray[1:] != ray[:-1]]
        keep = first & np.isfinite(t)
        best_t[ray[keep]] = t[keep]
        best_face[ray[keep]] = face[keep]
    return RayHits(best_t, best_face)


def intersect(bvh: MeshBVH, origins: np.ndarray, dirs: np.ndarray, t_max: np.ndarray | float = np.inf) -> RayHits:
    """Nearest hit of each ray (rows of ``origins``/``dirs``, float64 (R, 3)) closer than ``t_max``."""
    origins = np.asarray(origins, dtype=np.float64)
    dirs = np.asarray(dirs, dtype=np.float64)
    if origins.shape != dirs.shape or origins.ndim != 2 or origins.shape[1] != 3:
        raise ConfigError(f"origins/dirs: expected two (R, 3) arrays, got {origins.shape} and {dirs.shape}")
    n = len(origins)
    t_max = np.broadcast_to(np.asarray(t_max, dtype=np.float64), (n,))
    inv = _inverse(dirs)
    lo, hi = bvh.bounds
    near, far = _slab(origins, inv, lo, hi)
    cand = np.flatnonzero((near <= far) & (far >= 0) & (near < t_max))
    rays_out, t_out, face_out = [], [], []
    k, g = bvh.leaf_size, bvh.group_size
    ray_chunk = max(1, _PAIR_BUDGET // max(len(bvh.group_lo), 1) // 2)
    group_chunk = max(1, _PAIR_BUDGET // g // 2)
    pair_chunk = max(1, _PAIR_BUDGET // k)
    cluster_rays, cluster_ids = [], []
    for start in range(0, len(cand), ray_chunk):
        gr, gi = _overlapping_pairs(cand[start:start + ray_chunk], origins, inv, t_max, bvh.group_lo, bvh.group_hi)
        for p0 in range(0, len(gr), group_chunk):
            children = gi[p0:p0 + group_chunk, None] * g + np.arange(g)
            cr, ci = _overlapping_pairs(gr[p0:p0 + group_chunk], origins, inv, t_max, bvh.lo, bvh.hi, children)
            cluster_rays.append(cr)
            cluster_ids.append(ci)
    if cluster_rays:
        pair_ray, pc = np.concatenate(cluster_rays), np.concatenate(cluster_ids)
        for p0 in range(0, len(pair_ray), pair_chunk):
            r = pair_ray[p0:p0 + pair_chunk]
            tri = pc[p0:p0 + pair_chunk, None] * k + np.arange(k)
            t = moller_trumbore(origins[r, None], dirs[r, None], bvh.v0[tri], bvh.e1[tri], bvh.e2[tri])
            j = t.argmin(axis=1)
            tj = t[np.arange(len(r)), j]
            keep = tj < t_max[r]
            rays_out.append(r[keep])
            t_out.append(tj[keep])
            face_out.append(bvh.face[tri[np.arange(len(r)), j]][keep])
    if not rays_out:
        return RayHits(np.full(n, np.inf), np.full(n, -1, dtype=np.int64))
    return _reduce_min(n, np.concatenate(rays_out), np.concatenate(t_out), np.concatenate(face_out))


def intersect_brute_force(mesh: Mesh, origins: np.ndarray, dirs: np.ndarray) -> RayHits:
    """Baseline: every ray against every triangle (vectorised, chunked, no acceleration)."""
    tri = mesh.triangles()
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    n = len(origins)
    best_t = np.full(n, np.inf)
    best_face = np.full(n, -1, dtype=np.int64)
    chunk = max(1, _PAIR_BUDGET // len(tri))
    for s in range(0, n, chunk):
        t = moller_trumbore(origins[s:s + chunk, None], dirs[s:s + chunk, None], v0[None], e1[None], e2[None])
        j = t.argmin(axis=1)
        tj = t[np.arange(len(t)), j]
        best_t[s:s + chunk] = tj
        best_face[s:s + chunk] = np.where(np.isfinite(tj), j, -1)
    return RayHits(best_t, best_face)
