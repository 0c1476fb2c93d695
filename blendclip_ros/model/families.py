"""The supported point-model families: input conventions and the text towers they were aligned to.

One place for what differs between families beyond their weights (facts from the authors'
code and model pages, see the shared notes on public 3D CLIP models):

============================  =======  ==========  ======  ======  ====================================
family / variant              points   order       up      colour  text tower (open_clip, tag)
============================  =======  ==========  ======  ======  ====================================
blendclip (release, project)  <= 8192  norm->FPS   as is   none    ViT-B-16 datacomp_xl_s13b_b90k
ulip2_pointbert xyzrgb        10000    FPS->norm   y       0.4     ViT-bigG-14 laion2b_s39b_b160k
ulip2_pointbert xyz           8192     FPS->norm   y       none    SLIP (not in open_clip: bank only)
openshape_ppat vitg14         10000    rand->norm  z       0.4     ViT-bigG-14 laion2b_s39b_b160k
openshape_ppat vitl14/vitb32  10000    rand->norm  z       0.4     ViT-L-14 / ViT-B-32 openai
uni3d tiny..giant             10000    norm        y       0.4     EVA02-E-14-plus laion2b_s9b_b144k
============================  =======  ==========  ======  ======  ====================================

Sparse crops are resampled up to the family's count (every point kept plus random duplicates)
where the authors' evaluations do so.
"""

from __future__ import annotations

from typing import Any

from blendclip_ros.geometry.preprocess import InputConvention

BLENDCLIP, ULIP2, OPENSHAPE, UNI3D = "blendclip", "ulip2_pointbert", "openshape_ppat", "uni3d"
FAMILIES = (BLENDCLIP, ULIP2, OPENSHAPE, UNI3D)

_AUTHORS_FILL = dict(resample_up=True, order="sample_then_normalize")

CONVENTIONS: dict[tuple[str, str], InputConvention] = {
    (ULIP2, "xyzrgb"): InputConvention(num_points=10000, up_axis="y", channels=6, **_AUTHORS_FILL),
    (ULIP2, "xyz"): InputConvention(num_points=8192, up_axis="y", channels=3, **_AUTHORS_FILL),
    (OPENSHAPE, ""): InputConvention(num_points=10000, up_axis="z", channels=6, **_AUTHORS_FILL),
    (UNI3D, ""): InputConvention(num_points=10000, up_axis="y", channels=6, **_AUTHORS_FILL),
}


def _open_clip(model: str, tag: str, dim: int) -> dict[str, Any]:
    return {"type": "open_clip", "model": model, "pretrained": tag, "embed_dim": dim}


#: (family, variant) -> the text tower the family was aligned to (None: not an open_clip tower).
TEXT_TOWERS: dict[tuple[str, str], dict[str, Any] | None] = {
    (BLENDCLIP, "release"): _open_clip("ViT-B-16", "datacomp_xl_s13b_b90k", 512),
    (ULIP2, "xyzrgb"): _open_clip("ViT-bigG-14", "laion2b_s39b_b160k", 1280),
    (ULIP2, "xyz"): None,
    (OPENSHAPE, "vitg14"): _open_clip("ViT-bigG-14", "laion2b_s39b_b160k", 1280),
    (OPENSHAPE, "vitl14"): _open_clip("ViT-L-14", "openai", 768),
    (OPENSHAPE, "vitb32"): _open_clip("ViT-B-32", "openai", 512),
    (UNI3D, ""): _open_clip("EVA02-E-14-plus", "laion2b_s9b_b144k", 1024),
}

#: Where each family's weights are published.
WEIGHTS = {
    BLENDCLIP: "none public (github.com/kesu1/BlendCLIP releases code only)",
    ULIP2: "HF dataset SFXX/ulip: ULIP-2/models/ULIP-2-PointBERT-10k-colored-pc-pretrained.pt",
    OPENSHAPE: "HF OpenShape/openshape-pointbert-vit{g14,l14,b32}-rgb: model.pt",
    UNI3D: "HF BAAI/Uni3D: modelzoo/uni3d-{ti,s,b,l,g}[-no-lvis]/model.pt",
}


def convention_for(family: str, variant: str) -> InputConvention | None:
    """The family's input convention, or ``None`` for BlendCLIP (its model's own default)."""
    return CONVENTIONS.get((family, variant), CONVENTIONS.get((family, "")))


def text_tower_for(family: str, variant: str) -> dict[str, Any] | None:
    """A copy of the text-tower spec the family's variant was aligned to (``None``: unknown)."""
    spec = TEXT_TOWERS.get((family, variant), TEXT_TOWERS.get((family, "")))
    return dict(spec) if spec is not None else None
