"""Parametric meshes of the vehicle classes (built with x forward, z up, ground at z = 0).

Every builder takes a ``numpy.random.Generator`` and returns ``(parts, attributes)``; sizes follow
nuScenes/TruckScenes annotation statistics. Reflectivities: paint 0.1-0.6 by colour, glass 0.08,
rubber 0.04, lamps and number plates (retro-reflective) 0.9.
"""

from __future__ import annotations

import numpy as np

from .mesh import Mesh, box, ellipsoid, rot_z, tapered_box, tube, wheel

# colour name -> paint reflectivity
PAINT = {"white": 0.6, "silver": 0.5, "grey": 0.32, "black": 0.1, "red": 0.35, "blue": 0.28,
         "green": 0.26, "yellow": 0.5, "orange": 0.42, "brown": 0.2}
GLASS, RUBBER, LAMP, METAL = 0.08, 0.04, 0.9, 0.35


def pick_colour(rng: np.random.Generator, names: tuple[str, ...]) -> tuple[str, float]:
    name = str(rng.choice(names))
    return name, PAINT[name]


def _glass_sides(part: Mesh, roof: float) -> Mesh:
    """A hexahedron part whose four sides are glass and whose roof keeps ``roof`` reflectivity."""
    refl = np.full(len(part.faces), GLASS, dtype=np.float32)
    refl[:4] = roof  # faces 0-1 bottom, 2-3 top (see mesh._HEX_FACES)
    return Mesh(part.vertices, part.faces, refl)


def _axle(x: float, track: float, radius: float, width: float, dual: bool = False) -> list[Mesh]:
    y = track / 2
    parts = [wheel((x, y, radius), radius, width), wheel((x, -y, radius), radius, width)]
    if dual:
        parts += [wheel((x, y - width, radius), radius, width), wheel((x, -(y - width), radius), radius, width)]
    return parts


def _lamps(x: float, half_width: float, z: float, size=(0.05, 0.25, 0.12)) -> list[Mesh]:
    return [box((x, s * (half_width - size[1] / 2), z), size, LAMP) for s in (-1, 1)]


