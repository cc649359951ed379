"""DALIPModel: an unmodified open_clip CLIP plus one MBDC head per tower.

Token sets are read from open_clip's own modules with forward hooks on the final
norms, so no open_clip forward code is copied and the first-order features are exactly
what `open_clip.CLIP.encode_image` / `encode_text` return.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, NamedTuple

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn

from dalip.checkpoint import save_model
from dalip.mbdc import MBDC

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
SIMILARITY_MODES = ("fused", "first", "second")
# Our small configs use a smaller MBDC than the paper's (4 heads x 46): a 4324-wide
# projection would dwarf a model of a few million parameters.
OUR_MBDC_DEFAULTS: dict[str, dict[str, int]] = {"dalip-tiny": {"heads": 4, "reduced_dim": 16}}


def register_model_configs(path: str | Path = MODEL_CONFIG_DIR) -> None:
    """Add a folder (or file) of open_clip JSON model configs to open_clip's registry."""
    path = Path(path)
    names = [p.stem for p in path.glob("*.json")] if path.is_dir() else [path.stem]
    if not all(name in open_clip.list_models() for name in names):
        open_clip.add_model_config(path)


register_model_configs()


class Features(NamedTuple):
    """First-order (pooled token) and second-order (MBDC) features, each (B, D), L2-normalised."""

    first: torch.Tensor
    second: torch.Tensor | None


def fuse(first: torch.Tensor, second: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B, D) and (B, D2) unit rows -> (B, D + D2) unit rows whose dot products are
    `alpha * cos(first) + (1 - alpha) * cos(second)`."""
    return torch.cat([math.sqrt(alpha) * first, math.sqrt(1.0 - alpha) * second], dim=-1)


def unsupported_reason(config: dict[str, Any]) -> str | None:
    """Why an open_clip model config cannot carry DALIP heads, or None when it can."""
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    if "timm_model_name" in vision:
        return "its image tower is a timm model, not open_clip's VisionTransformer"
    if "hf_model_name" in text or config.get("custom_text"):
        return "its text tower is not open_clip's own text transformer"
    if vision.get("attentional_pool"):
        return "its image tower pools with attention, so it has no summary token"
    if vision.get("pool_type", "tok") not in ("tok", "avg"):
        return f"image pool type {vision.get('pool_type')!r} has no summary token"
    return None


def supported_model_names() -> list[str]:
    """open_clip architectures (and ours) that DALIP can wrap."""
    return [
        name for name in open_clip.list_models()
        if unsupported_reason(open_clip.get_model_config(name)) is None
    ]


def check_model_name(model_name: str) -> None:
    """Raise ValueError unless `model_name` is a registered, supported architecture."""
    config = open_clip.get_model_config(model_name)
    if config is None:
        vits = [n for n in supported_model_names() if n.startswith(("ViT-", "dalip-"))]
        raise ValueError(
            f"unknown model name {model_name!r}; expected an open_clip ViT architecture or one "
            f"of ours, e.g. {', '.join(vits[:8])} (see open_clip.list_models())"
        )
    reason = unsupported_reason(config)
    if reason is not None:
        raise ValueError(f"model {model_name!r} is not supported by DALIP: {reason}")


class _Capture:
    """Holds the output of a module for the duration of one call (forward hook)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.output: torch.Tensor | None = None

    def __enter__(self) -> "_Capture":
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.output = output

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


