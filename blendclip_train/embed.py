"""Frozen CLIP embeddings of a shard folder, computed once: ``blendclip-embed``.

Every caption goes through a frozen text tower and every image (rendered view or camera crop)
through the matching frozen image tower; the rows land in one sidecar per shard
(:func:`blendclip_train.shards.write_embeddings`) under the key ``<tower>-<weights digest[:12]>``,
e.g. ``open_clip-ViT-B-16-1a2b3c4d5e6f``, so training never runs the frozen towers.

* ``open_clip``: text and image towers of one open_clip model (``ViT-B-16`` as the release)
  from a local weights file, or randomly initialised with a seed (tests). Images use the
  model's evaluation transform (resize, centre crop, its mean/std): the embedding is computed
  once, so the release's per-access random resized crop is not reproduced.
* ``minilm``: the bundled all-MiniLM-L6-v2 for text only (no image tower).

Resumable: a shard whose sidecar exists is skipped; sidecars are written atomically. Zero-length
image entries (views published as embeddings only, e.g. OpenShape) get NaN rows.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from blendclip_ros.errors import ConfigError, PointFileError
from blendclip_ros.text.towers import (
    TextTower,
    file_digest,
    make_text_tower,
    resolve_device,
)

from .shards import ShardReader, embedding_path, list_shards, write_embeddings

TOWERS = ("open_clip", "minilm")


def default_device() -> str:
    """``cuda`` when a GPU is present, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def embedding_key(tower: str, digest: str) -> str:
    """Sidecar key ``<tower>-<digest[:12]>`` (a non-hex digest, e.g. of a random init, is hashed)."""
    if not all(c in "0123456789abcdef" for c in digest) or len(digest) < 12:
        digest = hashlib.sha256(digest.encode()).hexdigest()
    return f"{tower}-{digest[:12]}"


class OpenClipImageTower:
    """The vision side of an open_clip model: image bytes -> ``(N, dim)`` L2-normalised embeddings."""

    def __init__(self, model_name: str = "ViT-B-16", weights: str | Path | None = None, *,
                 device: str | torch.device = "cpu", seed: int = 0) -> None:
        import open_clip
        from open_clip.model import _build_vision_tower

        config = open_clip.get_model_config(model_name)
        if config is None:
            raise ConfigError(f"model: unknown open_clip model {model_name!r}")
        self.device = torch.device(device)
        self.dim = int(config["embed_dim"])
        if weights is None:
            self.weights_digest = f"random-init-seed-{seed}-torch-{torch.__version__}"
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                visual = _build_vision_tower(self.dim, config["vision_cfg"],
                                             quick_gelu=bool(config.get("quick_gelu", False)))
        else:
            if not Path(weights).is_file():
                raise ConfigError(f"weights: {weights} is not a file (embeddings need local weights)")
            self.weights_digest = file_digest(weights)
            try:
                visual = open_clip.create_model(model_name, pretrained=str(weights)).visual
            except Exception as exc:  # noqa: BLE001 - any loader failure is a bad weights file
                raise ConfigError(f"weights: {weights} does not load into {model_name} "
                                  f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})") from None
        self.model = visual.to(self.device).eval().requires_grad_(False)
        size = visual.image_size
        self.transform = open_clip.image_transform(size, is_train=False, mean=getattr(visual, "image_mean", None),
                                                   std=getattr(visual, "image_std", None))
        self.name = f"open_clip:{model_name}:{'random-init' if weights is None else Path(weights).name}"

    def encode(self, images: list[bytes], batch_size: int = 64) -> torch.Tensor:
        """``(N, dim)`` float32 on CPU, in input order; zero-length entries give NaN rows."""
        from PIL import Image

        out = torch.full((len(images), self.dim), torch.nan)
        present = [i for i, data in enumerate(images) if len(data)]
        for start in range(0, len(present), batch_size):
            rows = present[start:start + batch_size]
            pixels = []
            for i in rows:
                try:
                    pixels.append(self.transform(Image.open(io.BytesIO(images[i])).convert("RGB")))
                except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
                    raise PointFileError(f"image {i}: cannot decode ({type(exc).__name__}: {exc})") from None
            with torch.inference_mode():
                features = self.model(torch.stack(pixels).to(self.device))
            out[rows] = F.normalize(features.float(), dim=-1).cpu()
        return out


@dataclass
class EmbedResult:
    """What :func:`embed_shards` did."""

    key: str
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    captions: int = 0
    images: int = 0
    seconds: float = 0.0
    objects: int = 0


def make_towers(tower: str, *, model: str = "ViT-B-16", weights: str | Path | None = None,
                device: str | torch.device = "cpu", seed: int = 0
                ) -> tuple[TextTower, OpenClipImageTower | None, str, dict[str, Any]]:
    """Text tower, image tower (None for MiniLM), sidecar key and the attributes recorded with it."""
    if tower not in TOWERS:
        raise ConfigError(f"tower: expected one of {', '.join(TOWERS)}, got {tower!r}")
    dev = resolve_device(device)
    if tower == "minilm":
        if weights is not None:
            raise ConfigError("weights: the MiniLM tower uses its bundled weights; pass no weights file")
        text = make_text_tower({"type": "minilm"}, dev)
        return text, None, embedding_key("minilm-all-MiniLM-L6-v2", text.weights_digest), {
            "text_tower": text.name, "digest": text.weights_digest}
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(f"weights: {weights} is not a file (embeddings need local weights)")
    text = make_text_tower({"type": "open_clip", "model": model, "weights": None if weights is None else str(weights),
                            "seed": seed}, dev)
    image = OpenClipImageTower(model, weights, device=dev, seed=seed)
    return text, image, embedding_key(f"open_clip-{model}", image.weights_digest), {
        "text_tower": text.name, "image_tower": image.name, "digest": image.weights_digest,
        "image_transform": "open_clip eval (resize, centre crop)"}


def embed_shards(source: str | Path, *, tower: str = "open_clip", model: str = "ViT-B-16",
                 weights: str | Path | None = None, device: str | torch.device | None = None, seed: int = 0,
                 batch_size: int = 64, progress: bool = False) -> EmbedResult:
    """Write the missing embedding sidecars of every shard under ``source`` (a folder or one shard)."""
    shards = list_shards(source)
    text_tower, image_tower, key, attrs = make_towers(tower, model=model, weights=weights,
                                                      device=device or default_device(), seed=seed)
    result = EmbedResult(key)
    start = time.perf_counter()
    for shard in tqdm(shards, disable=not progress, desc=f"embed {key}", unit="shard"):
        if embedding_path(shard, key).is_file():
            result.skipped.append(shard)
            continue
        objects = len(ShardReader(shard))  # also checks that this is a shard
        with h5py.File(shard, "r") as f:  # whole columns at once
            captions = [c.decode() if isinstance(c, bytes) else str(c) for c in f["captions"][()]]
            images = [bytes(b) for b in f["images"][()]] if image_tower is not None else []
        text = text_tower.encode(captions).float().cpu().numpy() if captions else np.zeros((0, text_tower.dim),
                                                                                          np.float32)
        image = None
        if image_tower is not None:
            try:
                image = image_tower.encode(images, batch_size).numpy()
            except PointFileError as exc:
                raise PointFileError(f"{shard}: {exc}") from None
        result.written.append(write_embeddings(shard, key, text=text, image=image, attrs=attrs))
        result.captions += len(captions)
        result.images += len(images)
        result.objects += objects
    result.seconds = time.perf_counter() - start
    return result