def build_car(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    style = str(rng.choice(["sedan", "hatchback", "suv", "wagon", "minivan"], p=[0.35, 0.2, 0.25, 0.1, 0.1]))
    length = {"sedan": rng.uniform(4.3, 5.1), "hatchback": rng.uniform(3.7, 4.4),
              "suv": rng.uniform(4.3, 5.1), "wagon": rng.uniform(4.5, 5.0), "minivan": rng.uniform(4.6, 5.2)}[style]
    height = {"sedan": rng.uniform(1.38, 1.55), "hatchback": rng.uniform(1.42, 1.6),
              "suv": rng.uniform(1.62, 1.9), "wagon": rng.uniform(1.45, 1.6), "minivan": rng.uniform(1.7, 1.95)}[style]
    width = rng.uniform(1.72, 1.98)
    colour, paint = pick_colour(rng, ("white", "silver", "grey", "black", "red", "blue", "green", "yellow", "brown"))
    r = rng.uniform(0.3, 0.34) if style in ("sedan", "hatchback", "wagon") else rng.uniform(0.34, 0.4)
    body_w = width - 0.16  # mirrors reach the full width
    hw = body_w / 2
    x0, x1 = -length / 2, length / 2
    belt = height * rng.uniform(0.5, 0.6)
    clearance = r * rng.uniform(0.45, 0.6)
    # cabin bottom/top x extents as fractions of the length, per style
    cab = {"sedan": (-0.33, 0.18, -0.22, 0.02), "hatchback": (-0.48, 0.18, -0.44, -0.02),
           "suv": (-0.47, 0.2, -0.45, 0.04), "wagon": (-0.47, 0.16, -0.45, 0.0),
           "minivan": (-0.48, 0.34, -0.47, 0.12)}[style]
    jitter = rng.uniform(-0.02, 0.02, 4)
    cb0, cb1, ct0, ct1 = (np.array(cab) + jitter) * length
    parts = [
        tapered_box(x0, x1, hw, clearance, belt, top_x0=x0 + 0.1, top_x1=x1 - rng.uniform(0.1, 0.3),
                    top_half_width=hw - 0.03, reflectivity=paint),
        _glass_sides(tapered_box(cb0, cb1, hw - 0.04, belt, height, top_x0=ct0, top_x1=ct1,
                                 top_half_width=hw - rng.uniform(0.12, 0.2)), paint),
    ]
    wheelbase = length * rng.uniform(0.58, 0.64)
    xc = (x0 + x1) / 2 + rng.uniform(-0.05, 0.05) * length
    for xa in (xc - wheelbase / 2, xc + wheelbase / 2):
        parts += _axle(xa, body_w - 0.22, r, 0.2)
    mirror_x = cb1 - 0.05
    parts += [box((mirror_x, s * (hw + 0.04), belt + 0.08), (0.12, 0.08, 0.12), paint) for s in (-1, 1)]
    parts += _lamps(x1, hw - 0.05, belt - 0.12) + _lamps(x0, hw - 0.05, belt - 0.1)
    parts.append(box((x0 - 0.005, 0.0, clearance + 0.25), (0.01, 0.5, 0.12), LAMP))  # number plate
    return parts, {"style": style, "colour": colour}


def _cab(x_front: float, cab_len: float, hw: float, z0: float, top: float, paint: float,
         slope: float) -> list[Mesh]:
    """A truck cab: a box with a sloped windscreen (glass sides above the belt line)."""
    belt = z0 + 0.45 * (top - z0)
    lower = tapered_box(x_front - cab_len, x_front, hw, z0, belt, reflectivity=paint)
    upper = _glass_sides(tapered_box(x_front - cab_len, x_front, hw, belt, top,
                                     top_x1=x_front - slope, top_half_width=hw - 0.05), paint)
    return [lower, upper]


def build_truck(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    style = str(rng.choice(["box truck", "pickup truck", "semi-trailer truck", "dump truck"],
                           p=[0.35, 0.3, 0.2, 0.15]))
    colour, paint = pick_colour(rng, ("white", "silver", "grey", "red", "blue", "yellow", "orange", "black"))
    parts: list[Mesh] = []
    if style == "pickup truck":
        length, width, height = rng.uniform(5.0, 6.1), rng.uniform(1.9, 2.1), rng.uniform(1.8, 2.0)
        hw, r = width / 2 - 0.08, rng.uniform(0.38, 0.42)
        x0, x1 = -length / 2, length / 2
        belt = height * 0.55
        parts.append(tapered_box(x0, x1, hw, r * 0.6, belt, top_x1=x1 - 0.2, reflectivity=paint))
        cab_front = x1 - length * 0.3
        parts.append(_glass_sides(tapered_box(cab_front - length * 0.3, cab_front, hw - 0.05, belt, height,
                                              top_x1=cab_front - 0.4, top_half_width=hw - 0.15), paint))
        bed_end = cab_front - length * 0.3
        for s in (-1, 1):  # bed walls
            parts.append(box(((x0 + bed_end) / 2, s * (hw - 0.03), belt + 0.25), (bed_end - x0, 0.06, 0.5), paint))
        parts.append(box((x0 + 0.03, 0.0, belt + 0.25), (0.06, 2 * hw, 0.5), paint))
        for xa in (x0 + length * 0.2, x1 - length * 0.2):
            parts += _axle(xa, 2 * hw - 0.25, r, 0.26)
        parts += [box((cab_front - 0.1, s * (hw + 0.05), belt + 0.15), (0.12, 0.1, 0.2), paint) for s in (-1, 1)]
        return parts + _lamps(x0, hw, belt - 0.1), {"style": style, "colour": colour}

    length = {"box truck": rng.uniform(6.0, 9.5), "semi-trailer truck": rng.uniform(5.6, 7.0),
              "dump truck": rng.uniform(7.0, 9.0)}[style]
    width, r = rng.uniform(2.3, 2.55), rng.uniform(0.45, 0.52)
    hw = width / 2 - 0.1
    x0, x1 = -length / 2, length / 2
    cab_top = rng.uniform(2.6, 3.1) if style != "semi-trailer truck" else rng.uniform(3.0, 3.5)
    cab_len = rng.uniform(1.7, 2.3)
    frame_z = r * 1.6
    parts += _cab(x1, cab_len, hw, r * 0.9, cab_top, paint, rng.uniform(0.15, 0.4))
    parts.append(box(((x0 + x1 - cab_len) / 2, 0.0, frame_z), (length - cab_len, 1.0, 0.3), METAL))  # chassis
    rear = x1 - cab_len - 0.15
    if style == "box truck":
        top = rng.uniform(3.0, 3.8)
        cargo_paint = PAINT["white"] if rng.random() < 0.6 else paint
        parts.append(box(((x0 + rear) / 2, 0.0, (frame_z + top) / 2 + 0.1),
                         (rear - x0, 2 * hw + 0.1, top - frame_z - 0.2), cargo_paint))
    elif style == "dump truck":
        top = cab_top + rng.uniform(-0.4, 0.1)
        parts.append(tapered_box(x0, rear, hw, frame_z + 0.15, top, top_x0=x0 - 0.1, reflectivity=paint))
    else:  # tractor unit: fairing over the cab and a fifth-wheel plate
        parts.append(tapered_box(x1 - cab_len, x1 - 0.3, hw - 0.1, cab_top, cab_top + rng.uniform(0.2, 0.5),
                                 top_x1=x1 - cab_len + 0.3, reflectivity=paint))
        parts.append(box(((x0 + rear) / 2 + 0.5, 0.0, frame_z + 0.25), (1.2, 1.6, 0.15), METAL))
    parts += _axle(x1 - cab_len * 0.6, 2 * hw - 0.2, r, 0.3)
    rear_axles = 2 if (length > 7.5 or style == "semi-trailer truck") else 1
    for k in range(rear_axles):
        parts += _axle(x0 + length * 0.18 + k * 1.3, 2 * hw - 0.2, r, 0.3, dual=True)
    parts += [box((x1 - 0.3, s * (hw + 0.15), cab_top - 0.7), (0.1, 0.2, 0.5), METAL) for s in (-1, 1)]
    return parts + _lamps(x0, hw, frame_z), {"style": style, "colour": colour}


def build_bus(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    style = str(rng.choice(["city bus", "coach", "articulated bus", "minibus"], p=[0.5, 0.2, 0.15, 0.15]))
    colour, paint = pick_colour(rng, ("white", "red", "blue", "yellow", "green", "silver", "orange"))
    length = {"city bus": rng.uniform(10.5, 12.5), "coach": rng.uniform(11.5, 13.5),
              "articulated bus": rng.uniform(16.5, 18.5), "minibus": rng.uniform(6.5, 8.5)}[style]
    height = {"city bus": rng.uniform(3.0, 3.4), "coach": rng.uniform(3.4, 3.8),
              "articulated bus": rng.uniform(3.0, 3.3), "minibus": rng.uniform(2.6, 3.0)}[style]
    width = rng.uniform(2.45, 2.6) if style != "minibus" else rng.uniform(2.1, 2.3)
    hw = width / 2
    r = rng.uniform(0.48, 0.52) if style != "minibus" else 0.4
    x0, x1 = -length / 2, length / 2
    floor, glass_low, glass_high = r * 0.7, height * 0.38, height * 0.88
    segments = [(x0, x1)] if style != "articulated bus" else [(x0, -0.4), (0.4, x1)]
    parts: list[Mesh] = []
    for k, (a, b) in enumerate(segments):
        front = b - (0.25 if k == len(segments) - 1 else 0.0)
        parts.append(tapered_box(a, b, hw, floor, glass_low, reflectivity=paint))
        parts.append(_glass_sides(tapered_box(a, b, hw, glass_low, glass_high, top_x1=front), paint))
        parts.append(tapered_box(a, front, hw, glass_high, height, top_x0=a + 0.1, top_x1=front - 0.2,
                                 top_half_width=hw - 0.1, reflectivity=paint))
        parts += _axle(a + (b - a) * 0.2, width - 0.35, r, 0.3, dual=True)
        if k == len(segments) - 1:
            parts += _axle(b - min(2.6, (b - a) * 0.22), width - 0.35, r, 0.3)
    if style == "articulated bus":
        parts.append(box((0.0, 0.0, height / 2 + 0.2), (0.8, width - 0.2, height - 0.6), RUBBER))
    parts += [tube((x1 - 0.2, s * hw, height * 0.75), (x1 + 0.15, s * (hw + 0.2), height * 0.65), 0.04,
                   reflectivity=METAL) for s in (-1, 1)]
    parts += _lamps(x1, hw, floor + 0.3) + _lamps(x0, hw, floor + 0.4)
    return parts, {"style": style, "colour": colour}


def build_trailer(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    style = str(rng.choice(["box trailer", "container trailer", "flatbed trailer", "utility trailer"],
                           p=[0.4, 0.25, 0.15, 0.2]))
    colour, paint = pick_colour(rng, ("white", "silver", "grey", "red", "blue", "orange", "green"))
    parts: list[Mesh] = []
    if style == "utility trailer":
        length, width = rng.uniform(2.5, 4.0), rng.uniform(1.5, 2.1)
        hw, r = width / 2, 0.3
        x0, x1 = -length / 2, length / 2 - 1.0
        wall = rng.uniform(0.3, 0.6)
        parts.append(box(((x0 + x1) / 2, 0.0, 0.6), (x1 - x0, width, 0.06), METAL))
        for s in (-1, 1):
            parts.append(box(((x0 + x1) / 2, s * (hw - 0.02), 0.6 + wall / 2), (x1 - x0, 0.04, wall), paint))
        for xs in (x0 + 0.02, x1 - 0.02):
            parts.append(box((xs, 0.0, 0.6 + wall / 2), (0.04, width, wall), paint))
        parts.append(tube((x1, 0.0, 0.5), (length / 2, 0.0, 0.45), 0.05, reflectivity=METAL))  # drawbar
        parts += _axle((x0 + x1) / 2, width - 0.1, r, 0.18)
        return parts + _lamps(x0 - 0.02, hw, 0.5), {"style": style, "colour": colour}

    length = rng.uniform(7.0, 13.6)
    width, r = rng.uniform(2.45, 2.6), 0.48
    hw = width / 2
    x0, x1 = -length / 2, length / 2
    deck = rng.uniform(1.1, 1.35)
    parts.append(box((0.0, 0.0, deck), (length, width, 0.25), METAL))
    if style == "box trailer":
        top = rng.uniform(3.6, 4.1)
        parts.append(box((0.0, 0.0, (deck + top) / 2), (length, width, top - deck), paint))
    elif style == "container trailer":
        top = deck + rng.choice([2.44, 2.59])
        clen = min(length, rng.choice([6.06, 12.19]))
        parts.append(box((x1 - clen / 2, 0.0, (deck + top) / 2 + 0.1), (clen, 2.44, top - deck), paint))
    else:
        for k in range(int(rng.integers(0, 4))):  # a few crates on the flatbed
            cl = rng.uniform(0.8, 2.0)
            parts.append(box((x0 + 1.0 + k * 2.4 + cl / 2, 0.0, deck + cl / 2), (cl, rng.uniform(1.2, 2.3), cl), 0.25))
    n_axles = 3 if length > 10 else 2
    for k in range(n_axles):
        parts += _axle(x0 + 1.2 + k * 1.35, width - 0.3, r, 0.3, dual=True)
    for s in (-1, 1):  # landing legs
        parts.append(tube((x1 - 2.5, s * 0.8, deck), (x1 - 2.5, s * 0.8, 0.05), 0.06, reflectivity=METAL))
    return parts + _lamps(x0, hw, deck - 0.2), {"style": style, "colour": colour}


def build_construction_vehicle(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    style = str(rng.choice(["excavator", "wheel loader", "road roller", "crane truck"], p=[0.4, 0.25, 0.15, 0.2]))
    colour, paint = pick_colour(rng, ("yellow", "orange", "white", "red"))
    parts: list[Mesh] = []
    if style == "excavator":
        track_len, gauge = rng.uniform(3.0, 4.2), rng.uniform(2.0, 2.6)
        for s in (-1, 1):
            parts.append(tapered_box(-track_len / 2, track_len / 2, 0.3, 0.0, 0.85, top_x0=-track_len / 2 - 0.2,
                                     top_x1=track_len / 2 + 0.2, cy=s * (gauge / 2 - 0.3), reflectivity=RUBBER))
        slew = rng.uniform(-0.6, 0.6)
        house_len = rng.uniform(2.6, 3.2)
        upper = [box((-0.4, 0.0, 1.45), (house_len, gauge * 0.95, 1.1), paint),
                 _glass_sides(tapered_box(0.2, 1.2, 0.45, 1.0, 2.9, cy=0.5), paint)]
        boom_len, stick_len = rng.uniform(3.0, 4.5), rng.uniform(1.8, 2.6)
        lift = rng.uniform(0.2, 0.9)
        p0 = np.array([1.0, -0.3, 1.6])
        p1 = p0 + boom_len * np.array([np.cos(lift), 0.0, np.sin(lift)])
        p2 = p1 + stick_len * np.array([0.35, 0.0, -0.94])
        upper += [tube(p0, p1, 0.22, reflectivity=paint), tube(p1, p2, 0.14, reflectivity=paint),
                  tapered_box(p2[0] - 0.3, p2[0] + 0.5, 0.5, max(p2[2] - 0.7, 0.0), max(p2[2] - 0.7, 0.0) + 0.8,
                              top_x0=p2[0] - 0.5, cy=-0.3, reflectivity=METAL)]
        parts += [m.transformed(rot_z(slew)) for m in upper]
    elif style == "wheel loader":
        r = rng.uniform(0.7, 0.85)
        parts += _axle(-1.0, 2.1, r, 0.55) + _axle(1.0, 2.1, r, 0.55)
        parts.append(box((-1.2, 0.0, r + 0.5), (2.4, 1.6, 1.3), paint))
        parts.append(_glass_sides(tapered_box(-0.6, 0.6, 0.65, r + 1.15, r + 2.4, top_half_width=0.6), paint))
        parts.append(box((0.9, 0.0, r + 0.2), (1.2, 1.0, 0.8), paint))
        bucket_z = rng.uniform(0.1, 1.8)
        parts.append(tapered_box(2.1, 3.0, 1.35, bucket_z, bucket_z + 0.9, top_x1=2.4, reflectivity=METAL))
        parts += [tube((1.2, s * 0.5, r + 0.4), (2.3, s * 0.5, bucket_z + 0.5), 0.12, reflectivity=paint)
                  for s in (-1, 1)]
    elif style == "road roller":
        parts.append(tube((1.5, -1.05, 0.75), (1.5, 1.05, 0.75), 0.75, segments=16, reflectivity=METAL))
        parts += _axle(-1.6, 1.9, 0.75, 0.5)
        parts.append(box((-0.6, 0.0, 1.0), (2.8, 1.8, 1.0), paint))
        parts.append(_glass_sides(tapered_box(-1.4, -0.2, 0.7, 1.5, 2.9, top_half_width=0.65), paint))
        parts.append(box((1.5, 0.0, 1.7), (0.9, 2.0, 0.3), paint))
    else:
        length = rng.uniform(7.5, 10.0)
        x0, x1 = -length / 2, length / 2
        parts += _cab(x1, 2.2, 1.15, 0.7, 3.0, paint, 0.3)
        parts.append(box(((x0 + x1 - 2.2) / 2, 0.0, 1.1), (length - 2.2, 2.4, 0.6), paint))
        for k in range(3):
            parts += _axle(x0 + 1.0 + k * 1.5, 2.1, 0.5, 0.35)
        boom_pitch = rng.uniform(0.05, 0.5)
        base = np.array([x0 + 1.2, 0.0, 1.8])
        parts.append(tube(base, base + rng.uniform(6.0, 8.0) * np.array([np.cos(boom_pitch), 0.0, np.sin(boom_pitch)]),
                          0.28, segments=6, reflectivity=paint))
    return parts, {"style": style, "colour": colour}


def build_other_vehicle(rng: np.random.Generator) -> tuple[list[Mesh], dict]:
    style = str(rng.choice(["farm tractor", "forklift", "golf cart", "quad bike"], p=[0.35, 0.25, 0.2, 0.2]))
    colour, paint = pick_colour(rng, ("green", "red", "yellow", "orange", "blue", "white"))
    parts: list[Mesh] = []
    if style == "farm tractor":
        rr, rf = rng.uniform(0.75, 0.95), rng.uniform(0.4, 0.55)
        parts += _axle(-1.0, 1.7, rr, 0.45) + _axle(1.3, 1.5, rf, 0.3)
        parts.append(tapered_box(-0.2, 2.0, 0.45, 0.5, 1.4, top_x1=1.8, reflectivity=paint))
        parts.append(_glass_sides(tapered_box(-1.6, -0.2, 0.7, 1.0, rr * 2 + 0.9), paint))
        parts.append(tube((1.2, 0.3, 1.4), (1.2, 0.3, 2.2), 0.06, reflectivity=METAL))
    elif style == "forklift":
        parts += _axle(0.6, 0.9, 0.3, 0.2) + _axle(-0.6, 0.95, 0.26, 0.18)
        parts.append(box((-0.2, 0.0, 0.6), (1.8, 1.1, 0.7), paint))
        parts.append(box((-1.0, 0.0, 0.8), (0.4, 1.1, 0.9), METAL))  # counterweight
        for s in (-1, 1):
            parts.append(tube((-0.7, s * 0.5, 0.9), (-0.7, s * 0.5, 2.1), 0.04, reflectivity=METAL))
            parts.append(tube((0.5, s * 0.5, 0.9), (0.5, s * 0.5, 2.1), 0.04, reflectivity=METAL))
            parts.append(tube((0.85, s * 0.35, 0.1), (0.85, s * 0.35, rng.uniform(0.6, 2.2)), 0.06, reflectivity=METAL))
        parts.append(box((-0.1, 0.0, 2.12), (1.3, 1.1, 0.05), METAL))
        mast_h = rng.uniform(0.1, 1.2)
        for s in (-1, 1):
            parts.append(box((1.5, s * 0.3, mast_h), (1.1, 0.12, 0.05), METAL))  # forks
    elif style == "golf cart":
        parts += _axle(-0.85, 1.0, 0.23, 0.2) + _axle(0.85, 1.0, 0.23, 0.2)
        parts.append(box((0.0, 0.0, 0.45), (2.4, 1.2, 0.35), paint))
        parts.append(box((-0.5, 0.0, 0.85), (0.7, 1.1, 0.45), paint))
        for xs in (-0.8, 0.8):
            for s in (-1, 1):
                parts.append(tube((xs, s * 0.55, 0.6), (xs, s * 0.55, 1.8), 0.025, reflectivity=METAL))
        parts.append(box((0.0, 0.0, 1.82), (2.0, 1.25, 0.06), paint))
    else:
        parts += _axle(-0.6, 0.95, 0.28, 0.22) + _axle(0.6, 0.95, 0.28, 0.22)
        parts.append(ellipsoid((0.0, 0.0, 0.65), (0.9, 0.4, 0.25), reflectivity=paint))
        parts.append(tube((0.55, -0.45, 1.0), (0.55, 0.45, 1.0), 0.02, reflectivity=METAL))
    return parts, {"style": style, "colour": colour}
