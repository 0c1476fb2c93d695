"""Prompt sets, text towers (real MiniLM, random-init open_clip ViT-B-16) and the cached text bank."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from blendclip_ros.errors import CheckpointError, ConfigError, PromptError
from blendclip_ros.text import towers
from blendclip_ros.text.bank import TextBank, bank_key, build_text_bank, default_cache_dir, encode_prompt_set
from blendclip_ros.text.prompts import CONFIG_DIR, PromptClass, PromptSet, load_prompt_set, parse_prompt_set
from blendclip_ros.text.towers import MiniLMTextTower, OpenClipTextTower, file_digest, make_text_tower

NUSCENES = ["barrier", "bicycle", "bus", "car", "construction vehicle",
            "motorcycle", "pedestrian", "traffic cone", "trailer", "truck"]
TRUCKSCENES = ["animal", "pedestrian", "barrier", "traffic cone", "traffic sign", "bicycle",
               "bus", "car", "other vehicle", "motorcycle", "trailer", "truck"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own XDG cache (text banks and weight digests) and a cold digest memo."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(towers, "_DIGESTS", {})
    return tmp_path / "xdg"


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextTower:
    return MiniLMTextTower()


@pytest.fixture(scope="module")
def clip_tower() -> OpenClipTextTower:
    return OpenClipTextTower("ViT-B-16", weights=None, seed=0)


class CountingMiniLM(MiniLMTextTower):
    """The real MiniLM tower, counting encode calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        return super().encode(texts)


# --- prompt sets --------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "labels"), [("nuscenes", NUSCENES), ("truckscenes", TRUCKSCENES)])
def test_outdoor_prompt_sets_keep_the_blendclip_label_order(name, labels):
    single, ensemble = load_prompt_set(CONFIG_DIR / f"{name}.yaml"), load_prompt_set(CONFIG_DIR / f"{name}_64.yaml")
    assert single.labels == labels and ensemble.labels == labels
    assert single.templates == ("point cloud of a {}.",)
    assert len(ensemble.templates) == 64 and len(set(ensemble.templates)) == 64
    # The release embeds "point cloud of a {}." with the label names only.
    assert single.texts() == [[f"point cloud of a {label}."] for label in labels]
    assert all(not c.synonyms for c in ensemble.classes)
    variant = load_prompt_set(f"{name}_synonyms")
    assert variant.labels == labels and variant.templates == single.templates
    classes = {c.name: c for c in variant.classes}
    assert "person" in classes["pedestrian"].synonyms and "cone" in classes["traffic cone"].synonyms


@pytest.mark.parametrize(("name", "count", "members"), [
    ("modelnet40", 40, ["airplane", "flower pot", "night stand", "xbox"]),
    ("scanobjectnn", 15, ["bag", "display", "toilet"]),
    ("objaverse_lvis", 1156, ["Band Aid", "bat (animal)", "car (automobile)"]),
])
def test_synthetic_prompt_sets_match_the_shared_class_lists(shared_data, name, count, members):
    single, ensemble = load_prompt_set(name), load_prompt_set(f"{name}_64")
    assert len(single.labels) == count and single.labels == ensemble.labels
    assert set(members) <= set(single.labels)
    templates = json.loads((shared_data / "uni3d/data/templates.json").read_text())["modelnet40_64"]
    assert list(ensemble.templates) == templates
    source = {"modelnet40": "modelnet40_openshape", "scanobjectnn": "scanobjnn_openshape",
              "objaverse_lvis": "objaverse_lvis_openshape"}[name]
    names = json.loads((shared_data / "uni3d/data/labels.json").read_text())[source]
    assert single.labels == [n.replace("_", " ") for n in names]


def test_texts_fill_every_template_with_every_phrase():
    ps = PromptSet("t", (PromptClass("car", ("automobile",)), PromptClass("bus")), ("a {}.", "the {} here"))
    assert ps.texts() == [["a car.", "a automobile.", "the car here", "the automobile here"],
                          ["a bus.", "the bus here"]]


def test_from_labels_accepts_a_list_or_a_comma_string():
    assert PromptSet.from_labels("car, truck ,bus").labels == ["car", "truck", "bus"]
    ps = PromptSet.from_labels(["a", "b"], templates=["x {}"])
    assert ps.templates == ("x {}",) and ps.texts() == [["x a"], ["x b"]]
    with pytest.raises(PromptError, match="non-empty"):
        PromptSet.from_labels("car,,bus")
    with pytest.raises(PromptError, match="duplicate class 'car'"):
        PromptSet.from_labels("car,car")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="{},", blacklist_categories=("Cs",)),
                        min_size=1).filter(lambda s: s.strip() == s and s), min_size=1, max_size=12, unique=True))
