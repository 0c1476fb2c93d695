"""Six calibrated cameras on the ego (nuScenes layout) and a shaded ray-cast render of a scene.

Camera frame as in nuScenes: x right, y down, z forward; pinhole intrinsics with the principal
point at the image centre. Each pixel casts one ray (through the same vectorised BVH caster as the
LiDAR); surfaces are Lambert-shaded under a fixed sun, objects take the colour named in their
attributes (class colour otherwise) darkened where their reflectivity is low (tyres, glass), the
ground is asphalt and rays that hit nothing show a sky gradient.

Visibility: per actor, the pixels whose ray would hit it with nothing else in the scene
(``own``) and the pixels where it is the nearest surface (``visible``), summed over the six
cameras; ``visible / own`` is its visible fraction, binned into nuScenes' visibility tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blendclip_ros.errors import ConfigError

from .lidar import Instance, cast_scene
from .mesh import rot_z
from .scene import Scene

# ego frame -> camera axes: camera z = ego x (forward), camera x = -ego y (right), camera y = -ego z (down)
_CAMERA_AXES = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
_SUN = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])
_ASPHALT = np.array([0.33, 0.33, 0.35])
_COLOURS = {
    "white": (0.92, 0.92, 0.92), "silver": (0.75, 0.76, 0.78), "grey": (0.5, 0.5, 0.52), "black": (0.08, 0.08, 0.09),
    "red": (0.78, 0.1, 0.1), "blue": (0.12, 0.25, 0.75), "green": (0.15, 0.55, 0.2), "yellow": (0.95, 0.8, 0.1),
    "brown": (0.45, 0.3, 0.15), "orange": (0.95, 0.5, 0.08), "dark": (0.12, 0.12, 0.15), "light": (0.8, 0.78, 0.7),
    "colourful": (0.7, 0.2, 0.6), "high-visibility": (0.95, 0.85, 0.1),
}
_CLASS_COLOURS = {
    "car": (0.6, 0.6, 0.65), "truck": (0.85, 0.85, 0.85), "bus": (0.9, 0.75, 0.1), "trailer": (0.8, 0.8, 0.8),
    "construction vehicle": (0.95, 0.75, 0.1), "other vehicle": (0.6, 0.4, 0.3), "motorcycle": (0.2, 0.2, 0.25),
    "bicycle": (0.2, 0.4, 0.7), "pedestrian": (0.3, 0.3, 0.45), "animal": (0.55, 0.4, 0.25),
    "traffic cone": (0.95, 0.4, 0.05), "barrier": (0.85, 0.85, 0.8), "traffic sign": (0.1, 0.3, 0.8),
}


@dataclass(frozen=True)
class Camera:
    """A pinhole camera mounted on the ego: ``channel``, mount translation (ego frame), yaw (rad),
    horizontal field of view (rad) and image size."""

    channel: str
    translation: tuple[float, float, float]
    yaw: float
    hfov: float
    width: int
    height: int

    @property
    def intrinsic(self) -> np.ndarray:
        f = (self.width / 2) / np.tan(self.hfov / 2)
        return np.array([[f, 0.0, self.width / 2], [0.0, f, self.height / 2], [0.0, 0.0, 1.0]])

    @property
    def rotation(self) -> np.ndarray:
        """Camera -> ego rotation."""
        return rot_z(self.yaw) @ _CAMERA_AXES

    def rays(self) -> np.ndarray:
        """Unit ray directions (H*W, 3) in the camera frame, row-major over pixel centres."""
        v, u = np.mgrid[0:self.height, 0:self.width]
        pix = np.stack([u.ravel() + 0.5, v.ravel() + 0.5, np.ones(u.size)], axis=1)
        dirs = pix @ np.linalg.inv(self.intrinsic).T
        return dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def nuscenes_rig(width: int = 400, height: int = 225) -> tuple[Camera, ...]:
    """The six nuScenes cameras (positions and yaws of the real rig, rounded; 70 deg, the back camera 110 deg)."""
    if width < 8 or height < 8:
        raise ConfigError(f"camera size: expected at least 8x8 pixels, got {width}x{height}")
    d = np.radians
    return (Camera("CAM_FRONT", (1.70, 0.0, 1.51), 0.0, d(70), width, height),
            Camera("CAM_FRONT_RIGHT", (1.55, -0.49, 1.50), d(-55), d(70), width, height),
            Camera("CAM_BACK_RIGHT", (1.04, -0.48, 1.56), d(-110), d(70), width, height),
            Camera("CAM_BACK", (0.03, 0.0, 1.57), d(180), d(110), width, height),
            Camera("CAM_BACK_LEFT", (1.03, 0.48, 1.56), d(110), d(70), width, height),
            Camera("CAM_FRONT_LEFT", (1.52, 0.49, 1.51), d(55), d(70), width, height))


def quaternion_wxyz(rotation: np.ndarray) -> list[float]:
    """w, x, y, z quaternion of a rotation matrix (the nuScenes table order)."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(rotation).as_quat()
    return [float(w), float(x), float(y), float(z)]


