"""Tiny image towers of the families open_clip builds with timm, registered with timm by name.

Each is timm's own class with the family's options (SigLIP's `map` pooling without a class
token, EVA-02's rotary embeddings and SwiGLU, PE-Core's rotary attention and `map` pooling,
MobileCLIP's FastViT with an attention stage, ConvNeXt) at a size that trains on 2 CPU cores, and
at the image size of the `dalip-tiny-*` configs in `configs/` (open_clip builds a timm tower at
the size timm registers for it). Random weights only: they exist for tests and the embedded
benchmarks. Importing `dalip` registers them, as it registers `dalip-tiny`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.layers import LayerNorm
from timm.models import build_model_with_cfg, register_model
from timm.models.convnext import ConvNeXt
from timm.models.eva import Eva
from timm.models.fastvit import FastVit, RepConditionalPosEnc
from timm.models.vision_transformer import VisionTransformer
from torch import nn

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _cfg(size: int) -> dict[str, Any]:
    return {"input_size": (3, size, size), "mean": _CLIP_MEAN, "std": _CLIP_STD, "num_classes": 0}


TINY_FAMILIES = {  # each tiny tower's family, as `dalip models` names the full-size ones
    "dalip_tiny_siglip_vit": "timm ViT",
    "dalip_tiny_eva02": "timm EVA",
    "dalip_tiny_pe_core": "timm EVA",
    "dalip_tiny_fastvit_mci": "timm FastViT",
    "dalip_tiny_convnext": "timm ConvNeXt",
}
default_cfgs = {  # read by timm's register_model: each tower's input size
    "dalip_tiny_siglip_vit": _cfg(64),
    "dalip_tiny_eva02": _cfg(64),
    "dalip_tiny_pe_core": _cfg(64),
    "dalip_tiny_fastvit_mci": _cfg(128),
    "dalip_tiny_convnext": _cfg(128),
}


def _build(
    cls: type[nn.Module], name: str, pretrained: bool, args: dict[str, Any], **kwargs: Any
) -> nn.Module:
    if pretrained:
        raise ValueError(f"{name} is a tiny random tower for tests; it has no pretrained weights")
    return build_model_with_cfg(cls, name, pretrained=False, **{**args, **kwargs})


@register_model
def dalip_tiny_siglip_vit(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """SigLIP / SigLIP 2's tower: a ViT without class token, pooled by attention (`map`)."""
    args = dict(
        img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4, class_token=False, global_pool="map"
    )
    return _build(VisionTransformer, "dalip_tiny_siglip_vit", pretrained, args, **kwargs)


@register_model
def dalip_tiny_eva02(pretrained: bool = False, **kwargs: Any) -> Eva:
    """EVA-02's tower: rotary position embeddings, SwiGLU, a class token."""
    args = dict(
        img_size=64,
        patch_size=8,
        embed_dim=96,
        depth=4,
        num_heads=3,
        mlp_ratio=4 * 2 / 3,
        swiglu_mlp=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(8, 8),
    )
    return _build(Eva, "dalip_tiny_eva02", pretrained, args, **kwargs)


@register_model
def dalip_tiny_pe_core(pretrained: bool = False, **kwargs: Any) -> Eva:
    """PE-Core's tower: rotary attention, a class token, attention pooling (`map`)."""
    args = dict(
        img_size=64,
        patch_size=8,
        embed_dim=96,
        depth=4,
        num_heads=3,
        mlp_ratio=4.0,
        global_pool="map",
        attn_type="rope",
        use_pre_transformer_norm=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(8, 8),
        rope_grid_offset=1.0,
        rope_grid_indexing="xy",
        attn_pool_num_heads=4,
        attn_pool_mlp_ratio=4.0,
        norm_layer=partial(LayerNorm, eps=1e-5),
    )
    return _build(Eva, "dalip_tiny_pe_core", pretrained, args, **kwargs)


@register_model
def dalip_tiny_fastvit_mci(pretrained: bool = False, **kwargs: Any) -> FastVit:
    """MobileCLIP's MCi tower: FastViT with RepMixer stages and a last attention stage."""
    args = dict(
        layers=(1, 1, 2, 1),
        embed_dims=(16, 32, 64, 128),
        mlp_ratios=(3, 3, 3, 3),
        se_downsamples=(False, False, True, True),
        pos_embs=(None, None, None, partial(RepConditionalPosEnc, spatial_shape=(7, 7))),
        token_mixers=("repmixer", "repmixer", "repmixer", "attention"),
        lkc_use_act=True,
    )
    return _build(FastVit, "dalip_tiny_fastvit_mci", pretrained, args, **kwargs)


@register_model
def dalip_tiny_convnext(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    """ConvNeXt (as convnext_atto, narrower)."""
    args = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128))
    return _build(ConvNeXt, "dalip_tiny_convnext", pretrained, args, **kwargs)