def test_from_labels_round_trips_through_yaml(labels):
    ps = PromptSet.from_labels(labels)
    again = parse_prompt_set(yaml.safe_load(yaml.safe_dump(
        {"name": ps.name, "templates": list(ps.templates), "classes": ps.labels})))
    assert again == ps and again.labels == labels


GOOD = {"name": "x", "templates": ["a {}."], "classes": ["car", {"name": "pedestrian", "synonyms": ["person"]}]}


@pytest.mark.parametrize(("change", "message"), [
    ({"name": None}, "name: missing"),
    ({"templates": None}, "templates: missing"),
    ({"classes": None}, "classes: missing"),
    ({"extra": 1}, r"unknown key\(s\) \['extra'\]"),
    ({"templates": ["no slot"]}, r"templates\[0\]: 'no slot'"),
    ({"templates": ["{} and {}"]}, r"templates\[0\]"),
    ({"templates": ["{name}"]}, r"templates\[0\]"),
    ({"templates": []}, "templates: must hold at least one"),
    ({"templates": "a {}"}, "templates: must be a list"),
    ({"classes": []}, "classes: must hold at least one"),
    ({"classes": ["car", "car"]}, r"classes\[1\]\.name: duplicate class 'car'"),
    ({"classes": [3]}, r"classes\[0\]: must be a name or a mapping"),
    ({"classes": [{"synonyms": ["x"]}]}, r"classes\[0\]\.name: missing"),
    ({"classes": [{"name": "a", "colour": "red"}]}, r"classes\[0\]: unknown key"),
    ({"classes": [{"name": "a", "synonyms": "b"}]}, r"classes\[0\]\.synonyms: must be a list"),
    ({"classes": [{"name": "a", "synonyms": [""]}]}, r"classes\[0\]: names and synonyms must be non-empty"),
    ({"name": ""}, "name: must be a non-empty string"),
])
def test_invalid_prompt_sets_name_the_key(tmp_path, change, message):
    doc = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PromptError, match=message) as info:
        load_prompt_set(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unreadable_or_malformed_prompt_files(tmp_path):
    with pytest.raises(PromptError, match="cannot read prompt set"):
        load_prompt_set(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(PromptError, match="invalid YAML"):
        load_prompt_set(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- car\n")
    with pytest.raises(PromptError, match="top level must be a mapping"):
        load_prompt_set(tmp_path / "list.yaml")


# --- towers -------------------------------------------------------------------------------------

def test_minilm_matches_sentence_transformers_and_is_lazy(minilm):
    fresh = MiniLMTextTower()
    assert not fresh.is_loaded and fresh.dim == 384 and fresh.name.startswith("minilm")
    weights = Path(fresh.model_dir) / "model.safetensors"
    assert fresh.weights_digest == hashlib.sha256(weights.read_bytes()).hexdigest()
    texts = ["point cloud of a car.", "a pedestrian crossing the street", "traffic cone"]
    ours = minilm.encode(texts)
    assert ours.shape == (3, 384) and ours.dtype == torch.float32
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(3))
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(fresh.model_dir), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(ours, F.normalize(reference, dim=-1), atol=1e-5, rtol=1e-4)


def test_minilm_embeds_meaning(minilm):
    car, automobile, banana = minilm.encode(["a car", "an automobile", "a banana"])
    assert car @ automobile > car @ banana + 0.2


def test_open_clip_random_init_is_seeded_and_text_only(clip_tower):
    assert clip_tower.dim == 512 and "random-init" in clip_tower.name
    assert clip_tower.weights_digest.startswith("random-init-seed-0")
    texts = ["point cloud of a car.", "a much longer prompt about a bus in the scene at night"]
    emb = clip_tower.encode(texts)
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    assert not any(name.startswith("visual") for name, _ in clip_tower._model.named_parameters())
    same = OpenClipTextTower(seed=0).encode(texts)
    other = OpenClipTextTower(seed=1)
    assert other.weights_digest != clip_tower.weights_digest
    torch.testing.assert_close(same, emb)
    assert (other.encode(texts) - emb).abs().max() > 1e-2


def test_open_clip_trimmed_encode_equals_the_full_77_token_forward(clip_tower):
    import open_clip

    texts = ["a", "point cloud of a construction vehicle.", "There is the traffic cone in the scene."]
    tokens = open_clip.get_tokenizer("ViT-B-16")(texts)
    with torch.no_grad():
        full = F.normalize(clip_tower._model(tokens), dim=-1)
    torch.testing.assert_close(clip_tower.encode(texts), full, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def small_clip() -> OpenClipTextTower:
    """A smaller open_clip text config (width 256, 10 layers) keeps the weight-file tests quick."""
    tower = OpenClipTextTower("ViT-S-16-alt", weights=None, seed=0)
    tower.load()
    return tower


@pytest.mark.parametrize(("prefix", "suffix"), [("module.open_clip_model.", ".pt"), ("text.", ".safetensors")])
def test_open_clip_loads_weights_from_a_local_file(tmp_path, small_clip, prefix, suffix):
    state = {prefix + k: v.clone() for k, v in small_clip._model.state_dict().items()}
    state[prefix.replace("text.", "") + "visual.proj"] = torch.zeros(2, 2)  # other towers are ignored
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = OpenClipTextTower("ViT-S-16-alt", weights=path, seed=7)
    assert loaded.weights_digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.name in loaded.name and loaded.dim == 256
    texts = ["point cloud of a truck.", "bus"]
    torch.testing.assert_close(loaded.encode(texts), small_clip.encode(texts))
    assert (OpenClipTextTower("ViT-S-16-alt", seed=7).encode(texts) - small_clip.encode(texts)).abs().max() > 1e-2


def test_open_clip_rejects_unfit_or_unreachable_weights(tmp_path, minilm, small_clip):
    with pytest.raises(CheckpointError, match="holds no open_clip text-tower keys"):
        OpenClipTextTower("ViT-B-16", weights=Path(minilm.model_dir) / "model.safetensors").encode(["x"])
    small = tmp_path / "vit_s16_alt.pt"
    torch.save(small_clip._model.state_dict(), small)
    with pytest.raises(CheckpointError, match="does not fit ViT-M-16-alt's text tower"):
        OpenClipTextTower("ViT-M-16-alt", weights=small).encode(["x"])
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in small_clip._model.state_dict().items() if k != "ln_final.bias"}, partial)
    with pytest.raises(CheckpointError, match=r"missing \['ln_final.bias'\]"):
        OpenClipTextTower("ViT-S-16-alt", weights=partial).encode(["x"])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load"):
        OpenClipTextTower("ViT-B-16", weights=garbage).encode(["x"])
    with pytest.raises(ConfigError, match="allow_network=True"):
        OpenClipTextTower("ViT-B-16", weights="datacomp_xl_s13b_b90k")
    with pytest.raises(CheckpointError, match="neither a file nor a pretrained tag"):
        OpenClipTextTower("ViT-B-16", weights=tmp_path / "absent.pt")
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        OpenClipTextTower("ViT-Nope")


def test_file_digest_is_cached_by_path_mtime_and_size(tmp_path, private_cache):
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    assert file_digest(path) == hashlib.sha256(b"abc").hexdigest()
    store = private_cache / "blendclip_ros" / "digests.json"
    saved = json.loads(store.read_text())
    (key,) = saved
    saved[key] = "from-the-cache"  # a cache hit returns the stored digest without rehashing
    store.write_text(json.dumps(saved))
    towers._DIGESTS.clear()
    assert file_digest(path) == "from-the-cache"
    path.write_bytes(b"abcd")  # new size and mtime: rehashed
    assert file_digest(path) == hashlib.sha256(b"abcd").hexdigest()


def test_make_text_tower_from_checkpoint_specs():
    assert isinstance(make_text_tower({"type": "minilm"}), MiniLMTextTower)
    assert isinstance(make_text_tower(None), MiniLMTextTower)
    clip = make_text_tower({"type": "open_clip", "model": "ViT-B-16", "weights": None, "seed": 3})
    assert isinstance(clip, OpenClipTextTower) and clip.weights_digest.startswith("random-init-seed-3")
    assert not clip.is_loaded
    loader_spelling = make_text_tower({"kind": "open_clip", "model": "ViT-B-16", "pretrained": None,
                                       "embed_dim": 512})
    assert loader_spelling.weights_digest.startswith("random-init-seed-0")
    with pytest.raises(ConfigError, match="allow_network=True"):
        make_text_tower({"kind": "open_clip", "model": "ViT-B-16", "pretrained": "datacomp_xl_s13b_b90k"})
    with pytest.raises(ConfigError, match="text_tower.embed_dim: 512 but minilm"):
        make_text_tower({"type": "minilm", "embed_dim": 512})
    with pytest.raises(ConfigError, match="text_tower.type: unknown tower 'bert'"):
        make_text_tower({"type": "bert"})
    with pytest.raises(ConfigError, match="must be a mapping with a 'type'"):
        make_text_tower({"model": "ViT-B-16"})


def test_resolve_device_falls_back_to_cpu():
    assert towers.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.warns(RuntimeWarning, match="CUDA is unavailable"):
            assert towers.resolve_device("cuda") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device: 'gpu0'"):
        towers.resolve_device("gpu0")


# --- text bank ----------------------------------------------------------------------------------

def test_bank_is_the_normalised_mean_over_templates_and_phrases(minilm):
    ps = PromptSet("t", (PromptClass("pedestrian", ("person",)), PromptClass("car")), ("a {}.", "the {} here"))
    bank = build_text_bank(minilm, ps, use_cache=False)
    assert bank.labels == ("pedestrian", "car") and bank.embeddings.shape == (2, 384)
    ped = minilm.encode(["a pedestrian.", "a person.", "the pedestrian here", "the person here"]).mean(0)
    car = minilm.encode(["a car.", "the car here"]).mean(0)
    torch.testing.assert_close(bank.embeddings, F.normalize(torch.stack([ped, car]), dim=-1))


def test_warm_start_never_runs_the_tower(tmp_path):
    ps = load_prompt_set("nuscenes")
    cold_tower = CountingMiniLM()
    cold = build_text_bank(cold_tower, ps, cache_dir=tmp_path)
    assert cold_tower.calls == 1 and cold.embeddings.shape == (10, 384)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    warm_tower = CountingMiniLM()
    warm = build_text_bank(warm_tower, ps, cache_dir=tmp_path)
    assert warm_tower.calls == 0 and not warm_tower.is_loaded
    assert warm.labels == cold.labels and warm.tower_name == cold.tower_name and warm.digest == cold.digest
    torch.testing.assert_close(warm.embeddings, cold.embeddings)


def test_cache_key_covers_tower_weights_templates_and_classes():
    ps = PromptSet.from_labels("car,bus")
    base = bank_key("minilm", "d1", ps)
    assert bank_key("minilm", "d1", PromptSet.from_labels(["car", "bus"])) == base
    variants = [bank_key("open_clip", "d1", ps), bank_key("minilm", "d2", ps),
                bank_key("minilm", "d1", PromptSet.from_labels("car,bus", templates=["a {}"])),
                bank_key("minilm", "d1", PromptSet.from_labels("bus,car")),
                bank_key("minilm", "d1", PromptSet("inline", (PromptClass("car", ("auto",)), PromptClass("bus")),
                                                   ps.templates))]
    assert len({base, *variants}) == 6


def test_default_cache_dir_and_corrupt_cache_is_rebuilt(minilm, private_cache):
    assert default_cache_dir() == private_cache / "blendclip_ros" / "text"
    ps = PromptSet.from_labels("car,bus")
    first = build_text_bank(minilm, ps)
    (path,) = default_cache_dir().glob("*.safetensors")
    path.write_bytes(b"corrupt")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = build_text_bank(minilm, ps)
    torch.testing.assert_close(again.embeddings, first.embeddings)
    assert path.stat().st_size > 100  # rewritten


def test_text_bank_validates_shape_and_moves_devices(clip_tower, tmp_path):
    with pytest.raises(ConfigError, match="does not match 3 labels"):
        TextBank(["a", "b", "c"], torch.zeros(2, 4), "t", "d")
    bank = build_text_bank(clip_tower, load_prompt_set("truckscenes"), cache_dir=tmp_path)
    assert bank.dim == 512 and bank.to("cpu").labels == tuple(TRUCKSCENES)
    torch.testing.assert_close(bank.embeddings, encode_prompt_set(clip_tower, load_prompt_set("truckscenes")))


def test_batched_and_length_sorted_encoding_keeps_input_order(minilm, clip_tower, monkeypatch):
    texts = ["a much longer prompt about a construction vehicle.", "bus", "a car.", "the truck here",
             "x", "a photo of a hard to see traffic cone.", "cone"]
    expected = (minilm.encode(texts), clip_tower.encode(texts))
    monkeypatch.setattr(towers, "ENCODE_BATCH", 2)
    for tower, reference in zip((minilm, clip_tower), expected):
        torch.testing.assert_close(tower.encode(texts), reference, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(tower.encode(texts[::-1]), reference.flip(0), atol=1e-5, rtol=1e-4)
