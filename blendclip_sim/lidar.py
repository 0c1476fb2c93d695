"""Spinning-LiDAR simulator ("real" domain): beam patterns, scene ray casting, sensor effects.

Output follows the nuScenes LIDAR_TOP layout: (N, 5) float32 x, y, z, intensity (0-255), ring
(0 = lowest beam), in the sensor frame, plus the id of the object each point hit (-1 = background).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from blendclip_ros.errors import ConfigError
from .mesh import Mesh
from .raycast import MeshBVH, build_bvh, intersect

GROUND_REFLECTIVITY = 0.08  # asphalt
RETRO_REFLECTIVE = 0.85  # at or above: intensity almost independent of incidence


@dataclass(frozen=True)
class BeamPattern:
    """A rotating multi-beam sensor: beam elevations (ascending; index = ring) and azimuth steps."""

    name: str
    elevations_deg: tuple[float, ...]
    azimuth_steps: int
    frequency_hz: float
    max_range: float = 100.0
    min_range: float = 0.5
    range_noise: float = 0.02  # metres, 1 sigma
    dropout: float = 0.01  # random loss per return
    detection_threshold: float = 1e-3  # weak-return scale, see LidarSimulator

    def __post_init__(self) -> None:
        el = np.asarray(self.elevations_deg)
        if el.ndim != 1 or len(el) < 1 or np.any(np.diff(el) <= 0):
            raise ConfigError("elevations_deg: need a strictly ascending, non-empty list")
        if self.azimuth_steps < 1:
            raise ConfigError(f"azimuth_steps: must be >= 1, got {self.azimuth_steps}")
        if not 0 < self.min_range < self.max_range:
            raise ConfigError(f"min_range/max_range: need 0 < min < max, got {self.min_range}, {self.max_range}")
        if self.range_noise < 0 or not 0 <= self.dropout < 1:
            raise ConfigError("range_noise must be >= 0 and dropout in [0, 1)")

    @property
    def n_beams(self) -> int:
        return len(self.elevations_deg)

    @property
    def n_rays(self) -> int:
        return self.n_beams * self.azimuth_steps

    def rays(self, azimuth_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Unit directions (R, 3) in the sensor frame and the ring index (R,) of each ray.

        Rays go ring-major; ``azimuth_range`` = (start, width) in radians keeps only the azimuth
        columns in that window (used to simulate one object cheaply).
        """
        az = np.arange(self.azimuth_steps) * (2 * np.pi / self.azimuth_steps)
        if azimuth_range is not None:
            start, width = azimuth_range
            az = az[np.mod(az - start, 2 * np.pi) <= width]
        el = np.radians(np.asarray(self.elevations_deg))
        e, a = np.meshgrid(el, az, indexing="ij")
        dirs = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1).reshape(-1, 3)
        ring = np.repeat(np.arange(self.n_beams), len(az))
        return dirs, ring


def hdl32e() -> BeamPattern:
    """nuScenes LIDAR_TOP (Velodyne HDL-32E): -30.67..+10.67 deg in 4/3 deg steps, 20 Hz.

    1084 azimuth steps per turn, as in the real nuScenes sweep (34,688 = 32 x 1084 points).
    """
    return BeamPattern("hdl32e", tuple(np.round(np.linspace(-30.67, 10.67, 32), 3)), 1084, 20.0, max_range=100.0)


def hdl64e() -> BeamPattern:
    """KITTI-style Velodyne HDL-64E: +2..-8.33 deg (1/3 deg) and -8.83..-24.33 deg (1/2 deg), 10 Hz."""
    upper = np.linspace(-8.33, 2.0, 32)
    lower = np.linspace(-24.33, -8.83, 32)
    return BeamPattern("hdl64e", tuple(np.round(np.concatenate([lower, upper]), 3)), 2083, 10.0, max_range=120.0)


