"""TextBank: one normalised text embedding per class, with an on-disk cache and bank files.

A class embedding is the L2-normalised mean of the normalised embeddings of every template
filled with every phrase (name + synonyms). Banks are cached as safetensors files keyed by the
sha256 of a canonical JSON of (tower name, weights digest, templates, classes); a cache hit
never calls the tower, so a lazy tower never builds its network.

A prompt-bank file (:func:`save_bank`, written by ``blendclip-prompts encode``) holds the
embeddings with the labels, templates, phrases, tower name, text space and weights digest, so
the node, ``blendclip-classify`` and evaluation classify without any text tower.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import ConfigError
from .prompts import PromptSet
from .towers import TextTower, cache_root

CACHE_FORMAT = 1


@dataclass(frozen=True)
class TextBank:
    """Class labels and their (C, D) L2-normalised embeddings from one text tower."""

    labels: tuple[str, ...]
    embeddings: torch.Tensor
    tower_name: str
    digest: str
    #: The tower's text space (``TextTower.text_space``); empty when unknown.
    text_space: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.labels):
            raise ConfigError(f"embeddings: shape {tuple(self.embeddings.shape)} does not match "
                              f"{len(self.labels)} labels")

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def to(self, device: str | torch.device) -> TextBank:
        """The same bank with its embeddings on ``device``."""
        return TextBank(self.labels, self.embeddings.to(device), self.tower_name, self.digest, self.text_space)


def bank_key(tower_name: str, digest: str, prompt_set: PromptSet) -> str:
    """sha256 of the canonical JSON of everything that determines the embeddings."""
    doc = {
        "format": CACHE_FORMAT,
        "tower": tower_name,
        "digest": digest,
        "templates": list(prompt_set.templates),
        "classes": [list(c.phrases) for c in prompt_set.classes],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/blendclip_ros/text``."""
    return cache_root() / "text"


def encode_prompt_set(tower: TextTower, prompt_set: PromptSet) -> torch.Tensor:
    """(C, D) class embeddings: one batched encode, then a per-class mean and re-normalisation."""
    per_class = prompt_set.texts()
    texts = [t for texts in per_class for t in texts]
    counts = torch.tensor([len(texts) for texts in per_class], device=tower.device)
    owner = torch.repeat_interleave(torch.arange(len(per_class), device=tower.device), counts)
    emb = F.normalize(tower.encode(texts).float(), dim=-1)
    sums = torch.zeros(len(per_class), emb.shape[1], device=emb.device).index_add_(0, owner, emb)
    return F.normalize(sums / counts.unsqueeze(1), dim=-1)


def _cache_path(cache_dir: Path, prompt_set: PromptSet, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", prompt_set.name)[:40]
    return cache_dir / f"{safe}-{key[:32]}.safetensors"


def _read_cache(path: Path, key: str, labels: list[str]) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            emb = f.get_tensor("embeddings")
    except (OSError, SafetensorError, KeyError, ValueError) as exc:
        warnings.warn(f"text cache {path} is unreadable ({exc}); rebuilding it", RuntimeWarning, stacklevel=3)
        return None
    if meta.get("key") != key or json.loads(meta.get("labels", "[]")) != labels or emb.shape[0] != len(labels):
        warnings.warn(f"text cache {path} does not match its key; rebuilding it", RuntimeWarning, stacklevel=3)
        return None
    return emb


def _write_cache(path: Path, key: str, bank: TextBank) -> None:
    meta = {"key": key, "labels": json.dumps(list(bank.labels)), "tower": bank.tower_name, "digest": bank.digest}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file({"embeddings": bank.embeddings.detach().cpu().contiguous()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"cannot write text cache {path} ({exc})", RuntimeWarning, stacklevel=3)


def build_text_bank(tower: TextTower, prompt_set: PromptSet, cache_dir: str | Path | None = None, *,
                    use_cache: bool = True) -> TextBank:
    """The prompt set's bank from ``tower``, read from / written to the cache when ``use_cache``."""
    key = bank_key(tower.name, tower.weights_digest, prompt_set)
    path = _cache_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), prompt_set, key)
    if use_cache:
        cached = _read_cache(path, key, prompt_set.labels)
        if cached is not None:
            return TextBank(prompt_set.labels, cached.to(tower.device), tower.name, tower.weights_digest,
                            tower.text_space)
    bank = TextBank(prompt_set.labels, encode_prompt_set(tower, prompt_set), tower.name, tower.weights_digest,
                    tower.text_space)
    if bank.dim != tower.dim:
        raise ConfigError(f"text_tower: {tower.name} returned {bank.dim}-d embeddings, declared {tower.dim}")
    if use_cache:
        _write_cache(path, key, bank)
    return bank