@dataclass(frozen=True)
class CameraFrame:
    """Rendered images (channel -> (H, W, 3) uint8), the actor index seen at each pixel (channel ->
    (H, W) int, -1 = no actor) and per-actor visible fractions (NaN if never in view)."""

    images: dict[str, np.ndarray]
    actor_ids: dict[str, np.ndarray]
    visible_fraction: np.ndarray


def _actor_colours(scene: Scene) -> np.ndarray:
    """(A, 3) RGB in 0..1 per actor: its attribute colour, else its class colour."""
    out = []
    for actor in scene.actors:
        name = str(actor.obj.attributes.get("colour", ""))
        out.append(_COLOURS.get(name, _CLASS_COLOURS.get(actor.obj.class_name, (0.6, 0.6, 0.6))))
    return np.array(out, dtype=np.float64).reshape(-1, 3)


def render_cameras(scene: Scene, t: float, rig: tuple[Camera, ...], max_range: float = 120.0) -> CameraFrame:
    """Render every camera of ``rig`` at time ``t`` and measure each actor's visible fraction."""
    ego_r, ego_t = scene.ego_pose(t)
    index, actors = [], []
    for j, actor in enumerate(scene.actors):
        centre, yaw = actor.pose(scene.road, t)
        if np.linalg.norm(centre[:2] - ego_t[:2]) < max_range + 20:
            index.append(j)
            actors.append(scene.instances[j].placed(rot_z(yaw), centre))
    statics: list[Instance] = list(scene.statics)
    colours = _actor_colours(scene)
    own = np.zeros(len(scene.actors))
    visible = np.zeros(len(scene.actors))
    images, ids = {}, {}
    for cam in rig:
        origin = ego_r @ np.asarray(cam.translation) + ego_t
        dirs = cam.rays() @ (ego_r @ cam.rotation).T
        hits = cast_scene(actors + statics, origin, dirs, ground_z=0.0, max_range=max_range)
        own[index] += hits.own_hits[:len(actors)]
        visible[index] += hits.visible_hits[:len(actors)]
        images[cam.channel] = _shade(hits, dirs, origin, colours).reshape(cam.height, cam.width, 3)
        ids[cam.channel] = hits.object_id.reshape(cam.height, cam.width)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(own > 0, np.minimum(visible / np.maximum(own, 1), 1.0), np.nan)
    return CameraFrame(images, ids, fraction)


def _shade(hits, dirs: np.ndarray, origin: np.ndarray, actor_colours: np.ndarray) -> np.ndarray:
    """uint8 RGB per ray: Lambert-shaded surfaces with distance haze over a sky gradient."""
    hit = np.isfinite(hits.t)
    t = np.where(hit, hits.t, 0.0)
    up = np.clip(dirs[:, 2], 0.0, 1.0)[:, None]
    sky = (1 - up) * np.array([0.8, 0.86, 0.95]) + up * np.array([0.35, 0.55, 0.9])
    base = np.empty((len(dirs), 3))
    base[:] = (0.62, 0.6, 0.57)  # sidewalks, facades, trees, posts
    ground = hit & (hits.object_id < 0) & (np.abs(origin[2] + t * dirs[:, 2]) < 1e-3)
    base[ground] = _ASPHALT
    actor = hits.object_id >= 0
    shade = 0.45 + 0.55 * np.clip(hits.reflectivity[actor] / 0.4, 0, 1)
    base[actor] = actor_colours[hits.object_id[actor]] * shade[:, None]
    base[hit & ~actor & ~ground] *= (0.6 + 0.8 * np.clip(hits.reflectivity[hit & ~actor & ~ground], 0, 0.5))[:, None]
    normal = np.where(((hits.normal * dirs).sum(axis=1) > 0)[:, None], -hits.normal, hits.normal)
    light = 0.4 + 0.6 * np.clip(normal @ _SUN, 0.0, 1.0)
    haze = 1.0 - np.exp(-t / 180.0)
    surface = base * light[:, None] * (1 - haze[:, None]) + sky * haze[:, None]
    rgb = np.where(hit[:, None], surface, sky)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
