"""Points of annotated boxes from several LiDAR sweeps, with BlendCLIP's object-motion compensation.

All inputs are in the global frame. Per box (all boxes of a keyframe at once):

* keyframe (sweep 0): points inside the annotated box;
* a box whose devkit velocity ``v`` is not finite takes the keyframe only;
* each older sweep, ``dt`` seconds before the keyframe, otherwise:

  - velocity blended with the previous annotation's, ``v_i = v (1 - f) + v_prev f`` with
    ``f = dt / (t_ref - t_prev)`` (not clamped; ``v_i = v`` without a previous annotation or when
    its velocity is not finite);
  - box centre moved to ``c - v_i dt``; orientation ``slerp(q_ref, q_prev, f)`` with the factor
    clipped to [0, 1] (pyquaternion's slerp, vectorised here);
  - points inside that adjusted box are rotated by ``q_ref q_adj^-1`` about the adjusted centre and
    moved by ``+v_i dt``;

* finally every box's points are cropped again with the annotated box (no trails).

Inside-box tests are the devkit's ``points_in_box`` (boundary inclusive, no enlargement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from blendclip_ros.geometry.boxes import Boxes
from blendclip_ros.geometry.crop import points_in_boxes


@dataclass(frozen=True)
class GlobalBoxes:
    """Annotated boxes of one keyframe (global frame) with what motion compensation needs."""

    centres: np.ndarray  # (B, 3)
    sizes: np.ndarray  # (B, 3) l, w, h
    quats: np.ndarray  # (B, 4) w, x, y, z (devkit order)
    velocity: np.ndarray  # (B, 3) devkit box_velocity, NaN when unknown
    prev_quats: np.ndarray  # (B, 4); rows without a previous annotation are ignored
    prev_velocity: np.ndarray  # (B, 3)
    prev_time_us: np.ndarray  # (B,) int64, -1 = no previous annotation

    def __len__(self) -> int:
        return len(self.centres)

    def boxes(self, centres: np.ndarray | None = None, quats: np.ndarray | None = None) -> Boxes:
        q = self.quats if quats is None else quats
        return Boxes(self.centres if centres is None else centres, self.sizes, q[:, [1, 2, 3, 0]])


@dataclass(frozen=True)
class Sweep:
    """One LiDAR sweep in the global frame."""

    points: np.ndarray  # (N, 3) float64
    time_us: int


def slerp(q0: np.ndarray, q1: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """pyquaternion's ``Quaternion.slerp`` for rows of w, x, y, z quaternions (amount clipped to [0, 1])."""
    q0 = q0 / np.linalg.norm(q0, axis=1, keepdims=True)
    q1 = q1 / np.linalg.norm(q1, axis=1, keepdims=True)
    amount = np.clip(amount, 0.0, 1.0)[:, None]
    dot = (q0 * q1).sum(axis=1, keepdims=True)
    q0 = np.where(dot < 0, -q0, q0)
    dot = np.abs(dot)
    theta0 = np.arccos(np.minimum(dot, 1.0))
    sin0 = np.sin(theta0)
    theta = theta0 * amount
    near = dot > 0.9995
    safe = np.where(near, 1.0, sin0)
    s0 = np.where(near, 1.0 - amount, np.cos(theta) - dot * np.sin(theta) / safe)
    s1 = np.where(near, amount, np.sin(theta) / safe)
    out = s0 * q0 + s1 * q1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _matrices(quats_wxyz: np.ndarray) -> np.ndarray:
    return Rotation.from_quat(quats_wxyz[:, [1, 2, 3, 0]]).as_matrix()


def fuse_box_points(sweeps: list[Sweep], boxes: GlobalBoxes,
                    motion_compensation: bool = True) -> tuple[list[np.ndarray], np.ndarray]:
    """Per box, its fused points (global frame) and how many sweeps contributed to its search.

    ``sweeps[0]`` is the keyframe; older sweeps are used only with ``motion_compensation``.
    """
    n = len(boxes)
    if n == 0:
        return [], np.zeros(0, dtype=np.int64)
    reference = boxes.boxes()
    chunks: list[list[np.ndarray]] = [[sweeps[0].points[i]] for i in points_in_boxes(sweeps[0].points, reference)]
    moving = np.isfinite(boxes.velocity).all(axis=1)
    used = np.ones(n, dtype=np.int64)
    older = sweeps[1:] if motion_compensation else []
    if older and moving.any():
        t_ref = sweeps[0].time_us
        has_prev = boxes.prev_time_us >= 0
        ann_dt = np.where(has_prev, (t_ref - boxes.prev_time_us) * 1e-6, 0.0)
        has_prev &= np.abs(ann_dt) > 1e-6
        blend = has_prev & np.isfinite(boxes.prev_velocity).all(axis=1)
        ref_rot = _matrices(boxes.quats)
        idx = np.flatnonzero(moving)
        for sweep in older:
            dt = (t_ref - sweep.time_us) * 1e-6
            f = np.where(has_prev, dt / np.where(has_prev, ann_dt, 1.0), 0.0)
            v = np.where(blend[:, None], boxes.velocity * (1 - f[:, None]) + boxes.prev_velocity * f[:, None],
                         boxes.velocity)
            centres = boxes.centres - v * dt
            quats = np.where(has_prev[:, None], slerp(boxes.quats, boxes.prev_quats, f), boxes.quats)
            adjusted = Boxes(centres[idx], boxes.sizes[idx], quats[idx][:, [1, 2, 3, 0]])
            delta = ref_rot[idx] @ _matrices(quats[idx]).transpose(0, 2, 1)  # q_ref q_adj^-1
            for k, inside in enumerate(points_in_boxes(sweep.points, adjusted)):
                if len(inside):
                    b = idx[k]
                    local = sweep.points[inside] - centres[b]
                    chunks[b].append(local @ delta[k].T + centres[b] + v[b] * dt)
            used[idx] += 1
    fused = [np.concatenate(c) for c in chunks]
    if not older:
        return fused, used
    # the final crop with the annotated box (devkit test, boundary inclusive), box by box on its own points
    rot, half = reference.rotation_matrices, reference.sizes / 2
    return [pts[(np.abs((pts - reference.centers[b]) @ rot[b]) <= half[b]).all(axis=1)]
            for b, pts in enumerate(fused)], used
