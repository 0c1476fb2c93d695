"""Captions for mined image crops: a class template (default) or a local image-to-text model.

:class:`TemplateCaptioner` writes ``template.format(class)`` for every crop. :class:`ModelCaptioner`
runs a ``transformers`` image-text-to-text model from a local folder (never the hub), batched, on
the GPU when there is one, with every distinct crop captioned once (cache keyed by the JPEG's
SHA-1, optionally persisted as JSON lines in a folder, one file per process, so parallel workers
never interleave writes and reruns reuse every file):

* chat models (a processor with a chat template, e.g. BlendCLIP's ``gemma-3-4b-it``): a system
  turn with :data:`SYSTEM_PROMPT` and a user turn [image, ``prompt``]; the caption is the reply;
* plain captioners (BLIP, BLIP-2; the release's ablation): the image with ``prompt`` as text
  prefix, greedy decoding; the caption is the generated text with the prompt removed.

Empty replies fall back to the template.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Protocol

from blendclip_ros.errors import ConfigError

DEFAULT_TEMPLATE = "a point cloud of a {}"
PROMPT = "A photo of"
#: BlendCLIP's system prompt for gemma-3-4b-it.
SYSTEM_PROMPT = ("You are to caption images. Capture as much detail and semantic information as possible. "
                 "Only describe one object, which is the largest one in the image. Ignore the background. "
                 "Leave out image quality description from the caption.")


class Captioner(Protocol):
    name: str

    def caption_many(self, images: list[bytes], labels: list[str]) -> list[str]:
        """One caption per encoded image (``labels`` = the class of each, for fallbacks)."""

    def fallback(self, label: str) -> str:
        """The caption of a triplet without an image."""


class TemplateCaptioner:
    """``template.format(class)`` for every crop and every triplet."""

    def __init__(self, template: str = DEFAULT_TEMPLATE) -> None:
        if template.count("{}") != 1:
            raise ConfigError(f"caption template: needs exactly one '{{}}', got {template!r}")
        self.template = template
        self.name = "template"

    def caption_many(self, images: list[bytes], labels: list[str]) -> list[str]:
        return [self.fallback(label) for label in labels]

    def fallback(self, label: str) -> str:
        return self.template.format(label)


class ModelCaptioner:
    """A local ``transformers`` image-to-text model (see the module docstring)."""

    def __init__(self, model_path: str | os.PathLike, *, prompt: str = PROMPT, system_prompt: str = SYSTEM_PROMPT,
                 batch_size: int = 16, max_new_tokens: int = 77, device: str | None = None,
                 cache_dir: str | os.PathLike | None = None, template: str = DEFAULT_TEMPLATE,
                 chat_template: str | None = None) -> None:
        self.path = Path(model_path)
        if not (self.path / "config.json").is_file():
            raise ConfigError(f"caption model: {self.path} is not a local transformers model folder (no config.json)")
        if batch_size < 1 or max_new_tokens < 1:
            raise ConfigError("caption model: batch_size and max_new_tokens must be >= 1")
        self.prompt, self.system_prompt = prompt, system_prompt
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self._device = device
        self._chat_template = chat_template  # overrides the processor's (None: use the processor's, if any)
        self._template = TemplateCaptioner(template)
        self.name = f"model:{self.path.name}"
        self.cache: dict[str, str] = {}
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        for path in sorted(self.cache_dir.glob("*.jsonl")) if self.cache_dir is not None else []:
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.cache[entry["sha1"]] = entry["caption"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill
        self._model: Any = None
        self.generated = 0  # crops sent through the model (cache misses)

    def fallback(self, label: str) -> str:
        return self._template.fallback(label)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.processor = AutoProcessor.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(self.path, local_files_only=True, dtype=dtype)
        self.model.to(self.device).eval()
        self.chat = bool(self._chat_template or getattr(self.processor, "chat_template", None))
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        if self.chat:
            tokenizer.padding_side = "left"
        self._model = self.model

    def caption_many(self, images: list[bytes], labels: list[str]) -> list[str]:
        keys = [hashlib.sha1(b).hexdigest() for b in images]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if todo:
            if self._model is None:
                self._load()
            first = {k: images[keys.index(k)] for k in todo}
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start:start + self.batch_size]
                texts = self._generate([first[k] for k in batch])
                self._remember(dict(zip(batch, texts)))
        return [self.cache[k] or self.fallback(label) for k, label in zip(keys, labels)]

    def _remember(self, new: dict[str, str]) -> None:
        self.cache.update(new)
        self.generated += len(new)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with (self.cache_dir / f"{os.getpid()}.jsonl").open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps({"sha1": k, "caption": v}) + "\n" for k, v in new.items()))

    def _generate(self, jpegs: list[bytes]) -> list[str]:
        import torch
        from PIL import Image

        pictures = [Image.open(io.BytesIO(b)).convert("RGB") for b in jpegs]
        if self.chat:
            conversations = [[{"role": "system", "content": [{"type": "text", "text": self.system_prompt}]},
                              {"role": "user", "content": [{"type": "image", "image": p},
                                                           {"type": "text", "text": self.prompt}]}]
                             for p in pictures]
            inputs = self.processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True, return_tensors="pt", padding=True,
                                                        chat_template=self._chat_template)
        else:
            inputs = self.processor(images=pictures, text=[self.prompt] * len(pictures), return_tensors="pt",
                                    padding=True)
        inputs = {k: (v.to(self.device, dtype=self.model.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items() if hasattr(v, "to")}
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None and output.shape[1] >= prompt_ids.shape[1] \
                and bool((output[:, :prompt_ids.shape[1]] == prompt_ids).all()):
            output = output[:, prompt_ids.shape[1]:]  # decoder-only models echo the prompt
        texts = self.processor.batch_decode(output, skip_special_tokens=True)
        return [_strip_prompt(t, self.prompt) for t in texts]


def _strip_prompt(text: str, prompt: str) -> str:
    text = " ".join(text.split())
    if text.lower().startswith(prompt.lower()):
        text = text[len(prompt):].strip()
    return text
