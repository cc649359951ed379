"""DALIPModel: an unmodified open_clip model plus one MBDC head per tower.

Token sets are read from open_clip's and timm's own modules (`dalip.model.towers`), so no
forward code is copied and the first-order features are exactly what the open_clip model's
`encode_image` / `encode_text` return.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn

from dalip.config import DEFAULT_ALPHA, DEFAULT_ANSWER_MODE, PAPER_MBDC, LossForm, MBDCOptions
from dalip.model.features import Features, fuse
from dalip.model.file_format import save_model
from dalip.model.mbdc import MBDC
from dalip.model.towers import TextTokens, open_clip_text_pad_id, read_image_tokens

logger = logging.getLogger(__name__)

SIMILARITY_MODES = ("fused", "first", "second")
LOSS_FORMS = ("softmax", "sigmoid")
TEXT_PADDING = ("masked", "kept")
SIGLIP_INIT_BIAS = -10.0  # open_clip's (and SigLIP's) initial logit bias for the sigmoid loss
MAX_SCALE = 100.0  # open_clip clamps exp(logit_scale) to at most 100 in training


def capped_scale(logit_scale: torch.Tensor) -> torch.Tensor:
    """exp(logit_scale), at most 100: the temperature a model answers with."""
    return logit_scale.exp().clamp(max=MAX_SCALE)


class DALIPModel(nn.Module):
    """An open_clip model (`CLIP`, `CustomTextCLIP` or `CoCa`) with image and text MBDC heads.

    `self.clip` is the plain open_clip model (unchanged); `encode_image` / `encode_text`
    return `Features(first, second)`. Token sets come from `dalip.model.towers` (one reader
    per tower family). Implements `dalip.model.features.Encoder`.

    `loss_form` is the contrastive form the model is trained and answers with: "softmax"
    (CLIP's InfoNCE) or "sigmoid" (SigLIP's pairwise loss with a learned logit bias: open_clip's
    `logit_bias` for the first order, `logit_bias_second` for the second). `text_padding`
    "masked" masks padding of text towers pooled from a fixed position; "kept" is dalip 0.3's
    behaviour, kept for the models it stored.

    `answer_mode` is the similarity the model answers with when a caller names none (stored
    in its file; `dalip train` chooses it on validation data); None: `default_mode` says.
    """

    has_second_order = True

    def __init__(
        self,
        clip: nn.Module,
        model_name: str,
        alpha: float = DEFAULT_ALPHA,
        mbdc: MBDCOptions = PAPER_MBDC,
        separate_second_temperature: bool = False,
        loss_form: LossForm = "softmax",
        text_padding: str = "masked",
        answer_mode: str | None = None,
    ) -> None:
        super().__init__()
        if answer_mode is not None and answer_mode not in SIMILARITY_MODES:
            raise ValueError(f"answer_mode must be one of {SIMILARITY_MODES} or None, got {answer_mode!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if loss_form not in LOSS_FORMS:
            raise ValueError(f"loss form must be one of {LOSS_FORMS}, got {loss_form!r}")
        if text_padding not in TEXT_PADDING:
            raise ValueError(f"text_padding must be one of {TEXT_PADDING}, got {text_padding!r}")
        if not isinstance(getattr(clip, "logit_scale", None), nn.Parameter):
            raise ValueError(
                f"DALIPModel needs an open_clip model with a logit_scale, got {type(clip).__name__}"
            )
        self._image_tokens = read_image_tokens(clip)
        self._text_tokens = TextTokens(
            clip, open_clip_text_pad_id(model_name), mask_padding=text_padding == "masked"
        )
        self.clip = clip
        self.model_name = model_name
        self.alpha = float(alpha)
        self.loss_form = loss_form
        self.text_padding = text_padding
        self.answer_mode = answer_mode
        mbdc = mbdc.filled(PAPER_MBDC)  # heads / reduced_dim None: the paper's
        self.mbdc_options = mbdc
        dim = self.embed_dim = self._text_tokens.token_dim
        image_dim = self._image_tokens.token_dim
        self.image_mbdc = MBDC(dim, in_dim=image_dim, **dataclasses.asdict(mbdc))
        self.text_mbdc = MBDC(dim, **dataclasses.asdict(mbdc))
        self.logit_scale_second = (
            nn.Parameter(clip.logit_scale.detach().clone()) if separate_second_temperature else None
        )
        self.logit_bias_second = None
        if loss_form == "sigmoid":
            if clip.logit_bias is None:  # a start model trained with the softmax loss: SigLIP's init
                clip.logit_bias = nn.Parameter(torch.full_like(clip.logit_scale.detach(), SIGLIP_INIT_BIAS))
            self.logit_bias_second = nn.Parameter(clip.logit_bias.detach().clone())

    @property
    def logit_scale(self) -> nn.Parameter:
        """The model's learnable temperature (log scale), shared with open_clip."""
        return self.clip.logit_scale

    def encode_image(self, images: torch.Tensor, second_order: bool = True) -> Features:
        """images (B, 3, H, W) -> Features; `second_order=False` skips MBDC (second=None)."""
        if not second_order:
            return Features(F.normalize(self.clip.encode_image(images, normalize=False), dim=-1), None)
        pooled, tokens = self._image_tokens.read(images)  # (B, D), (B, M, C)
        return Features(F.normalize(pooled, dim=-1), self.image_mbdc(tokens, pooled))

    def encode_text(self, texts: torch.Tensor, second_order: bool = True) -> Features:
        """texts (B, L) token ids -> Features; padding is masked out of the token set."""
        if not second_order:
            return Features(F.normalize(self.clip.encode_text(texts, normalize=False), dim=-1), None)
        pooled, tokens, mask = self._text_tokens.read(texts)  # (B, D), (B, L, D), (B, L)
        return Features(F.normalize(pooled, dim=-1), self.text_mbdc(tokens, pooled, mask))

    def text_mask(self, texts: torch.Tensor) -> torch.Tensor | None:
        """(B, L) bool, True for the tokens of the text's token set; None: every position."""
        return self._text_tokens.mask(texts)

    @property
    def default_mode(self) -> str:
        """The mode a caller that names none gets: the stored `answer_mode`; else "first" for a
        model whose fused similarity is its first order (alpha 1: CLIP tuning), else
        `DEFAULT_ANSWER_MODE`."""
        if self.answer_mode is not None:
            return self.answer_mode
        return "first" if self.alpha == 1.0 else DEFAULT_ANSWER_MODE

    def similarity(self, image: Features, text: Features, mode: str | None = None) -> torch.Tensor:
        """Cosine similarity (N_image, N_text) in `mode` (default: `default_mode`): "first",
        "second", or "fused" = alpha * first + (1 - alpha) * second."""
        mode = mode or self.default_mode
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
        if self.loss_form == "sigmoid":
            output["logit_bias"] = self.clip.logit_bias
            output["logit_bias_second"] = self.logit_bias_second
        return output

    @torch.no_grad()
    def logits(self, image: Features, text: Features, mode: str | None = None) -> torch.Tensor:
        """(N_image, N_text) logits in the model's own form, for probabilities.

        softmax: the temperature (capped at 100, as open_clip clamps it) times `similarity`;
        sigmoid: per order `scale * cos + bias` with that order's temperature and bias, the
        orders mixed by alpha for "fused" (`sigmoid` of it is the probability that a pair matches).
        `mode` None: `default_mode`.
        """
        mode = mode or self.default_mode
        if self.loss_form == "softmax":
            return capped_scale(self.clip.logit_scale) * self.similarity(image, text, mode)
        first = image.first @ text.first.T
        if mode == "first":
            return capped_scale(self.clip.logit_scale) * first + self.clip.logit_bias
        scale_second = self.logit_scale if self.logit_scale_second is None else self.logit_scale_second
        second = capped_scale(scale_second) * self.similarity(image, text, "second") + self.logit_bias_second
        if mode == "second":
            return second
        first = capped_scale(self.clip.logit_scale) * first + self.clip.logit_bias
        return self.alpha * first + (1.0 - self.alpha) * second

    def config(self) -> dict[str, Any]:
        """JSON-able description that rebuilds this architecture (stored in checkpoints)."""
        return {
            "model_name": self.model_name,
            "open_clip_config": self._open_clip_config(),
            "alpha": self.alpha,
            "mbdc": dataclasses.asdict(self.mbdc_options),
            "separate_second_temperature": self.logit_scale_second is not None,
            "loss_form": self.loss_form,
            "text_padding": self.text_padding,
            **({} if self.answer_mode is None else {"answer_mode": self.answer_mode}),
            "tokens": self.describe_tokens(),  # for readers: rebuilt from the architecture, never read back
            "image_size": _as_list(self.clip.visual.image_size),
            "context_length": int(self.clip.context_length),
            "preprocess_cfg": dict(getattr(self.clip.visual, "preprocess_cfg", {}) or {}),
        }

    def _open_clip_config(self) -> dict[str, Any] | None:
        """The registered architecture, with `quick_gelu` set when the towers were built with it
        and `init_logit_bias` when the model has a logit bias (so open_clip builds the parameter)."""
        config = open_clip.get_model_config(self.model_name)
        if config is not None and any(isinstance(m, QuickGELU) for m in self.clip.modules()):
            config = {**config, "quick_gelu": True}
        if config is not None and self.clip.logit_bias is not None and "init_logit_bias" not in config:
            config = {**config, "init_logit_bias": SIGLIP_INIT_BIAS}
        return config

    def describe_tokens(self) -> dict[str, Any]:
        """Which tokens each tower gives the second order (family, tokens, widths)."""
        image = self._image_tokens.describe()
        if image["token_dim"] != self.embed_dim:
            image["tokens"] += (
                f"; {image['token_dim']} channels, into {self.embed_dim} by the head's projection"
            )
        return {"image": image, "text": self._text_tokens.describe()}

    def save(self, path: str | Path) -> None:
        """Write weights and config to a safetensors file (atomically)."""
        save_model(self, path)

    def mbdc_parameter_names(self) -> list[str]:
        """Names of the parameters DALIP adds to the open_clip model."""
        return [n for n, _ in self.named_parameters() if not n.startswith("clip.")]


def _as_list(size: Any) -> Any:
    return list(size) if isinstance(size, (tuple, list)) else size
