"""Road geometry (a straight or circular-arc centreline) and the static world around it.

Road coordinates: arc length ``s`` along the centreline and lateral ``offset`` (left positive);
right-hand traffic, the forward lanes are at negative offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mesh import Mesh, box, ellipsoid, merge, rot_z, tube

SIDEWALK_HEIGHT = 0.15


@dataclass(frozen=True)
class Road:
    """A road of constant curvature starting at ``start`` = (x, y, heading) in the world frame."""

    start: tuple[float, float, float] = (150.0, 150.0, 0.0)
    curvature: float = 0.0  # 1/m, positive turns left
    lane_width: float = 3.5
    lanes_per_direction: int = 2
    parking_width: float = 2.5
    sidewalk_width: float = 3.5

    @property
    def carriageway_half_width(self) -> float:
        """Centreline to curb."""
        return self.lanes_per_direction * self.lane_width + self.parking_width

    def lane_offset(self, lane: int) -> float:
        """Lateral offset of lane centre ``lane`` (0 = innermost forward lane; negative = oncoming)."""
        if lane >= 0:
            return -(lane + 0.5) * self.lane_width
        return (-lane - 0.5) * self.lane_width

    def pose(self, s, offset=0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World x, y and heading of road coordinates (vectorised)."""
        s = np.asarray(s, dtype=np.float64)
        offset = np.asarray(offset, dtype=np.float64)
        x0, y0, h0 = self.start
        k = self.curvature
        if abs(k) < 1e-9:
            fx, fy = s, np.zeros_like(s)
        else:
            fx, fy = np.sin(k * s) / k, (1.0 - np.cos(k * s)) / k
        heading = h0 + k * s
        cx = x0 + fx * np.cos(h0) - fy * np.sin(h0)
        cy = y0 + fx * np.sin(h0) + fy * np.cos(h0)
        return cx - offset * np.sin(heading), cy + offset * np.cos(heading), heading


def _segment_box(road: Road, s0: float, s1: float, off0: float, off1: float, z0: float, z1: float,
                 reflectivity: float) -> Mesh:
    """A box following the road between arc lengths s0..s1 and offsets off0..off1."""
    sm, om = (s0 + s1) / 2, (off0 + off1) / 2
    x, y, h = road.pose(sm, om)
    return box((0.0, 0.0, (z0 + z1) / 2), (s1 - s0, abs(off1 - off0), z1 - z0), reflectivity).transformed(
        rot_z(float(h)), (float(x), float(y), 0.0))


def static_world(road: Road, s_min: float, s_max: float, rng: np.random.Generator,
                 chunk: float = 20.0) -> list[Mesh]:
    """Sidewalks (``chunk`` metres per piece), building facades, trees and lamp posts.

    One mesh per item, so that the ray caster's per-object culling stays tight.
    """
    half = road.carriageway_half_width
    parts: list[Mesh] = []
    for c0 in np.arange(s_min, s_max, chunk):
        c1 = min(c0 + chunk, s_max)
        for side in (-1, 1):
            inner, outer = side * half, side * (half + road.sidewalk_width)
            parts.append(_segment_box(road, c0, c1, min(inner, outer), max(inner, outer), 0.0, SIDEWALK_HEIGHT, 0.25))
            s = c0
            while s < c1:  # building facades with gaps
                length = rng.uniform(8.0, 25.0)
                if rng.random() < 0.8:
                    setback = rng.uniform(0.5, 4.0)
                    b0 = side * (half + road.sidewalk_width + setback)
                    parts.append(_segment_box(road, s, min(s + length, c1), min(b0, b0 + side * 10.0),
                                              max(b0, b0 + side * 10.0), 0.0, rng.uniform(5.0, 18.0),
                                              rng.uniform(0.15, 0.45)))
                s += length + rng.uniform(0.0, 6.0)
            for s_obj in np.arange(c0 + rng.uniform(0, 8), c1, rng.uniform(9.0, 15.0)):
                x, y, h = road.pose(s_obj, side * (half + 0.7))
                base = np.array([float(x), float(y), SIDEWALK_HEIGHT])
                if rng.random() < 0.6:  # tree
                    trunk_h = rng.uniform(2.0, 3.5)
                    crown = rng.uniform(1.2, 2.5)
                    parts.append(merge([tube(base, base + [0, 0, trunk_h], 0.15, 7, reflectivity=0.3),
                                        ellipsoid(base + [0, 0, trunk_h + crown * 0.8], (crown, crown, crown * 0.9),
                                                  5, 9, reflectivity=0.35)]))
                else:  # lamp post
                    top = base + [0, 0, rng.uniform(6.0, 8.0)]
                    arm = top + side * 1.5 * np.array([np.sin(h), -np.cos(h), 0.0])  # over the road
                    parts.append(merge([tube(base, top, 0.09, 8, radius_end=0.06, reflectivity=0.35),
                                        tube(top, arm, 0.05, 6, reflectivity=0.35)]))
    return parts
