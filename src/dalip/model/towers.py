"""Token sets from every tower family open_clip builds, read from the library's own modules.

DALIP needs, per tower, a first-order feature (the tower's output, untouched) and a set of
token features for the second order. No forward code is copied: a forward hook on an
open_clip module keeps the tokens of the call that computes the first order, or, for timm
towers, the call goes through timm's own seam, `forward_features` (tokens or feature map)
then `forward_head` (pooling and head), which is exactly what the tower's `forward` runs.

Per family, the tokens for the second order and how they reach the embedding space:
- open_clip `VisionTransformer`: patch tokens after `ln_post` (CoCa: the attentional pooler's
  tokens), through the tower's `proj`;
- timm ViTs (SigLIP's `map` pooling, EVA, PE-Core, ViTamin, MobileCLIP-B): `forward_features`
  tokens, prefix (class, register) tokens left out, through the tower's projection per token;
- timm CNNs and hybrids (ConvNeXt, MobileCLIP's FastViT, Swin): the positions of the last
  feature map (B, H*W, C), through the tower's projection per token;
- open_clip `ModifiedResNet` (RN50 ...): the positions of `layer4`'s map (B, H*W, C), through
  the head's own input projection;
- open_clip `TextTransformer` (any pooling, causal or not): every position after `ln_final`,
  padding masked, through the tower's text projection.

"The tower's projection per token" applies to each token the maps that follow pooling in the
tower: a norm that runs after pooling (timm's `fc_norm`, ConvNeXt's head norm), the trunk's
classifier when open_clip built it as the projection (`timm_proj` none or null), and open_clip's
adapter head (`timm_proj: linear | mlp`). Tokens then live in the space of the pooled feature,
as the open_clip ViT's patch tokens do after `proj`. Where no such per-token path exists
(ModifiedResNet's attention pool, timm's `abs_attn` / `rot_attn` pools) and the width differs
from the embedding, the MBDC head gets its own learned input projection (`MBDC(in_dim=...)`).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import open_clip
import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.timm_model import TimmModel
from open_clip.transformer import TextTransformer, VisionTransformer
from torch import nn

# Text pool types whose summary is the end-of-text token: the tokens after it are padding.
_END_POOLED = ("argmax", "eos")


class TokenTap:
    """A forward hook, registered once on a module of the tower's, that keeps the module's output
    of a call made while `armed` (one tap per tower; hooks added per call would break compiled
    graphs, and keeping every output would hold activations a plain forward does not need)."""

    def __init__(self, module: nn.Module) -> None:
        self.armed = False
        self.output: torch.Tensor | None = None
        module.register_forward_hook(self)

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if self.armed:
            self.output = output

    @contextlib.contextmanager
    def catching(self) -> Iterator[TokenTap]:
        """Arm the tap for the calls inside; `take()` the output after."""
        self.armed, self.output = True, None
        try:
            yield self
        finally:
            self.armed = False

    def take(self) -> torch.Tensor:
        output, self.output = self.output, None
        if output is None:
            raise RuntimeError("the tower module DALIP reads tokens from did not run")
        return output


class ImageTokens(abc.ABC):
    """Reads an image tower: `read(images)` -> (pooled (B, D), tokens (B, M, token_dim)).

    `pooled` is exactly the tower's output (`clip.encode_image`), before normalisation.
    Subclasses hold references to the tower's modules, never parameters of their own.
    """

    family = "image tower"
    token_dim: int
    tokens_read = ""

    @abc.abstractmethod
    def read(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled, tokens) of a batch of images; each family reads its own tower."""

    def describe(self) -> dict[str, Any]:
        return {"family": self.family, "tokens": self.tokens_read, "token_dim": int(self.token_dim)}