BANK_FORMAT = "blendclip_ros.prompt_bank"
BANK_VERSION = 1


def save_bank(path: str | Path, bank: TextBank, prompt_set: PromptSet) -> Path:
    """Write ``bank`` (built from ``prompt_set``) as one safetensors prompt-bank file."""
    path = Path(path)
    if list(bank.labels) != prompt_set.labels:
        raise ConfigError("bank: its labels are not the prompt set's")
    document = {"format": BANK_FORMAT, "version": BANK_VERSION, "prompt_set": prompt_set.name,
                "labels": list(bank.labels), "templates": list(prompt_set.templates),
                "phrases": [list(c.phrases) for c in prompt_set.classes], "tower": bank.tower_name,
                "text_space": bank.text_space, "weights_digest": bank.digest, "dim": bank.dim}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file({"embeddings": bank.embeddings.detach().float().cpu().contiguous()}, str(tmp),
              metadata={BANK_FORMAT: json.dumps(document)})
    os.replace(tmp, path)
    return path


def read_bank_document(path: str | Path) -> tuple[dict, torch.Tensor]:
    """The metadata document and the ``(C, D)`` embeddings of a prompt-bank file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            embeddings = f.get_tensor("embeddings")
    except (OSError, SafetensorError, KeyError, ValueError) as exc:
        raise ConfigError(f"bank: {path} is not a readable prompt-bank file ({exc})") from None
    try:
        document = json.loads(meta[BANK_FORMAT])
    except (KeyError, json.JSONDecodeError):
        raise ConfigError(f"bank: {path} has no {BANK_FORMAT!r} metadata (not written by "
                          "blendclip-prompts encode)") from None
    if document.get("version") != BANK_VERSION:
        raise ConfigError(f"bank: {path} has version {document.get('version')!r}, expected {BANK_VERSION}")
    return document, embeddings


def load_bank(path: str | Path) -> TextBank:
    """A :class:`TextBank` from a prompt-bank file (no text tower needed)."""
    document, embeddings = read_bank_document(path)
    labels = document.get("labels")
    if not isinstance(labels, list) or embeddings.ndim != 2 or embeddings.shape[0] != len(labels):
        raise ConfigError(f"bank: {path} labels do not match its {tuple(embeddings.shape)} embeddings")
    norms = embeddings.float().norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
        raise ConfigError(f"bank: {path} embeddings are not L2-normalised")
    return TextBank(tuple(labels), embeddings.float(), str(document.get("tower", "")),
                    str(document.get("weights_digest", "")), str(document.get("text_space", "")))


def check_bank_space(bank: TextBank, text_space: str | None, dim: int, what: str = "the model") -> None:
    """Refuse a bank from another text space than ``what``'s (or of another width).

    ``text_space`` ``None`` or empty (a model whose text tower is not known): only widths are compared.
    """
    if bank.dim != dim:
        raise ConfigError(f"bank: {bank.dim}-d embeddings ({bank.tower_name}) but {what} is {dim}-d")
    if text_space and bank.text_space and bank.text_space != text_space:
        raise ConfigError(f"bank: built in text space {bank.text_space} ({bank.tower_name}), but {what} "
                          f"was aligned to {text_space}")