class DALIPModel(nn.Module):
    """An open_clip CLIP with image and text MBDC heads.

    `self.clip` is the plain open_clip model (unchanged); `encode_image` / `encode_text`
    return `Features(first, second)`.
    """

    def __init__(
        self,
        clip: open_clip.CLIP,
        model_name: str,
        alpha: float = 0.5,
        heads: int = 4,
        reduced_dim: int = 46,
        dropout: float = 0.1,
        learnable_temperature: bool = False,
        separate_second_temperature: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(clip, open_clip.CLIP) or not isinstance(clip.visual, VisionTransformer):
            raise ValueError(
                f"DALIPModel needs an open_clip.CLIP with a VisionTransformer image tower, "
                f"got {type(clip).__name__}"
            )
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.clip = clip
        self.model_name = model_name
        self.alpha = float(alpha)
        self.mbdc_options = dict(
            heads=heads, reduced_dim=reduced_dim, dropout=dropout,
            learnable_temperature=learnable_temperature,
        )
        dim = clip.text_projection.shape[-1] if isinstance(clip.text_projection, nn.Parameter) \
            else clip.text_projection.out_features
        self.embed_dim = dim
        self.image_mbdc = MBDC(dim, **self.mbdc_options)
        self.text_mbdc = MBDC(dim, **self.mbdc_options)
        self.logit_scale_second = (
            nn.Parameter(clip.logit_scale.detach().clone()) if separate_second_temperature else None
        )

    @property
    def logit_scale(self) -> nn.Parameter:
        """The model's learnable temperature (log scale), shared with open_clip."""
        return self.clip.logit_scale

    def encode_image(self, images: torch.Tensor, second_order: bool = True) -> Features:
        """images (B, 3, H, W) -> Features; `second_order=False` skips MBDC (second=None)."""
        visual = self.clip.visual
        ln_after_pool = visual.final_ln_after_pool
        # With final_ln_after_pool open_clip normalises only the pooled token, so the
        # token set is read before ln_post and normalised here.
        with _Capture(visual.transformer if ln_after_pool else visual.ln_post) as capture:
            pooled = self.clip.encode_image(images)  # (B, D)
        first = F.normalize(pooled, dim=-1)
        if not second_order:
            return Features(first, None)
        tokens = capture.output  # (B, 1 + P, width), class token first
        if ln_after_pool:
            tokens = visual.ln_post(tokens)
        patches = tokens[:, 1:] @ visual.proj  # (B, P, D)
        return Features(first, self.image_mbdc(patches, pooled))

    def encode_text(self, texts: torch.Tensor, second_order: bool = True) -> Features:
        """texts (B, L) token ids -> Features; padding after end-of-text is masked out."""
        with _Capture(self.clip.ln_final) as capture:
            pooled = self.clip.encode_text(texts)  # (B, D)
        first = F.normalize(pooled, dim=-1)
        if not second_order:
            return Features(first, None)
        tokens = capture.output  # (B, L, width)
        projection = self.clip.text_projection
        tokens = projection(tokens) if isinstance(projection, nn.Linear) else tokens @ projection
        return Features(first, self.text_mbdc(tokens, pooled, self.text_mask(texts)))

    def text_mask(self, texts: torch.Tensor) -> torch.Tensor | None:
        """(B, L) bool, True up to and including the end-of-text token; None if unknown."""
        pool_type = self.clip.text_pool_type
        if pool_type == "argmax":
            end = texts.argmax(dim=-1)  # the end-of-text id is the largest id
        elif pool_type == "eos":
            end = (texts == self.clip.text_eos_id).int().argmax(dim=-1)
        else:
            return None
        positions = torch.arange(texts.shape[-1], device=texts.device)
        return positions[None, :] <= end[:, None]

    def similarity(self, image: Features, text: Features, mode: str = "fused") -> torch.Tensor:
        """Cosine similarity (N_image, N_text): alpha * first + (1 - alpha) * second by default."""
        if mode not in SIMILARITY_MODES:
            raise ValueError(f"similarity mode must be one of {SIMILARITY_MODES}, got {mode!r}")
        if mode == "first":
            return image.first @ text.first.T
        if image.second is None or text.second is None:
            raise ValueError(f"similarity mode {mode!r} needs second-order features")
        second = image.second @ text.second.T
        if mode == "second":
            return second
        return self.alpha * (image.first @ text.first.T) + (1.0 - self.alpha) * second

    def fused_embedding(self, features: Features) -> torch.Tensor:
        """One unit vector per row, (B, D + D2): `[sqrt(alpha) * first, sqrt(1 - alpha) * second]`.

        Dot products of these vectors equal the fused similarity, so a single-vector tool
        (a vector index, CLIP_benchmark, an ONNX consumer) ranks exactly as `similarity`.
        """
        if features.second is None:
            raise ValueError("fused_embedding needs second-order features (encode with second_order=True)")
        return fuse(features.first, features.second, self.alpha)

    def forward(
        self, images: torch.Tensor, texts: torch.Tensor, second_order: bool = True
    ) -> dict[str, Any]:
        """Features of a batch and the temperatures (exponentiated) for `DALIPLoss`."""
        output = {
            "image_features": self.encode_image(images, second_order),
            "text_features": self.encode_text(texts, second_order),
            "logit_scale": self.clip.logit_scale.exp(),
        }
        if self.logit_scale_second is not None:
            output["logit_scale_second"] = self.logit_scale_second.exp()
        return output

    def config(self) -> dict[str, Any]:
        """JSON-able description that rebuilds this architecture (stored in checkpoints)."""
        return {
            "model_name": self.model_name,
            "open_clip_config": open_clip.get_model_config(self.model_name),
            "alpha": self.alpha,
            "mbdc": dict(self.mbdc_options),
            "separate_second_temperature": self.logit_scale_second is not None,
            "image_size": _as_list(self.clip.visual.image_size),
            "context_length": int(self.clip.context_length),
            "preprocess_cfg": dict(getattr(self.clip.visual, "preprocess_cfg", {}) or {}),
        }

    def save(self, path: str | Path) -> None:
        """Write weights and config to a safetensors file (atomically)."""
        save_model(self, path)

    def mbdc_parameter_names(self) -> list[str]:
        """Names of the parameters DALIP adds to the open_clip model."""
        return [n for n, _ in self.named_parameters() if not n.startswith("clip.")]


def _as_list(size: Any) -> Any:
    return list(size) if isinstance(size, (tuple, list)) else size