class OpenCLIPViTTokens(ImageTokens):
    """open_clip's VisionTransformer: patch tokens after the final norm, through `proj`.

    With `final_ln_after_pool` open_clip normalises only the pooled token, so the token set is
    read before `ln_post` and normalised here. With an attentional pooler (CoCa) the tokens are
    the pooler's outputs after `ln_post` but the first (the contrastive one): the tokens open_clip
    itself returns with `output_tokens`, and what CoCa's caption decoder reads."""

    family = "open_clip VisionTransformer"

    def __init__(self, clip: nn.Module) -> None:
        visual: VisionTransformer = clip.visual
        self.clip, self.visual = clip, visual
        self.pool_after_norm = visual.final_ln_after_pool and visual.attn_pool is None
        self.tap = TokenTap(visual.transformer if self.pool_after_norm else visual.ln_post)
        self.token_dim = int(visual.proj.shape[-1])
        self.tokens_read = (
            "attentional pooler tokens after ln_post, projected"
            if visual.attn_pool is not None
            else "patch tokens after ln_post, projected"
        )

    def read(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.tap.catching() as tap:
            pooled = self.clip.encode_image(images, normalize=False)  # (B, D)
        tokens = tap.take()  # (B, 1 + P, width), class (or contrastive query) token first
        if self.pool_after_norm:
            tokens = self.visual.ln_post(tokens)
        return pooled, tokens[:, 1:] @ self.visual.proj  # (B, P, D)


class TimmTokens(ImageTokens):
    """A timm image tower (open_clip's `TimmModel`): `forward_features` gives tokens (B, N, C),
    prefix tokens first, or a feature map (NCHW, or NHWC where timm says so); `forward_head`
    then the adapter head give the first order, as `TimmModel.forward` computes it."""

    def __init__(self, clip: nn.Module) -> None:
        visual: TimmModel = clip.visual
        self.visual, self.trunk = visual, visual.trunk
        self.prefix = int(getattr(self.trunk, "num_prefix_tokens", 0) or 0)
        self.layout = getattr(self.trunk, "output_fmt", "NCHW")
        self.map_norm, self.token_maps, self.token_dim = _timm_token_path(visual)
        kind = "patch tokens" if hasattr(self.trunk, "num_prefix_tokens") else "feature map positions"
        self.family = f"timm {type(self.trunk).__name__}"
        projected = "projected by the tower's head" if self.token_maps else "as they are"
        self.tokens_read = f"{kind} of forward_features, {projected}"

    def read(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk.forward_features(images)  # (B, N, C) tokens or a (B, C, H, W) map
        pooled = self.visual.head(self.trunk.forward_head(features))  # (B, D): TimmModel.forward
        if features.dim() == 4:
            if self.map_norm is not None:  # a norm that follows pooling, run on every position
                features = self.map_norm(features if self.layout == "NCHW" else features.permute(0, 3, 1, 2))
                tokens = features.flatten(2).transpose(1, 2)  # (B, H*W, C)
            elif self.layout == "NHWC":
                tokens = features.flatten(1, 2)  # (B, H*W, C)
            else:
                tokens = features.flatten(2).transpose(1, 2)  # (B, H*W, C)
        else:
            tokens = features[:, self.prefix :]  # (B, P, C): class and register tokens left out
        for layer in self.token_maps:
            tokens = layer(tokens)
        return pooled, tokens  # (B, D), (B, M, token_dim)


class FeatureMapTokens(ImageTokens):
    """open_clip's ModifiedResNet (RN50 ...): the positions of `layer4`'s feature map, before
    the attention pool (which has no per-token path into the embedding space)."""

    family = "open_clip ModifiedResNet"
    tokens_read = "layer4 feature map positions (the head's own input projection)"

    def __init__(self, clip: nn.Module) -> None:
        self.clip = clip
        self.tap = TokenTap(clip.visual.layer4)
        self.token_dim = int(clip.visual.attnpool.k_proj.in_features)

    def read(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.tap.catching() as tap:
            pooled = self.clip.encode_image(images, normalize=False)  # (B, D)
        return pooled, tap.take().flatten(2).transpose(1, 2)  # (B, H*W, C)


class TextTokens:
    """open_clip's text transformer, as built into `CLIP` (its modules copied onto the model) or
    as `clip.text` (`CustomTextCLIP`, CoCa): `read(texts)` -> (pooled (B, D), tokens (B, L, D),
    mask (B, L) bool or None). Every position after `ln_final`, projected; padding masked.

    `mask_padding`: towers pooled from a fixed position (`last`, `first`, CoCa's class token)
    mask the tokenizer's padding (`pad_id`); False keeps dalip 0.3's behaviour for models it
    stored (every position of such towers is a token)."""

    def __init__(self, clip: nn.Module, pad_id: int = 0, mask_padding: bool = True) -> None:
        self.clip = clip
        tower = getattr(clip, "text", None)
        if tower is None:  # open_clip's CLIP holds the text transformer's modules itself
            self.ln_final, self.projection = clip.ln_final, clip.text_projection
            self.pool_type, self.eos_id, self.pad_id = clip.text_pool_type, clip.text_eos_id, pad_id
            self.class_token = False
        elif isinstance(tower, TextTransformer):
            self.ln_final, self.projection = tower.ln_final, tower.text_projection
            self.pool_type, self.eos_id, self.pad_id = tower.pool_type, tower.eos_id, tower.pad_id
            self.class_token = tower.cls_emb is not None
        else:
            raise ValueError(
                f"its text tower ({type(tower).__name__}) is not open_clip's TextTransformer; dalip reads "
                f"text tokens from that tower only"
            )
        self.mask_padding = mask_padding
        # CoCa's text tower appends a class token and normalises only it: tokens come before ln_final.
        self.tap = TokenTap(tower.transformer if self.class_token else self.ln_final)
        width = self.ln_final.normalized_shape[0]
        self.token_dim = (
            width
            if self.projection is None
            else int(
                self.projection.out_features
                if isinstance(self.projection, nn.Linear)
                else self.projection.shape[-1]
            )
        )

    def read(self, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        with self.tap.catching() as tap:
            pooled = self.clip.encode_text(texts, normalize=False)  # (B, D)
        tokens = tap.take()  # (B, L, width); CoCa: (B, L + 1, width), class token last
        if self.class_token:
            tokens = self.ln_final(tokens[:, :-1])
        if isinstance(self.projection, nn.Linear):
            tokens = self.projection(tokens)
        elif self.projection is not None:
            tokens = tokens @ self.projection
        return pooled, tokens, self.mask(texts)  # (B, L, D)

    def mask(self, texts: torch.Tensor) -> torch.Tensor | None:
        """(B, L) bool, True for real tokens: up to and including the end-of-text token when the
        tower pools there, else every non-padding token (the first always); None: all."""
        positions = torch.arange(texts.shape[-1], device=texts.device)
        if self.pool_type == "argmax" and not self.class_token:
            end = texts.argmax(dim=-1)  # the end-of-text id is the largest id
        elif self.pool_type == "eos" and not self.class_token:
            end = (texts == self.eos_id).int().argmax(dim=-1)
        elif self.mask_padding:
            return (texts != self.pad_id) | (positions[None, :] == 0)
        else:
            return None
        return positions[None, :] <= end[:, None]

    def describe(self) -> dict[str, Any]:
        pool = "class token" if self.class_token else self.pool_type
        masked = (
            "up to end-of-text" if pool in _END_POOLED else ("padding masked" if self.mask_padding else "all")
        )
        return {"family": "open_clip TextTransformer", "pool": pool, "tokens": masked}


def read_image_tokens(clip: nn.Module) -> ImageTokens:
    """The token reader of `clip.visual`; ValueError naming the tower it cannot read."""
    visual = getattr(clip, "visual", None)
    if isinstance(visual, VisionTransformer):
        reason = vision_transformer_reason(visual.pool_type, getattr(visual, "attn_pool_type", ""))
        if reason:
            raise ValueError(reason)
        return OpenCLIPViTTokens(clip)
    if isinstance(visual, TimmModel):
        return TimmTokens(clip)
    if isinstance(visual, ModifiedResNet):
        return FeatureMapTokens(clip)
    raise ValueError(
        f"its image tower ({type(visual).__name__}) is none of open_clip's VisionTransformer, "
        f"ModifiedResNet or timm towers"
    )


def vision_transformer_reason(pool_type: str, attentional_pool: Any = "") -> str | None:
    """Why an open_clip VisionTransformer configured so gives no first order and tokens, or None."""
    if isinstance(attentional_pool, str) and attentional_pool:
        return (
            f"its image tower pools with open_clip's {attentional_pool!r} attentional pooler, which "
            f"open_clip marks untested; dalip supports CoCa's original pooler"
        )
    if pool_type not in ("tok", "avg"):
        return f"its image tower's pool type {pool_type!r} returns every token instead of one feature"
    return None


def _timm_token_path(visual: TimmModel) -> tuple[nn.Module | None, list[Callable], int]:
    """(a norm for the NCHW map, per-token maps, the tokens' width) of a timm tower: what follows
    pooling in `forward_head` and in open_clip's adapter head, applied to every token."""
    trunk = visual.trunk
    width = int(trunk.num_features)
    adapter = visual.head
    if "pool" in getattr(adapter, "_modules", {}):  # open_clip's own attention pool: no per-token path
        return None, [], width
    head = getattr(trunk, "head", None)
    map_norm = _real(getattr(head, "norm", None)) if _has_pool(head) else None
    maps: list[Callable] = []
    fc_norm = _real(getattr(trunk, "fc_norm", None))
    if fc_norm is not None:
        maps.append(fc_norm)
    pre_logits = _real(getattr(head, "pre_logits", None)) if _has_pool(head) else None
    if pre_logits is not None:
        maps.append(pre_logits)
        width = int(head.hidden_size)
    classifier = trunk.get_classifier() if hasattr(trunk, "get_classifier") else None
    if isinstance(classifier, nn.Linear):
        maps.append(classifier)
        width = classifier.out_features
    if "proj" in adapter._modules:
        maps.append(adapter)
        width = adapter.proj.out_features
    elif "mlp" in adapter._modules:
        maps.append(adapter)
        width = adapter.mlp.fc2.out_features
    return map_norm, maps, width


def _has_pool(head: Any) -> bool:
    """A timm classifier head that pools itself (ConvNeXt's, FastViT's): its norm and pre-logits
    follow pooling; a plain Linear head has neither."""
    return isinstance(head, nn.Module) and hasattr(head, "global_pool")


def _real(module: Any) -> nn.Module | None:
    return module if isinstance(module, nn.Module) and not isinstance(module, nn.Identity) else None


def open_clip_text_pad_id(model_name: str) -> int:
    """The padding id open_clip's registered config gives the text tower (its default 0)."""
    config = open_clip.get_model_config(model_name) or {}
    return int((config.get("text_cfg") or {}).get("pad_id", 0))
