"""Captioning mined crops: templates, and a tiny randomly initialised BLIP built here (no hub access)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from blendclip_ros.errors import ConfigError
from blendclip_train.captioning import ModelCaptioner, TemplateCaptioner

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "car", "red", "truck", "person", "the",
         "on", "road", "parked", "white", "bus", "near", "street"]
# a chat template that keeps only the text turns (BLIP needs no image tokens)
CHAT = "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }} {% endif %}" \
       "{% endfor %}{% endfor %}"


def tiny_blip(folder):
    """Save a randomly initialised 1-layer BLIP captioner with a 20-word tokenizer into ``folder``."""
    torch = pytest.importorskip("torch")
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = BlipConfig(vision_config=dict(small, image_size=32, patch_size=8),
                        text_config=dict(small, vocab_size=len(WORDS), max_position_embeddings=64, bos_token_id=2,
                                         sep_token_id=3, pad_token_id=0), projection_dim=16)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_template_captions_and_bad_templates():
    captioner = TemplateCaptioner("a photo of a {}")
    assert captioner.caption_many([b"x", b"y"], ["car", "bus"]) == ["a photo of a car", "a photo of a bus"]
    assert captioner.fallback("truck") == "a photo of a truck"
    with pytest.raises(ConfigError, match="template"):
        TemplateCaptioner("no placeholder")


@pytest.mark.parametrize("chat", [False, True])
def test_model_captions_are_batched_cached_per_crop_and_persisted(tmp_path, chat):
    model = tiny_blip(tmp_path / "blip")
    cache = tmp_path / "cache"
    captioner = ModelCaptioner(model, batch_size=2, max_new_tokens=6, cache_dir=cache, device="cpu",
                               chat_template=CHAT if chat else None)  # chat: system + user turns, as for gemma-3
    images = [jpeg(0), jpeg(1), jpeg(0), jpeg(2), jpeg(1)]
    captions = captioner.caption_many(images, ["car"] * 5)
    assert captioner.chat == chat and captioner.generated == 3  # three distinct crops
    assert captions[0] == captions[2] and captions[1] == captions[4]
    vocabulary = set(WORDS[5:])
    for text in captions:
        assert text and (set(text.split()) <= vocabulary or text == "a point cloud of a car")
    assert any(text != "a point cloud of a car" for text in captions)  # the model said something
    again = ModelCaptioner(model, cache_dir=cache, device="cpu")
    assert again.caption_many(images[:2], ["car", "car"]) == captions[:2] and again.generated == 0
    (cache / "12345.jsonl").write_text('{"sha1": "cut')  # another process's line cut by a kill is ignored
    assert len(ModelCaptioner(model, cache_dir=cache).cache) == 3


def test_model_folder_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        ModelCaptioner(tmp_path)


def test_mining_cli_captions_real_crops_with_the_model(shared_data, tmp_path):
    from blendclip_train.cli.mine import main
    from blendclip_train.shards import ShardSet

    info = shared_data / "mmdet3d/demo/data/nuscenes/n015-2018-07-24-11-22-45+0800.pkl"
    if not info.exists():
        pytest.skip("real nuScenes sample frame not available")
    model = tiny_blip(tmp_path / "blip")
    assert main(["--dataset", "mmdet3d", "--dataroot", str(info), "--out", str(tmp_path / "real"), "--images",
                 "--caption-model", str(model), "--caption-batch", "4", "--caption-max-tokens", "6"]) == 0
    data = list(ShardSet(tmp_path / "real"))
    with_images = [s for s in data if s.images]
    assert with_images and all(len(s.captions) == len(s.images) for s in with_images)
    assert all(s.meta["captioner"] == "model:blip" for s in data)
    model_captions = [c for s in with_images for c in s.captions if c != f"a point cloud of a {s.label}"]
    assert model_captions and all(len(c.split()) <= 6 for c in model_captions)  # --caption-max-tokens 6
    assert all(s.captions == [f"a point cloud of a {s.label}"] for s in data if not s.images)