def vls128() -> BeamPattern:
    """Velodyne VLS-128-like: 128 beams over -25..+15 deg, denser near the horizon, 10 Hz, 0.2 deg."""
    u = np.linspace(-1.0, 1.0, 128)
    el = 5.0 * np.sinh(u * 1.9) / np.sinh(1.9) * 4.0 - 5.0  # spans -25..+15
    return BeamPattern("vls128", tuple(np.round(el, 3)), 1800, 10.0, max_range=200.0)


PRESETS = {"hdl32e": hdl32e, "hdl64e": hdl64e, "vls128": vls128}


def preset(name: str) -> BeamPattern:
    if name not in PRESETS:
        raise ConfigError(f"beam pattern: unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]()


@dataclass
class Instance:
    """A mesh placed in the world: ``world = rotation @ local + translation``."""

    bvh: MeshBVH
    normals: np.ndarray  # (F, 3) unit face normals, local frame
    reflectivity: np.ndarray  # (F,)
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    object_id: int = -1

    @classmethod
    def from_mesh(cls, mesh: Mesh, object_id: int = -1, leaf_size: int = 8) -> Instance:
        tri = mesh.triangles()
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        return cls(build_bvh(mesh, leaf_size), n, mesh.reflectivity.astype(np.float64), object_id=object_id)

    def placed(self, rotation: np.ndarray, translation: np.ndarray) -> Instance:
        """The same geometry (shared acceleration structure) at another pose."""
        return Instance(self.bvh, self.normals, self.reflectivity, np.asarray(rotation, dtype=np.float64),
                        np.asarray(translation, dtype=np.float64), self.object_id)


@dataclass(frozen=True)
class SceneHits:
    """Nearest hit per ray: distance (inf = miss), object id (-1 background), world normal, reflectivity;
    ``own_hits[j]`` counts the rays that would hit instance j if no other object were there and
    ``visible_hits[j]`` those whose nearest hit is instance j (so j's visible fraction is their ratio)."""

    t: np.ndarray
    object_id: np.ndarray
    normal: np.ndarray
    reflectivity: np.ndarray
    own_hits: np.ndarray
    visible_hits: np.ndarray


def cast_scene(instances: list[Instance], origin: np.ndarray, dirs: np.ndarray,
               ground_z: float | None = 0.0, max_range: float = np.inf) -> SceneHits:
    """Cast rays from one world ``origin`` (3,) along ``dirs`` (R, 3) against the ground plane
    ``z = ground_z`` and all instances.

    All instances are culled at once by their bounding spheres (one small matrix product); each
    object then tests only its candidate rays (a loop over objects, not rays).
    """
    n = len(dirs)
    origin = np.asarray(origin, dtype=np.float64).reshape(3)
    t = np.full(n, float(max_range))
    oid = np.full(n, -1, dtype=np.int64)
    which = np.full(n, -1, dtype=np.int64)  # index into instances of the nearest hit
    normal = np.zeros((n, 3))
    refl = np.zeros(n)
    if ground_z is not None:
        down = dirs[:, 2] < -1e-9
        tg = np.where(down, (ground_z - origin[2]) / np.where(down, dirs[:, 2], -1.0), np.inf)
        g = (tg > 0) & (tg < t)
        t[g], normal[g], refl[g] = tg[g], (0.0, 0.0, 1.0), GROUND_REFLECTIVITY
    own = np.zeros(len(instances), dtype=np.int64)
    if not instances:
        return SceneHits(np.where(t < max_range, t, np.inf), oid, normal, refl, own, own.copy())
    centres, radii = [], []
    for inst in instances:
        lo, hi = inst.bvh.bounds
        centres.append(inst.rotation @ ((lo + hi) / 2) + inst.translation)
        radii.append(np.linalg.norm(hi - lo) / 2)
    rel = np.asarray(centres) - origin  # (M, 3)
    radii = np.asarray(radii)[:, None]
    proj = rel @ dirs.T  # (M, R): distance along each ray to the closest approach
    near = ((rel * rel).sum(axis=1)[:, None] - proj * proj <= radii * radii) & (proj > -radii) & (proj - radii < t)
    del proj
    inst_of, ray_of = np.nonzero(near)  # sorted by instance
    bounds = np.searchsorted(inst_of, np.arange(len(instances) + 1))
    t_ground = t.copy()  # nothing stands below the ground, so it bounds every object's own hits
    for j, inst in enumerate(instances):
        idx = ray_of[bounds[j]:bounds[j + 1]]
        if idx.size == 0:
            continue
        local_o = np.broadcast_to((origin - inst.translation) @ inst.rotation, (idx.size, 3))
        hits = intersect(inst.bvh, local_o, dirs[idx] @ inst.rotation, t_ground[idx])
        own[j] = np.isfinite(hits.t).sum()
        m = hits.t < t[idx]
        if m.any():
            sel, f = idx[m], hits.face[m]
            t[sel] = hits.t[m]
            oid[sel] = inst.object_id
            which[sel] = j
            normal[sel] = inst.normals[f] @ inst.rotation.T
            refl[sel] = inst.reflectivity[f]
    hit = t < max_range
    visible = np.bincount(which[hit & (which >= 0)], minlength=len(instances))
    return SceneHits(np.where(hit, t, np.inf), np.where(hit, oid, -1), normal, refl, own, visible)


@dataclass(frozen=True)
class Sweep:
    """One simulated sweep: (N, 5) float32 x, y, z, intensity, ring (sensor frame) + object id per point."""

    points: np.ndarray
    object_id: np.ndarray
    n_rays: int
    own_hits: np.ndarray  # per instance: rays that would hit it without occluders (before sensor effects)
    visible_hits: np.ndarray  # per instance: rays whose nearest hit it is (before sensor effects)


class LidarSimulator:
    """Turns ray hits into sensor returns.

    * range noise N(0, ``range_noise``);
    * random dropout, plus weak returns lost with probability exp(-s / ``detection_threshold``), where
      s = reflectivity x cos(incidence) x (20 m / range)^2;
    * intensity = 255 x reflectivity x cos(incidence)^0.6 x log-normal noise (retro-reflective surfaces
      keep their brightness at grazing angles), rounded like the real sensor's integers.
    """

    def __init__(self, pattern: BeamPattern | None = None):
        self.pattern = pattern or hdl32e()

    def scan(self, instances: list[Instance], sensor_rotation: np.ndarray, sensor_translation: np.ndarray,
             seed: int | np.random.Generator = 0, ground_z: float | None = 0.0,
             azimuth_range: tuple[float, float] | None = None) -> Sweep:
        """Simulate one sweep from a sensor pose (sensor -> world rotation and translation)."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        p = self.pattern
        dirs_s, ring = p.rays(azimuth_range)
        rot = np.asarray(sensor_rotation, dtype=np.float64)
        dirs_w = dirs_s @ rot.T
        hits = cast_scene(instances, np.asarray(sensor_translation, dtype=np.float64), dirs_w, ground_z, p.max_range)
        cos = np.abs((hits.normal * dirs_w).sum(axis=1))
        rng_t = np.where(np.isfinite(hits.t), hits.t, 1.0)
        signal = hits.reflectivity * cos * (20.0 / rng_t) ** 2
        keep = np.isfinite(hits.t) & (hits.t >= p.min_range)
        keep &= rng.random(len(keep)) >= p.dropout
        keep &= rng.random(len(keep)) >= np.exp(-signal / p.detection_threshold)
        idx = np.flatnonzero(keep)
        r = hits.t[idx] + rng.normal(0.0, p.range_noise, len(idx))
        xyz = dirs_s[idx] * r[:, None]
        refl = hits.reflectivity[idx]
        shape = np.where(refl >= RETRO_REFLECTIVE, 0.8 + 0.2 * cos[idx], cos[idx] ** 0.6)
        intensity = np.clip(np.round(255.0 * refl * shape * rng.lognormal(0.0, 0.25, len(idx))), 0, 255)
        points = np.column_stack([xyz, intensity, ring[idx]]).astype(np.float32)
        return Sweep(points, hits.object_id[idx].astype(np.int32), len(dirs_s), hits.own_hits, hits.visible_hits)
