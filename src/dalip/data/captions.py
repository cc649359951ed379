"""Captions: parsing single or multi-caption fields, weighted choice, tokenisation.

A caption is either a plain string or a JSON object of named captions, e.g.
``{"scientific": "Quercia lobata", "common": "purple oakleaf", "description": "..."}``.
Values may be strings or lists of strings (one is picked uniformly). Which named caption
a sample shows is drawn per sample per step with `SourceConfig.caption_weights`
(keys missing from a sample are skipped and the rest renormalised; default uniform over
the present keys of `DEFAULT_CAPTION_KEYS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from dalip.readers import load_json_text

# Names of JSON fields read as captions when no `caption_weights` are given; a plain
# caption is stored under "caption" (CSV cell) or "txt" (the `.txt` member of a shard).
DEFAULT_CAPTION_KEYS: tuple[str, ...] = (
    "caption",
    "txt",
    "scientific",
    "common",
    "taxonomic",
    "description",
)

# CLIP-style templates for image-folder sources ("{}" is the readable class name).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}, a type of plant.",
    "a cropped photo of a {}.",
    "a blurry photo of a {}.",
    "{}",
)


class CaptionError(ValueError):
    """A caption field that cannot be used; `reason` is a `SKIP_REASONS` entry."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


Tokenizer = Callable[[list[str]], Any]


def parse_caption_field(raw: str | bytes | None, plain_key: str) -> dict[str, Any]:
    """Turn a caption cell or a `.txt`/`.json` payload into {name: caption(s)}.

    Text starting with "{" is read as a JSON object of named captions; anything else is
    one caption stored under `plain_key`. Raises `CaptionError` for broken JSON.
    """
    if raw is None:
        return {}
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    stripped = text.strip()
    if not stripped.startswith("{"):
        return {plain_key: stripped}
    try:
        value = load_json_text(stripped)
    except ValueError as error:  # broken, or nested deeper than dalip reads
        raise CaptionError("bad_caption", f"caption is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise CaptionError("bad_caption", "JSON caption must be an object of named captions")
    return value


def _usable(value: Any) -> list[str]:
    """Non-blank caption strings held by one named field (a string or a list)."""
    items = value if isinstance(value, list) else [value]
    return [item.strip() for item in items if isinstance(item, str) and item.strip()]


def choose_caption(
    captions: Mapping[str, Any],
    weights: Mapping[str, float] | None,
    rng: np.random.Generator,
) -> str:
    """Draw one caption from named captions (see module docstring for the rule).

    Raises `CaptionError("empty_caption")` when no weighted key holds a non-blank text.
    """
    keys = list(weights) if weights is not None else list(DEFAULT_CAPTION_KEYS)
    present = [(key, _usable(captions.get(key))) for key in keys]
    present = [(key, texts) for key, texts in present if texts]
    if weights is not None:
        present = [(key, texts) for key, texts in present if weights[key] > 0]
    if not present:
        raise CaptionError("empty_caption", "no non-empty caption")
    if len(present) == 1:
        texts = present[0][1]
    else:
        scores = np.array([weights[key] if weights else 1.0 for key, _ in present])
        texts = present[int(rng.choice(len(present), p=scores / scores.sum()))][1]
    return texts[int(rng.integers(len(texts)))] if len(texts) > 1 else texts[0]


def validate_caption_weights(weights: Mapping[str, float] | None, where: str) -> None:
    """ValueError unless `weights` maps caption names to non-negative, not-all-zero numbers."""
    if weights is None:
        return
    if not weights or any(float(w) < 0 for w in weights.values()):
        raise ValueError(f"{where}: caption_weights must be non-negative numbers, got {dict(weights)}")
    if sum(float(w) for w in weights.values()) <= 0:
        raise ValueError(f"{where}: caption_weights must not all be zero, got {dict(weights)}")


def tokenize_caption(caption: str, tokenizer: Tokenizer | None) -> Any:
    """Caption -> token ids `(L,)` with an open_clip-style tokenizer, or the string itself.

    open_clip tokenizers map a one-element list to a `(1, L)` LongTensor; its first row
    is returned so that a DataLoader stacks texts to `(B, L)`.
    """
    if tokenizer is None:
        return caption
    tokens = tokenizer([caption])
    if isinstance(tokens, torch.Tensor) and tokens.dim() == 2:
        return tokens[0]  # (L,)
    return tokens[0] if isinstance(tokens, (list, tuple)) else tokens


TEMPLATE_PLACEHOLDERS = ("{}", "{c}")  # where a template takes the class name


def check_template(template: str, where: str = "caption template") -> str:
    """The template, or ValueError (naming `where`) when it has no class-name placeholder."""
    if not any(placeholder in template for placeholder in TEMPLATE_PLACEHOLDERS):
        raise ValueError(f"{where}: template {template!r} has no '{{}}' placeholder for the class name")
    return template


def fill_template(template: str, class_name: str) -> str:
    """ "a photo of a {}." + "Quercia lobata" -> "a photo of a Quercia lobata."."""
    placeholder = next(p for p in TEMPLATE_PLACEHOLDERS if p in check_template(template))
    return template.replace(placeholder, class_name)
