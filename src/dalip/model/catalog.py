"""Which open_clip architectures DALIP supports, what it reads from each, and how it was checked.

`architectures()` reads open_clip's registry (configs only, instant): each architecture's image
tower family, text tower, default loss form and pretrained tags, and the verdict of
`dalip.model.registry.unsupported_reason`. `build_on_meta(name)` builds the DALIP model of an
architecture on the meta device (shapes only, no memory) and encodes a batch there: what the slow
test and `benchmarks/architectures.py` run over every architecture, so that a verdict is never
only read off a config.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import open_clip
import timm
import torch

from dalip.config import PAPER_MBDC
from dalip.model.dalip_model import DALIPModel
from dalip.model.factory import ARCHITECTURE_MBDC, quiet_loading, quiet_root_logger
from dalip.model.registry import unsupported_reason
from dalip.model.tiny_towers import TINY_FAMILIES

# timm modules -> the family name users know them by
_TIMM_FAMILIES = {
    "vision_transformer": "timm ViT",
    "vision_transformer_relpos": "timm ViT",
    "vision_transformer_hybrid": "timm ViT",
    "vitamin": "timm ViTamin",
    "eva": "timm EVA",
    "convnext": "timm ConvNeXt",
    "fastvit": "timm FastViT",
    "swin_transformer": "timm Swin",
}


@dataclass
class Architecture:
    """One open_clip architecture as DALIP sees it; `reason` None: supported."""

    name: str
    image_tower: str
    text_tower: str
    loss_form: str
    pretrained: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def supported(self) -> bool:
        return self.reason is None


def architectures(names: list[str] | None = None) -> list[Architecture]:
    """Every registered architecture (or `names`), read from its config."""
    return [describe(name) for name in (open_clip.list_models() if names is None else names)]


def describe(name: str) -> Architecture:
    """The `Architecture` of a registered open_clip architecture; ValueError for an unknown name."""
    config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(f"unknown model name {name!r} (see `dalip models`)")
    vision, text = config.get("vision_cfg") or {}, config.get("text_cfg") or {}
    return Architecture(
        name=name,
        image_tower=image_family(vision),
        text_tower=text_family(text),
        loss_form="sigmoid" if config.get("init_logit_bias") is not None else "softmax",
        pretrained=open_clip.list_pretrained_tags_by_model(name),
        reason=unsupported_reason(config),
    )


def image_family(vision: dict[str, Any]) -> str:
    """The image tower's family, read from its config."""
    timm_name = vision.get("timm_model_name")
    if timm_name:
        family = TINY_FAMILIES.get(timm_name) or _TIMM_FAMILIES.get(
            _timm_modules().get(timm_name, ""), "timm"
        )
        return f"{family} ({timm_name})"
    if isinstance(vision.get("layers"), (list, tuple)):
        return "open_clip ModifiedResNet"
    if vision.get("attentional_pool"):
        return "open_clip ViT + attentional pool (CoCa)"
    return "open_clip ViT"


def text_family(text: dict[str, Any]) -> str:
    """The text tower's family and pooling, read from its config."""
    if "hf_model_name" in text:
        return f"Hugging Face {text['hf_model_name']}"
    pool = "class token" if text.get("embed_cls") else text.get("pool_type", "argmax")
    causal = "bidirectional" if text.get("no_causal_mask") else "causal"
    return f"open_clip ({pool}, {causal})"


@functools.cache
def _timm_modules() -> dict[str, str]:
    """timm model name -> the timm module that defines it."""
    return {name: module for module in timm.list_modules() for name in timm.list_models(module=module)}


def build_on_meta(name: str, batch: int = 2) -> tuple[DALIPModel, dict[str, tuple[int, ...]]]:
    """The DALIP model of architecture `name` built on the meta device, and the shapes of a
    batch's features encoded there ({"image_first", "image_second", "text_first", "text_second"}).
    ValueError (from the towers' readers) when DALIP cannot read the built towers."""
    options = ARCHITECTURE_MBDC.get(name, PAPER_MBDC)
    with torch.device("meta"), quiet_loading(), quiet_root_logger():
        clip = open_clip.create_model(name, device="meta")
        model = DALIPModel(clip, name, mbdc=options)
        size = clip.visual.image_size
        height, width = size if isinstance(size, (tuple, list)) else (size, size)
        image = model.encode_image(torch.empty(batch, 3, height, width))
        text = model.encode_text(torch.zeros(batch, clip.context_length, dtype=torch.long))
    shapes = {
        "image_first": tuple(image.first.shape),
        "image_second": tuple(image.second.shape),
        "text_first": tuple(text.first.shape),
        "text_second": tuple(text.second.shape),
    }
    return model, shapes
