"""Driving scenes: an ego vehicle on a road among placed actors, simulated frame by frame.

Frames: the ego base frame sits on the ground under the rear axle (x forward, z up); the LiDAR is
mounted at :data:`LIDAR_MOUNT` with axes parallel to the ego frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from blendclip_ros.errors import ConfigError
from .lidar import BeamPattern, Instance, LidarSimulator, hdl32e
from .mesh import rot_z
from .objects import SimObject, make_object, object_seed
from .road import SIDEWALK_HEIGHT, Road, static_world

LIDAR_MOUNT = np.array([0.943713, 0.0, 1.84023])  # nuScenes LIDAR_TOP position in the ego frame
ANNOTATION_RANGE = 80.0  # metres from the ego: actors annotated in a frame


@dataclass
class Actor:
    """An object moving along the road at constant speed (negative = towards decreasing s)."""

    token: str
    obj: SimObject
    s0: float
    offset: float
    speed: float = 0.0
    yaw_offset: float = 0.0
    on_sidewalk: bool = False
    attribute: str = ""

    def pose(self, road: Road, t: float) -> tuple[np.ndarray, float]:
        """World box centre (3,) and yaw at time ``t``."""
        x, y, h = road.pose(self.s0 + self.speed * t, self.offset)
        z = self.obj.size[2] / 2 + (SIDEWALK_HEIGHT if self.on_sidewalk else 0.0)
        yaw = float(h) + self.yaw_offset + (np.pi if self.speed < 0 else 0.0)
        return np.array([float(x), float(y), z]), float(np.arctan2(np.sin(yaw), np.cos(yaw)))

    def velocity(self, road: Road, t: float) -> np.ndarray:
        """World velocity (vx, vy, vz) by a central difference."""
        (p1, _), (p0, _) = self.pose(road, t + 0.05), self.pose(road, t - 0.05)
        return (p1 - p0) / 0.1


@dataclass
class Scene:
    """A generated scene: road, ego motion, actors and static surroundings."""

    name: str
    seed: int
    road: Road
    ego_speed: float
    ego_lane_offset: float
    duration: float
    actors: list[Actor]
    statics: list[Instance] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)  # one per actor, object_id = actor index

    def __post_init__(self) -> None:
        if not self.instances:
            self.instances = [Instance.from_mesh(a.obj.mesh, j) for j, a in enumerate(self.actors)]

    def ego_pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Ego rotation (3, 3) and translation (3,) in the world at time ``t``."""
        x, y, h = self.road.pose(self.ego_speed * t, self.ego_lane_offset)
        return rot_z(float(h)), np.array([float(x), float(y), 0.0])


@dataclass(frozen=True)
class Annotation:
    """A ground-truth box in the world frame for one frame."""

    actor: Actor
    centre: np.ndarray
    size: np.ndarray
    yaw: float
    velocity: np.ndarray
    num_lidar_pts: int
    visible_fraction: float


@dataclass(frozen=True)
class Frame:
    """One simulated LiDAR sweep with the ego pose and the annotations."""

    time: float
    ego_rotation: np.ndarray
    ego_translation: np.ndarray
    points: np.ndarray  # (N, 5) sensor frame
    object_id: np.ndarray  # (N,) index into scene.actors, -1 background
    annotations: list[Annotation]


def _token(rng: np.random.Generator) -> str:
    return rng.bytes(16).hex()


