"""Parametric meshes of people, animals, two-wheelers and street furniture (x forward, z up, ground z = 0).

Builders take a ``numpy.random.Generator`` and return ``(parts, attributes)`` like those in
:mod:`vehicles`.
"""

from __future__ import annotations

import numpy as np

from .mesh import Mesh, box, ellipsoid, extruded_profile, frustum, rot_z, tapered_box, torus, tube
from .vehicles import LAMP, METAL, PAINT, RUBBER, pick_colour

CLOTH = {"dark": 0.08, "light": 0.3, "colourful": 0.2, "high-visibility": 0.75}


def human_figure(rng: np.random.Generator, height: float, pose: str, base=(0.0, 0.0, 0.0),
                 reflectivity: float = 0.15) -> list[Mesh]:
    """A person ``height`` tall: ``pose`` is "standing", "walking", or "seated" (riding).

    ``base`` is the foot point (standing/walking) or the hip point (seated).
    """
    b = np.asarray(base, dtype=np.float64)
    leg = 0.47 * height
    hip_w = 0.09 * height / 1.75
    torso = 0.3 * height
    head_r = 0.065 * height
    parts: list[Mesh] = []
    if pose == "seated":
        hip = b
        for s in (-1, 1):
            knee = hip + [0.35 * leg, s * 0.14, 0.05]
            parts += [tube(hip + [0, s * hip_w, 0], knee, 0.07, 6, reflectivity=reflectivity),
                      tube(knee, knee + [0.1, 0.02 * s, -0.5 * leg], 0.055, 6, reflectivity=reflectivity)]
        lean = 0.35
    else:
        hip = b + [0.0, 0.0, leg]
        swing = rng.uniform(0.25, 0.45) if pose == "walking" else rng.uniform(0.0, 0.08)
        for s in (-1, 1):
            foot = b + [s * swing * leg, s * hip_w, 0.0]
            parts.append(tube(foot, hip + [0, s * hip_w, 0], 0.055, 6, radius_end=0.075, reflectivity=reflectivity))
        lean = rng.uniform(0.0, 0.1)
    chest = hip + [np.sin(lean) * torso, 0.0, np.cos(lean) * torso]
    parts.append(ellipsoid((hip + chest) / 2, (0.12, 0.19 * height / 1.75, torso / 2 + 0.03), 5, 8,
                           reflectivity=reflectivity))
    parts.append(ellipsoid(chest + [0.02, 0.0, head_r + 0.06], (head_r * 0.9, head_r * 0.8, head_r), 4, 8,
                           reflectivity=0.25))
    arm = 0.38 * height
    for s in (-1, 1):
        shoulder = chest + [0.0, s * 0.2 * height / 1.75, -0.03]
        if pose == "seated":
            hand = shoulder + [0.45 * arm, s * 0.05, -0.2 * arm]
        else:
            hand = shoulder + [-s * rng.uniform(0.0, 0.35) * arm, s * 0.05, -0.93 * arm]
        parts.append(tube(shoulder, hand, 0.045, 6, reflectivity=reflectivity))
    return parts


