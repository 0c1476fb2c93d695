"""Prompt sets: class names with synonyms and prompt templates, loaded from YAML.

A prompt-set file looks like::

    name: nuscenes
    description: optional free text (provenance)
    templates: ["point cloud of a {}."]
    classes:
      - car                          # a bare name
      - {name: pedestrian, synonyms: [person]}

Every template holds exactly one ``{}``; class names are unique. A class embedding is the
normalised mean over templates x (name + synonyms) (see ``text.bank``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import PromptError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "prompts"
#: Where bare set names are looked up: the source tree, then the installed package's share folder.
SEARCH_DIRS = (CONFIG_DIR, Path(sys.prefix) / "share" / "blendclip_ros" / "config" / "prompts")
DEFAULT_TEMPLATES: tuple[str, ...] = ("point cloud of a {}.",)
_TOP_KEYS = {"name", "description", "templates", "classes"}
_CLASS_KEYS = {"name", "synonyms"}


@dataclass(frozen=True)
class PromptClass:
    """One class: its display name and optional synonyms (all used in the prompts)."""

    name: str
    synonyms: tuple[str, ...] = ()

    @property
    def phrases(self) -> tuple[str, ...]:
        """The name followed by its synonyms."""
        return (self.name, *self.synonyms)


@dataclass(frozen=True)
class PromptSet:
    """A named list of classes and the templates their phrases are inserted into."""

    name: str
    classes: tuple[PromptClass, ...]
    templates: tuple[str, ...]
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def labels(self) -> list[str]:
        """Display names in class order."""
        return [c.name for c in self.classes]

    def texts(self) -> list[list[str]]:
        """Per class, every template filled with every phrase (templates outer, phrases inner)."""
        return [[t.format(p) for t in self.templates for p in c.phrases] for c in self.classes]

    @classmethod
    def from_labels(
        cls, labels: list[str] | str, templates: list[str] | tuple[str, ...] = DEFAULT_TEMPLATES,
        name: str = "inline",
    ) -> PromptSet:
        """A prompt set from plain class names (a list, or one comma-separated string)."""
        if isinstance(labels, str):
            labels = [s.strip() for s in labels.split(",")]
        return cls(
            name=name,
            classes=tuple(PromptClass(str(label)) for label in labels),
            templates=tuple(templates),
        )


def _validate(ps: PromptSet) -> None:
    if not isinstance(ps.name, str) or not ps.name.strip():
        raise PromptError("name: must be a non-empty string")
    if not ps.templates:
        raise PromptError("templates: must hold at least one template")
    for i, t in enumerate(ps.templates):
        if not isinstance(t, str) or t.count("{}") != 1 or t.count("{") != 1 or t.count("}") != 1:
            raise PromptError(f"templates[{i}]: {t!r} must be a string with exactly one '{{}}'")
    if not ps.classes:
        raise PromptError("classes: must hold at least one class")
    seen: set[str] = set()
    for i, c in enumerate(ps.classes):
        for phrase in c.phrases:
            if not isinstance(phrase, str) or not phrase.strip():
                raise PromptError(f"classes[{i}]: names and synonyms must be non-empty strings, got {phrase!r}")
        if c.name in seen:
            raise PromptError(f"classes[{i}].name: duplicate class {c.name!r}")
        seen.add(c.name)


def _parse_class(i: int, entry: Any) -> PromptClass:
    if isinstance(entry, str):
        return PromptClass(entry)
    if not isinstance(entry, dict):
        raise PromptError(f"classes[{i}]: must be a name or a mapping with 'name', got {type(entry).__name__}")
    unknown = set(entry) - _CLASS_KEYS
    if unknown:
        raise PromptError(f"classes[{i}]: unknown key(s) {sorted(unknown)} (allowed: name, synonyms)")
    if "name" not in entry:
        raise PromptError(f"classes[{i}].name: missing")
    if not isinstance(entry["name"], str):
        raise PromptError(f"classes[{i}].name: must be a string, got {entry['name']!r}")
    synonyms = entry.get("synonyms") or []
    if not isinstance(synonyms, list):
        raise PromptError(f"classes[{i}].synonyms: must be a list of strings")
    return PromptClass(entry["name"], tuple(synonyms))


def parse_prompt_set(data: Any, source: str = "<prompt set>") -> PromptSet:
    """Validate a decoded YAML/JSON mapping and build the prompt set."""
    if not isinstance(data, dict):
        raise PromptError(f"{source}: top level must be a mapping with name, templates, classes")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise PromptError(f"{source}: unknown key(s) {sorted(unknown)} (allowed: {sorted(_TOP_KEYS)})")
    for key in ("name", "templates", "classes"):
        if key not in data:
            raise PromptError(f"{source}: {key}: missing")
    if not isinstance(data["templates"], list):
        raise PromptError(f"{source}: templates: must be a list of strings")
    if not isinstance(data["classes"], list):
        raise PromptError(f"{source}: classes: must be a list")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise PromptError(f"{source}: description: must be a string")
    try:
        return PromptSet(
            name=data["name"],
            classes=tuple(_parse_class(i, e) for i, e in enumerate(data["classes"])),
            templates=tuple(data["templates"]),
            description=description,
        )
    except PromptError as exc:
        raise PromptError(f"{source}: {exc}") from None


def load_prompt_set(path: str | Path) -> PromptSet:
    """Load a prompt-set YAML; a bare name such as ``"nuscenes"`` resolves in ``SEARCH_DIRS``."""
    p = Path(path)
    if not p.suffix and not p.exists():
        p = next((d / f"{p.name}.yaml" for d in SEARCH_DIRS if (d / f"{p.name}.yaml").is_file()), p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"{p}: cannot read prompt set ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PromptError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
    return parse_prompt_set(data, str(p))