def generate_scene(seed: int, duration: float = 4.0, name: str | None = None,
                   curvature: float | None = None, density: float = 1.0) -> Scene:
    """A random urban street scene (``density`` scales how many actors are placed)."""
    if duration <= 0:
        raise ConfigError(f"duration: must be > 0, got {duration}")
    if density <= 0:
        raise ConfigError(f"density: must be > 0, got {density}")
    rng = np.random.default_rng(seed)
    if curvature is None:
        curvature = 0.0 if rng.random() < 0.5 else float(rng.choice([-1, 1]) * rng.uniform(1 / 250, 1 / 80))
    road = Road(curvature=curvature)
    ego_speed = rng.uniform(4.0, 10.0)
    ego_offset = road.lane_offset(int(rng.integers(0, road.lanes_per_direction)))
    s_lo, s_hi = -45.0, ego_speed * duration + 80.0
    half = road.carriageway_half_width
    actors: list[Actor] = []
    taken: list[tuple[float, float, float, float]] = []  # road-coordinate footprints (s0, s1, off0, off1)

    def add(cls: str, s0: float, offset: float, gap: float = 0.5, **kw) -> bool:
        """Place an instance of ``cls`` unless its footprint (plus ``gap``) overlaps an earlier one."""
        obj = make_object(cls, object_seed(seed, cls, len(actors)))
        sideways = abs(np.sin(kw.get("yaw_offset", 0.0))) > 0.7
        length, width = (obj.size[1], obj.size[0]) if sideways else (obj.size[0], obj.size[1])
        box = (s0 - length / 2 - gap, s0 + length / 2 + gap, offset - width / 2, offset + width / 2)
        if any(box[0] < o[1] and o[0] < box[1] and box[2] < o[3] and o[2] < box[3] for o in taken):
            return False
        taken.append(box)
        actors.append(Actor(_token(rng), obj, s0, offset, **kw))
        return True

    # a construction zone in the parking strip of one side, with a construction vehicle behind it
    if rng.random() < 0.7:
        side = int(rng.choice([-1, 1]))
        z0 = rng.uniform(5.0, max(6.0, s_hi - 40.0))
        strip = side * (half - road.parking_width / 2)
        for k, s in enumerate(np.arange(z0, z0 + rng.uniform(15.0, 30.0), rng.uniform(2.0, 3.5))):
            cls = "traffic cone" if k % 3 or rng.random() < 0.5 else "barrier"
            add(cls, s, strip - side * 0.9, gap=0.05, yaw_offset=np.pi / 2 if cls == "barrier" else 0.0)
        add("construction vehicle", z0 + 8.0, strip + side * 0.3, yaw_offset=rng.normal(0, 0.1),
            attribute="vehicle.parked")
    # parked vehicles along both curbs
    for side in (-1, 1):
        s = s_lo + rng.uniform(0, 6)
        while s < s_hi:
            if rng.random() < 0.55 * min(density, 1.5):
                cls = str(rng.choice(["car", "truck", "trailer", "other vehicle", "bus"],
                                     p=[0.8, 0.08, 0.05, 0.04, 0.03]))
                add(cls, s, side * (half - road.parking_width / 2), yaw_offset=rng.normal(0, 0.03),
                    attribute="vehicle.parked")
                s += (actors[-1].obj.size[0] if actors else 5.0) / 2 + rng.uniform(3.0, 5.0)
            else:
                s += rng.uniform(4.0, 12.0)
    # moving traffic: one speed per lane, so vehicles in a lane keep their gaps
    for lane in range(-road.lanes_per_direction, road.lanes_per_direction):
        offset = road.lane_offset(lane)
        if abs(offset - ego_offset) < 0.1:
            continue  # the ego lane stays free
        speed = (1 if lane >= 0 else -1) * rng.uniform(3.0, 12.0)
        for _ in range(rng.poisson(2.5 * density)):
            cls = str(rng.choice(["car", "truck", "bus", "motorcycle", "bicycle", "construction vehicle"],
                                 p=[0.68, 0.1, 0.07, 0.07, 0.05, 0.03]))
            attribute = "cycle.with_rider" if cls in ("motorcycle", "bicycle") else "vehicle.moving"
            add(cls, rng.uniform(s_lo, s_hi), offset + rng.normal(0, 0.15), gap=3.0, speed=speed, attribute=attribute)
    # pedestrians, signs, parked two-wheelers and animals on the sidewalks
    for side in (-1, 1):
        for _ in range(rng.poisson(7 * density)):
            walk = side * (half + rng.uniform(1.2, road.sidewalk_width - 0.5))
            moving = rng.random() < 0.7
            speed = float(rng.choice([-1, 1]) * rng.uniform(0.9, 1.6)) if moving else 0.0
            add("pedestrian", rng.uniform(s_lo, s_hi), walk, gap=0.1, speed=speed,
                yaw_offset=0.0 if moving else rng.uniform(-np.pi, np.pi), on_sidewalk=True,
                attribute="pedestrian.moving" if moving else "pedestrian.standing")
        for s in np.arange(s_lo + rng.uniform(0, 20), s_hi, rng.uniform(25, 45)):
            # the plate faces the traffic approaching on this side
            add("traffic sign", s, side * (half + 0.35), gap=0.0, yaw_offset=np.pi if side < 0 else 0.0,
                on_sidewalk=True)
        if rng.random() < 0.3:
            add("animal", rng.uniform(s_lo, s_hi), side * (half + 2.0), speed=float(rng.choice([-1, 1])) * 1.2,
                on_sidewalk=True)
        for _ in range(rng.poisson(0.6 * density)):
            cls = str(rng.choice(["bicycle", "motorcycle"]))
            add(cls, rng.uniform(s_lo, s_hi), side * (half + 1.0), yaw_offset=np.pi / 2 + rng.normal(0, 0.2),
                on_sidewalk=True, attribute="cycle.without_rider")
    statics = [Instance.from_mesh(m) for m in static_world(road, s_lo - 30.0, s_hi + 30.0, rng)]
    return Scene(name or f"sim-scene-{seed:04d}", seed, road, ego_speed, ego_offset, duration, actors, statics)


