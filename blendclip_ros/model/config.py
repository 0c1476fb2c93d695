"""Typed configuration of the PointBERT point encoder (named presets "full" and "tiny")."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blendclip_ros.errors import ConfigError


class DictConfig:
    """``to_dict`` / ``from_dict`` for frozen config dataclasses; unknown keys raise :class:`ConfigError`."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`; missing keys take defaults."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown {cls.__name__} key (known: {sorted(known)})")
        return cls(**data)


@dataclass(frozen=True)
class PointBertConfig:
    """Architecture of the PointBERT encoder and its projection into the text space.

    ``pointnet_dims`` = (first conv hidden, first conv out, second conv hidden, token channels)
    of the mini-PointNet tokenizer; the second conv's input is twice the first conv's output.
    ``in_channels``: 3 (xyz, BlendCLIP, ULIP-1) or 6 (xyz + rgb, ULIP-2).
    ``dynamic_groups``: BlendCLIP's k_i = clamp(floor(2 N_i / group_size), 1, max_groups)
    patches per cloud; ``False``: always ``max_groups`` (ULIP-2, as pointnet2's sampler does).
    ``fps_skip_near_origin``: see :func:`~blendclip_ros.model.sampling.farthest_point_sample`
    (1e-3 reproduces pointnet2's sampler, 0 the BlendCLIP release's).
    """

    width: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    drop_path: float = 0.1
    group_size: int = 32
    max_groups: int = 512
    max_points: int = 8192
    embed_dim: int = 512
    pointnet_dims: tuple[int, int, int, int] = (128, 256, 512, 256)
    pos_hidden: int = 128
    in_channels: int = 3
    dynamic_groups: bool = True
    fps_skip_near_origin: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "pointnet_dims", tuple(self.pointnet_dims))
        for name in ("width", "depth", "heads", "group_size", "max_groups", "max_points",
                     "embed_dim", "pos_hidden"):
            _check_positive_int(name, getattr(self, name))
        if self.width % self.heads:
            raise ConfigError(f"width: {self.width} is not divisible by heads={self.heads}")
        if not isinstance(self.mlp_ratio, (int, float)) or isinstance(self.mlp_ratio, bool) \
                or self.mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio: expected a positive number, got {self.mlp_ratio!r}")
        if int(self.width * self.mlp_ratio) < 1:
            raise ConfigError(f"mlp_ratio: width*mlp_ratio={self.width * self.mlp_ratio} < 1")
        if not isinstance(self.drop_path, (int, float)) or isinstance(self.drop_path, bool) \
                or not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"drop_path: expected a number in [0, 1), got {self.drop_path!r}")
        if self.in_channels not in (3, 6):
            raise ConfigError(f"in_channels: expected 3 or 6, got {self.in_channels!r}")
        if not isinstance(self.fps_skip_near_origin, (int, float)) or self.fps_skip_near_origin < 0:
            raise ConfigError(f"fps_skip_near_origin: expected a number >= 0, got "
                              f"{self.fps_skip_near_origin!r}")
        if len(self.pointnet_dims) != 4:
            raise ConfigError(f"pointnet_dims: expected 4 channel counts, got {self.pointnet_dims!r}")
        for value in self.pointnet_dims:
            _check_positive_int("pointnet_dims", value)

    @property
    def feature_dim(self) -> int:
        """Width of the pooled encoder output: concat(CLS, max-pool) = 2 * width."""
        return 2 * self.width

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of each transformer MLP."""
        return int(self.width * self.mlp_ratio)

    @classmethod
    def named(cls, name: str) -> PointBertConfig:
        """A preset: ``"full"`` (the BlendCLIP release architecture) or ``"tiny"`` (CPU tests)."""
        try:
            return cls(**_PRESETS[name])
        except KeyError:
            raise ConfigError(f"name: unknown encoder preset {name!r}; "
                              f"expected one of {sorted(_PRESETS)}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["pointnet_dims"] = list(self.pointnet_dims)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PointBertConfig:
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys raise."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"encoder: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown PointBertConfig key (known: {sorted(known)})")
        kwargs = dict(data)
        if "pointnet_dims" in kwargs:
            dims = kwargs["pointnet_dims"]
            if not isinstance(dims, (list, tuple)):
                raise ConfigError(f"pointnet_dims: expected a list of 4 ints, got {dims!r}")
            kwargs["pointnet_dims"] = tuple(dims)
        return cls(**kwargs)


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")


_PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "tiny": dict(width=128, depth=4, heads=4, mlp_ratio=2.0, drop_path=0.0, group_size=32,
                 max_groups=128, max_points=8192, embed_dim=512,
                 pointnet_dims=(32, 64, 128, 128), pos_hidden=64),
}