def build_pedestrian(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    child = rng.random() < 0.1
    height = rng.uniform(1.0, 1.45) if child else rng.uniform(1.55, 1.95)
    pose = str(rng.choice(["walking", "standing"], p=[0.7, 0.3]))
    clothing = str(rng.choice(list(CLOTH), p=[0.45, 0.25, 0.22, 0.08]))
    parts = human_figure(rng, height, pose, reflectivity=CLOTH[clothing])
    extra = str(rng.choice(["none", "backpack", "bag", "umbrella"], p=[0.55, 0.2, 0.15, 0.1]))
    if extra == "backpack":
        parts.append(box((-0.17, 0.0, 0.68 * height), (0.16, 0.3, 0.4), 0.2))
    elif extra == "bag":
        parts.append(box((0.0, 0.3, 0.45 * height), (0.3, 0.1, 0.3), 0.2))
    elif extra == "umbrella":
        parts += [tube((0.05, 0.25, 0.6 * height), (0.05, 0.25, height + 0.25), 0.012, 4, reflectivity=METAL),
                  frustum(0.5, 0.02, 0.25, 12, reflectivity=0.15).transformed(None, (0.05, 0.25, height + 0.05))]
    person = "child" if child else "adult"
    return parts, {"style": f"{pose} {person}", "clothing": clothing, "carrying": extra}


def build_animal(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    style = str(rng.choice(["dog", "cat", "deer", "horse"], p=[0.55, 0.15, 0.2, 0.1]))
    scale = {"dog": rng.uniform(0.5, 1.0), "cat": rng.uniform(0.4, 0.5), "deer": rng.uniform(1.4, 1.9),
             "horse": rng.uniform(2.0, 2.4)}[style]
    coat = str(rng.choice(["brown", "black", "white", "grey"]))
    refl = {"brown": 0.18, "black": 0.07, "white": 0.45, "grey": 0.25}[coat]
    body_l, leg = 0.55 * scale, (0.45 if style in ("deer", "horse") else 0.3) * scale
    body_r = 0.16 * scale
    center = np.array([0.0, 0.0, leg + body_r * 0.8])
    parts = [ellipsoid(center, (body_l / 2, body_r * 0.8, body_r), 5, 8, reflectivity=refl)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            top = center + [sx * body_l * 0.35, sy * body_r * 0.45, -body_r * 0.5]
            parts.append(tube(top, [top[0] + rng.uniform(-0.08, 0.08) * scale, top[1], 0.0], 0.025 * scale + 0.01, 5,
                              reflectivity=refl))
    neck_top = center + [body_l * 0.55, 0.0, body_r * (1.6 if style in ("deer", "horse") else 0.9)]
    parts.append(tube(center + [body_l * 0.35, 0.0, 0.0], neck_top, body_r * 0.35, 6, reflectivity=refl))
    parts.append(ellipsoid(neck_top + [0.08 * scale, 0.0, 0.0], (0.11 * scale, 0.06 * scale, 0.06 * scale), 4, 8,
                           reflectivity=refl))
    parts.append(tube(center - [body_l * 0.5, 0.0, 0.0], center - [body_l * 0.75, 0.0, -0.1 * scale],
                      0.015 * scale + 0.005, 4, reflectivity=refl))
    return parts, {"style": style, "colour": coat}


def _two_wheeler_rider(rng: np.random.Generator, seat: np.ndarray) -> tuple[list[Mesh], str]:
    if rng.random() < 0.35:
        return [], "parked"
    clothing = str(rng.choice(list(CLOTH)))
    return human_figure(rng, rng.uniform(1.6, 1.9), "seated", seat, CLOTH[clothing]), "with rider"


def build_motorcycle(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    style = str(rng.choice(["sport motorcycle", "cruiser motorcycle", "scooter"], p=[0.4, 0.3, 0.3]))
    colour, paint = pick_colour(rng, ("black", "red", "blue", "white", "silver", "yellow"))
    scooter = style == "scooter"
    r = rng.uniform(0.22, 0.26) if scooter else rng.uniform(0.3, 0.34)
    wheelbase = rng.uniform(1.25, 1.4) if scooter else rng.uniform(1.4, 1.6)
    xr, xf = -wheelbase / 2, wheelbase / 2
    parts = [tube((x, -0.07, r), (x, 0.07, r), r, 14, reflectivity=RUBBER) for x in (xr, xf)]
    seat_z = rng.uniform(0.72, 0.85)
    if scooter:
        parts += [box((0.0, 0.0, r + 0.1), (wheelbase * 0.6, 0.35, 0.12), paint),
                  tapered_box(xr - 0.1, xr + 0.6, 0.2, r + 0.1, seat_z, top_x1=xr + 0.5, reflectivity=paint),
                  tapered_box(xf - 0.35, xf - 0.05, 0.22, r + 0.1, 1.05, top_x0=xf - 0.3, reflectivity=paint)]
    else:
        parts += [tapered_box(xr + 0.2, xf - 0.25, 0.17, r + 0.05, seat_z - 0.1, top_x1=xf - 0.1, reflectivity=METAL),
                  ellipsoid((xf - 0.55, 0.0, seat_z), (0.3, 0.17, 0.13), 4, 8, reflectivity=paint),
                  box((xr + 0.35, 0.0, seat_z), (0.55, 0.28, 0.08), RUBBER)]
        parts.append(tube((xr, 0.0, r), (xr + 0.6, 0.0, seat_z - 0.15), 0.04, reflectivity=METAL))
    bar_z = seat_z + rng.uniform(0.15, 0.3)
    parts.append(tube((xf, 0.0, r), (xf - 0.25, 0.0, bar_z), 0.035, reflectivity=METAL))  # fork
    half_bar = rng.uniform(0.33, 0.42)
    parts.append(tube((xf - 0.25, -half_bar, bar_z), (xf - 0.25, half_bar, bar_z), 0.02, reflectivity=METAL))
    parts.append(box((xf - 0.15, 0.0, bar_z - 0.1), (0.06, 0.18, 0.1), LAMP))
    rider, state = _two_wheeler_rider(rng, np.array([xr + 0.3, 0.0, seat_z + 0.05]))
    return parts + rider, {"style": style, "colour": colour, "state": state}


def build_bicycle(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    style = str(rng.choice(["city bicycle", "road bicycle", "mountain bicycle"]))
    colour, paint = pick_colour(rng, ("black", "red", "blue", "white", "silver", "green", "yellow"))
    r = rng.uniform(0.33, 0.36)
    wheelbase = rng.uniform(1.0, 1.15)
    xr, xf = -wheelbase / 2, wheelbase / 2
    tyre = 0.025 if style == "road bicycle" else 0.035
    parts = [torus((x, 0.0, r), r - tyre, tyre, 16, 5, RUBBER) for x in (xr, xf)]
    bb = np.array([0.0, 0.0, r - 0.05])  # bottom bracket
    seat = np.array([-0.2, 0.0, r + rng.uniform(0.5, 0.65)])
    head = np.array([xf - 0.18, 0.0, r + rng.uniform(0.45, 0.6)])
    rear, front = np.array([xr, 0.0, r]), np.array([xf, 0.0, r])
    for a, b in ((bb, seat), (bb, head), (seat + [0.02, 0, -0.08], head), (bb, rear), (seat, rear), (head, front)):
        parts.append(tube(a, b, 0.02, 5, reflectivity=paint))
    bar_w = rng.uniform(0.25, 0.33)
    parts.append(tube(head + [0, -bar_w, 0.1], head + [0, bar_w, 0.1], 0.015, 5, reflectivity=METAL))
    parts.append(box(seat + [0.0, 0.0, 0.03], (0.25, 0.12, 0.05), RUBBER))
    if style == "city bicycle" and rng.random() < 0.5:
        parts.append(box((xf + 0.1, 0.0, head[2] - 0.05), (0.3, 0.35, 0.22), METAL))  # basket
    rider, state = _two_wheeler_rider(rng, seat + [0.0, 0.0, 0.05])
    return parts + rider, {"style": style, "colour": colour, "state": state}


def build_traffic_cone(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    style = str(rng.choice(["traffic cone", "traffic barrel", "delineator post"], p=[0.65, 0.2, 0.15]))
    orange = PAINT["orange"]
    if style == "traffic barrel":
        h, rad = rng.uniform(0.9, 1.05), rng.uniform(0.26, 0.3)
        parts = [frustum(rad + 0.08, rad + 0.08, 0.08, 16, RUBBER)]
        bands = 4
        for k in range(bands):
            z = 0.08 + k * (h - 0.08) / bands
            refl = LAMP if k % 2 else orange
            parts.append(frustum(rad, rad * 0.95, (h - 0.08) / bands, 16, refl).transformed(None, (0, 0, z)))
        return parts, {"style": style, "colour": "orange"}
    if style == "delineator post":
        h = rng.uniform(0.8, 1.15)
        parts = [box((0, 0, 0.03), (0.35, 0.35, 0.06), RUBBER), frustum(0.06, 0.04, h, 10, orange),
                 frustum(0.061, 0.055, 0.12, 10, LAMP).transformed(None, (0, 0, h * 0.7))]
        return parts, {"style": style, "colour": "orange"}
    h = rng.uniform(0.45, 1.0)
    base = rng.uniform(0.3, 0.45) * (0.7 + 0.3 * h)
    rb = base * 0.38
    rt = 0.025
    band_z0, band_z1 = 0.5 * h, 0.68 * h

    def radius(z: float) -> float:
        return rb + (rt - rb) * z / h

    parts = [box((0, 0, 0.02), (base, base, 0.04), RUBBER),
             frustum(rb, radius(band_z0), band_z0, 14, orange),
             frustum(radius(band_z0), radius(band_z1), band_z1 - band_z0, 14, LAMP).transformed(None, (0, 0, band_z0)),
             frustum(radius(band_z1), rt, h - band_z1, 14, orange).transformed(None, (0, 0, band_z1))]
    return parts, {"style": style, "colour": "orange"}


def build_barrier(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    """Barriers run along y (their long side), so the box is thin in x like nuScenes barriers."""
    style = str(rng.choice(["concrete jersey barrier", "plastic water barrier", "fence barrier"], p=[0.45, 0.35, 0.2]))
    length = rng.uniform(1.6, 2.6)
    if style == "concrete jersey barrier":
        h, base = rng.uniform(0.8, 1.07), rng.uniform(0.55, 0.65)
        top = rng.uniform(0.15, 0.25)
        prof = np.array([[-base / 2, 0.0], [base / 2, 0.0], [base / 2 - 0.05, 0.08], [top / 2 + 0.07, 0.3],
                         [top / 2, h], [-top / 2, h], [-top / 2 - 0.07, 0.3], [-base / 2 + 0.05, 0.08]])
        parts = [extruded_profile(prof, length, 0.3)]
        return parts, {"style": style, "colour": "grey"}
    if style == "plastic water barrier":
        colour = str(rng.choice(["red", "white", "orange", "yellow"]))
        h, base = rng.uniform(0.8, 1.0), rng.uniform(0.4, 0.55)
        prof = np.array([[-base / 2, 0.0], [base / 2, 0.0], [0.08, h], [-0.08, h]])
        parts = [extruded_profile(prof, length * 0.95, PAINT[colour])]
        parts += [box((0, s * length * 0.48, 0.3), (0.2, length * 0.05, 0.6), PAINT[colour]) for s in (-1, 1)]
        return parts, {"style": style, "colour": colour}
    colour = str(rng.choice(["red", "white", "orange", "yellow"]))
    h = rng.uniform(1.0, 1.25)
    parts = []
    for s in (-1, 1):
        y = s * (length / 2 - 0.05)
        parts += [box((0, y, 0.05), (0.6, 0.2, 0.1), RUBBER),
                  tube((0, y, 0.1), (0, y, h), 0.025, 6, reflectivity=METAL)]
    for z in (h * 0.45, h * 0.8):
        parts.append(box((0, 0, z), (0.03, length - 0.1, 0.18), LAMP if colour in ("red", "white") else PAINT[colour]))
    return parts, {"style": style, "colour": colour}


def build_traffic_sign(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    """A sign plate facing +x on a pole; the retro-reflective face gives bright returns."""
    shape = str(rng.choice(["round", "triangular", "rectangular", "octagonal"], p=[0.4, 0.2, 0.3, 0.1]))
    height = rng.uniform(2.0, 3.2)
    size = rng.uniform(0.5, 0.9)
    pole_r = rng.uniform(0.03, 0.045)
    parts = [tube((-0.05, 0, 0.0), (-0.05, 0, height - size / 2), pole_r, 8, reflectivity=METAL)]
    zc = height - size / 2
    if shape == "round":
        parts.append(tube((0.0, 0, zc), (0.02, 0, zc), size / 2, 16, reflectivity=LAMP))
    elif shape == "octagonal":
        parts.append(tube((0.0, 0, zc), (0.02, 0, zc), size / 2, 8, reflectivity=LAMP))
    elif shape == "triangular":
        tri = np.array([[-size / 2, zc - size * 0.43], [size / 2, zc - size * 0.43], [0.0, zc + size * 0.43]])
        parts.append(extruded_profile(tri, 0.02, LAMP).transformed(rot_z(np.pi / 2), (0.01, 0, 0)))
    else:
        w = size * rng.uniform(0.8, 1.6)
        parts.append(box((0.01, 0, zc), (0.02, w, size), LAMP))
    return parts, {"style": f"{shape} sign", "colour": str(rng.choice(["red", "blue", "white", "yellow"]))}