def points_in_box_mask(points: np.ndarray, centre: np.ndarray, size: np.ndarray, yaw: float) -> np.ndarray:
    """Which points (N, >=3) lie inside a yawed box (boundary inclusive)."""
    local = (points[:, :3].astype(np.float64) - centre) @ rot_z(yaw)
    return np.all(np.abs(local) <= size / 2, axis=1)


def simulate_frame(scene: Scene, t: float, pattern: BeamPattern | None = None, seed: int = 0) -> Frame:
    """Place every actor at time ``t``, scan from the ego's LiDAR, and annotate."""
    sim = LidarSimulator(pattern or hdl32e())
    ego_r, ego_t = scene.ego_pose(t)
    sensor_t = ego_r @ LIDAR_MOUNT + ego_t
    poses = [a.pose(scene.road, t) for a in scene.actors]
    near = [j for j, (c, _) in enumerate(poses) if np.linalg.norm(c[:2] - sensor_t[:2]) < sim.pattern.max_range + 20]
    instances = [scene.instances[j].placed(rot_z(poses[j][1]), poses[j][0]) for j in near]
    sweep = sim.scan(instances + scene.statics, ego_r, sensor_t, seed=np.random.default_rng([scene.seed, seed]))
    order = np.argsort(sweep.points[:, 0], kind="stable")
    xs = sweep.points[order, 0]
    annotations = []
    for k, j in enumerate(near):
        centre_w, yaw_w = poses[j]
        if np.linalg.norm(centre_w[:2] - ego_t[:2]) > ANNOTATION_RANGE:
            continue
        centre_s = (centre_w - sensor_t) @ ego_r
        yaw_s = yaw_w - float(np.arctan2(ego_r[1, 0], ego_r[0, 0]))
        size = scene.actors[j].obj.size
        reach = np.linalg.norm(size) / 2  # only points within this x-range can be inside
        cand = order[np.searchsorted(xs, centre_s[0] - reach):np.searchsorted(xs, centre_s[0] + reach, side="right")]
        n_pts = int(points_in_box_mask(sweep.points[cand], centre_s, size, yaw_s).sum())
        own = sweep.own_hits[k]
        visible = sweep.visible_hits[k] / own if own else 0.0
        annotations.append(Annotation(scene.actors[j], centre_w, scene.actors[j].obj.size, yaw_w,
                                      scene.actors[j].velocity(scene.road, t), n_pts, min(visible, 1.0)))
    return Frame(t, ego_r, ego_t, sweep.points, sweep.object_id, annotations)


def simulate(scene: Scene, rate_hz: float, pattern: BeamPattern | None = None, progress: bool = False) -> list[Frame]:
    """Frames at ``rate_hz`` from t = 0 to the scene duration (inclusive of 0, exclusive of the end)."""
    if rate_hz <= 0:
        raise ConfigError(f"rate_hz: must be > 0, got {rate_hz}")
    times = np.arange(0.0, scene.duration - 1e-9, 1.0 / rate_hz)
    return [simulate_frame(scene, float(t), pattern, seed=i)
            for i, t in enumerate(tqdm(times, desc=scene.name, disable=not progress, unit="sweep"))]
