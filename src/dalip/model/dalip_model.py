"""DALIPModel: an unmodified open_clip CLIP plus one MBDC head per tower.

Token sets are read from open_clip's own modules with forward hooks on the final
norms, so no open_clip forward code is copied and the first-order features are exactly
what `open_clip.CLIP.encode_image` / `encode_text` return.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import nn

from dalip.config import DEFAULT_ALPHA, PAPER_MBDC, MBDCOptions
from dalip.model.features import Features, fuse
from dalip.model.file_format import save_model
from dalip.model.mbdc import MBDC

logger = logging.getLogger(__name__)

SIMILARITY_MODES = ("fused", "first", "second")


class _TokenTap:
    """A forward hook, registered once on a module of open_clip's, that keeps the module's output
    of a call made while `armed` (one tap per tower; hooks added per call would break compiled
    graphs, and keeping every output would hold activations a plain CLIP forward does not need)."""

    def __init__(self, module: nn.Module) -> None:
        self.armed = False
        self.output: torch.Tensor | None = None
        module.register_forward_hook(self)

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if self.armed:
            self.output = output

    @contextlib.contextmanager
    def catching(self) -> Iterator[_TokenTap]:
        """Arm the tap for the calls inside; `take()` the output after."""
        self.armed, self.output = True, None
        try:
            yield self
        finally:
            self.armed = False

    def take(self) -> torch.Tensor:
        output, self.output = self.output, None
        if output is None:
            raise RuntimeError("the open_clip module DALIP reads tokens from did not run")
        return output


class DALIPModel(nn.Module):
    """An open_clip CLIP with image and text MBDC heads.

    `self.clip` is the plain open_clip model (unchanged); `encode_image` / `encode_text`
    return `Features(first, second)`. Implements `dalip.model.features.Encoder`.
    """

    has_second_order = True

    def __init__(
        self,
        clip: open_clip.CLIP,
        model_name: str,
        alpha: float = DEFAULT_ALPHA,
        mbdc: MBDCOptions = PAPER_MBDC,
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
        mbdc = mbdc.filled(PAPER_MBDC)  # heads / reduced_dim None: the paper's
        self.mbdc_options = mbdc
        dim = (
            clip.text_projection.shape[-1]
            if isinstance(clip.text_projection, nn.Parameter)
            else clip.text_projection.out_features
        )
        self.embed_dim = dim
        self.image_mbdc = MBDC(dim, **dataclasses.asdict(mbdc))
        self.text_mbdc = MBDC(dim, **dataclasses.asdict(mbdc))
        self.logit_scale_second = (
            nn.Parameter(clip.logit_scale.detach().clone()) if separate_second_temperature else None
        )
        # With final_ln_after_pool open_clip normalises only the pooled token, so the image
        # token set is read before ln_post and normalised in encode_image.
        visual = clip.visual
        self._image_tap = _TokenTap(visual.transformer if visual.final_ln_after_pool else visual.ln_post)
        self._text_tap = _TokenTap(clip.ln_final)

    @property
    def logit_scale(self) -> nn.Parameter:
        """The model's learnable temperature (log scale), shared with open_clip."""
        return self.clip.logit_scale

    def encode_image(self, images: torch.Tensor, second_order: bool = True) -> Features:
        """images (B, 3, H, W) -> Features; `second_order=False` skips MBDC (second=None)."""
        visual = self.clip.visual
        if not second_order:
            return Features(F.normalize(self.clip.encode_image(images), dim=-1), None)
        with self._image_tap.catching() as tap:
            pooled = self.clip.encode_image(images)  # (B, D)
        first = F.normalize(pooled, dim=-1)
        tokens = tap.take()  # (B, 1 + P, width), class token first
        if visual.final_ln_after_pool:
            tokens = visual.ln_post(tokens)
        patches = tokens[:, 1:] @ visual.proj  # (B, P, D)
        return Features(first, self.image_mbdc(patches, pooled))

    def encode_text(self, texts: torch.Tensor, second_order: bool = True) -> Features:
        """texts (B, L) token ids -> Features; padding after end-of-text is masked out."""
        if not second_order:
            return Features(F.normalize(self.clip.encode_text(texts), dim=-1), None)
        with self._text_tap.catching() as tap:
            pooled = self.clip.encode_text(texts)  # (B, D)
        first = F.normalize(pooled, dim=-1)
        tokens = tap.take()  # (B, L, width)
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

    def forward(self, images: torch.Tensor, texts: torch.Tensor, second_order: bool = True) -> dict[str, Any]:
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
            "open_clip_config": self._open_clip_config(),
            "alpha": self.alpha,
            "mbdc": dataclasses.asdict(self.mbdc_options),
            "separate_second_temperature": self.logit_scale_second is not None,
            "image_size": _as_list(self.clip.visual.image_size),
            "context_length": int(self.clip.context_length),
            "preprocess_cfg": dict(getattr(self.clip.visual, "preprocess_cfg", {}) or {}),
        }

    def _open_clip_config(self) -> dict[str, Any] | None:
        """The registered architecture, with `quick_gelu` set when the towers were built with it."""
        config = open_clip.get_model_config(self.model_name)
        if config is not None and any(isinstance(m, QuickGELU) for m in self.clip.modules()):
            config = {**config, "quick_gelu": True}
        return config

    def save(self, path: str | Path) -> None:
        """Write weights and config to a safetensors file (atomically)."""
        save_model(self, path)

    def mbdc_parameter_names(self) -> list[str]:
        """Names of the parameters DALIP adds to the open_clip model."""
        return [n for n, _ in self.named_parameters() if not n.startswith("clip.")]


def _as_list(size: Any) -> Any:
    return list(size) if isinstance(size, (tuple, list)) else size
