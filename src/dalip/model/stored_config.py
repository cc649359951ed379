"""What a checkpoint's stored architecture config may hold.

A checkpoint is untrusted input: its model name becomes an open_clip registry key and the
stem of a JSON file dalip registers, its config is handed to open_clip. Both are checked
here before any use (imports nothing of ours: file_format, registry and factory share it).
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import open_clip

from dalip.config import MBDCOptions
from dalip.readers import quoted
from dalip.schema import check_fields, from_dict

# Architecture names read from files are used as open_clip registry keys and as the stem
# of a JSON file dalip registers: no separators, no "..", no "hf-hub:" / "local-dir:".
SAFE_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")
# Config keys that would make open_clip fetch from the network when a stored model is built:
# timm's ImageNet weights and Hugging Face text towers. A Hugging Face tokenizer name is allowed
# only when one of open_clip's own architectures uses it (`known_tokenizers`).
_FETCHING_KEYS = ("hf_model_name", "hf_model_pretrained")
# No open_clip ViT with DALIP heads comes near this (ViT-bigG-14: about 2.6 billion).
MAX_STORED_PARAMETERS = 5_000_000_000


def check_plain_model_name(name: Any, where: str) -> str:
    """`name` if it is a plain architecture name (see SAFE_MODEL_NAME), else ValueError."""
    if not isinstance(name, str) or not SAFE_MODEL_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{where}: model_name {name!r} is not a plain architecture name (expected letters, "
            f"digits and . _ + - only, such as ViT-B-16)"
        )
    return name


def check_model_config(config: Any, where: str) -> dict[str, Any]:
    """A stored architecture config (`DALIPModel.config()`) checked for shape and safety.

    Files are untrusted: the name must be plain, sizes positive, alpha in [0, 1], and the
    open_clip config may not name anything open_clip would fetch from the network.
    """
    if not isinstance(config, dict) or not config:
        raise ValueError(
            f"{where}: the stored model config is {_describe(config)}; expected a JSON object "
            f"with model_name, open_clip_config, alpha, mbdc"
        )
    check_plain_model_name(config.get("model_name"), where)
    expectations = {
        "open_clip_config": (
            lambda v: v is None or (isinstance(v, dict) and _no_fetching_keys(v)),
            "an architecture that fetches nothing (no Hugging Face text tower, no timm pretrained "
            "weights, a tokenizer one of open_clip's own architectures uses)",
        ),
        "loss_form": (lambda v: v in ("softmax", "sigmoid"), "softmax or sigmoid"),
        "text_padding": (lambda v: v in ("masked", "kept"), "masked or kept"),
        "answer_mode": (lambda v: v in ("fused", "first", "second"), "fused, first or second"),
        "alpha": (lambda v: _is_number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]"),
        "mbdc": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "a JSON object"),
        "separate_second_temperature": (lambda v: isinstance(v, bool), "true or false"),
        "image_size": (
            lambda v: (
                v is None
                or _positive_int(v)
                or (isinstance(v, list) and len(v) == 2 and all(_positive_int(i) for i in v))
            ),
            "a positive size",
        ),
        "context_length": (lambda v: v is None or _positive_int(v), "a positive integer"),
        "preprocess_cfg": (
            lambda v: isinstance(v, dict),
            "a JSON object (size, mean, std, interpolation, resize_mode)",
        ),
    }
    for key, (valid, expected) in expectations.items():
        if key in config and not valid(config[key]):
            raise ValueError(f"{where}: stored config field {key!r} is {config[key]!r}; expected {expected}")
    if isinstance(config.get("preprocess_cfg"), dict):
        check_preprocess_cfg(config["preprocess_cfg"], where)
    if isinstance(config.get("mbdc"), dict):  # each head option of the right type and in range
        field = f"{where}: mbdc"
        check_fields(from_dict(MBDCOptions, config["mbdc"], field), field)
    size = estimated_parameters(config)
    if size > MAX_STORED_PARAMETERS:
        raise ValueError(
            f"{where}: its stored architecture asks for about {size:.2g} parameters (more than "
            f"{MAX_STORED_PARAMETERS:.0e}, larger than any open_clip ViT); refused"
        )
    return config


# What open_clip's image transforms accept (open_clip.transform: PreprocessCfg asserts the mode,
# image_transform the interpolation and resize mode): anything else fails there as an AssertionError.
PREPROCESS_CHOICES = {
    "mode": ("RGB",),
    "interpolation": ("bicubic", "bilinear", "random"),
    "resize_mode": ("shortest", "longest", "squash"),
}
_CHANNELS = "3 numbers each (R, G, B), every std above 0"


def check_preprocess_cfg(preprocess_cfg: dict[str, Any], where: str) -> None:
    """ValueError naming `where` and the field (`preprocess_cfg.interpolation`) unless each field
    open_clip reads holds what its transforms accept; null means open_clip's default."""
    expectations = {
        "size": (_positive_size, "a positive size in pixels, or [height, width]"),
        "mean": (_channel_values, _CHANNELS),
        "std": (lambda v: _channel_values(v, positive=True), _CHANNELS),
        "fill_color": (_grey_level, "an integer in [0, 255]"),
        **{
            key: (
                lambda v, allowed=choices: isinstance(v, str) and v in allowed,
                f"one of {', '.join(choices)}",
            )
            for key, choices in PREPROCESS_CHOICES.items()
        },
    }
    for key, (valid, expected) in expectations.items():
        value = preprocess_cfg.get(key)
        if value is not None and not valid(value):
            raise ValueError(
                f"{where}: stored config field 'preprocess_cfg.{key}' is {quoted(value)}; expected {expected}"
            )


def estimated_parameters(config: dict[str, Any]) -> float:
    """Roughly how many parameters a stored config asks for (both transformers, token and
    position embeddings, the MBDC heads' square projections), before building anything."""
    clip = config.get("open_clip_config") or {}
    vision, text = clip.get("vision_cfg") or {}, clip.get("text_cfg") or {}
    if not isinstance(vision, dict) or not isinstance(text, dict):
        return 0.0  # open_clip refuses such a config itself
    size = _size(config.get("image_size"), _size(vision.get("image_size"), 224))
    tokens = (size / _positive(vision.get("patch_size"), 16)) ** 2 + 1
    context = _size(config.get("context_length"), _size(text.get("context_length"), 77))
    total = _positive(text.get("vocab_size"), 49408) * _positive(text.get("width"), 512)
    for tower, length, width in ((vision, tokens, 768), (text, context, 512)):
        width = _positive(tower.get("width"), width)
        total += (
            _positive(tower.get("layers"), 12) * (4 + 2 * _positive(tower.get("mlp_ratio"), 4)) * width**2
        )
        total += length * width
    mbdc = config.get("mbdc") if isinstance(config.get("mbdc"), dict) else {}
    reduced = _positive(mbdc.get("reduced_dim"), 46)
    second = _positive(mbdc.get("heads"), 4) * reduced * (reduced + 1) / 2  # BDC values per tower
    return total + 2 * (second**2 + second * _positive(clip.get("embed_dim"), 512))


def _positive(value: Any, default: float) -> float:
    return float(value) if _is_number(value) and value > 0 else float(default)


def _size(value: Any, default: float) -> float:
    if isinstance(value, list) and value:
        return max(_positive(item, default) for item in value)
    return _positive(value, default)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "empty"
    return "null" if value is None else f"a JSON {type(value).__name__}"


def _channel_values(value: Any, positive: bool = False) -> bool:
    """Three finite numbers, one per colour channel (a single number is open_clip's too),
    each above 0 when `positive` (a standard deviation: images are divided by it)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return len(values) in (1, 3) and all(_is_number(v) and (v > 0 or not positive) for v in values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _grey_level(value: Any) -> bool:
    """An integer in [0, 255] (the grey open_clip pads an image with)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


def _positive_size(value: Any) -> bool:
    """A positive number of pixels, or [height, width] of them."""
    pair = isinstance(value, (list, tuple)) and len(value) == 2 and all(_positive_int(v) for v in value)
    return _positive_int(value) or pair


def _no_fetching_keys(config: dict[str, Any]) -> bool:
    for key, value in config.items():
        if key in _FETCHING_KEYS or (key == "timm_model_pretrained" and value is not False):
            return False
        if key == "hf_tokenizer_name" and value not in known_tokenizers():
            return False
        if isinstance(value, dict) and not _no_fetching_keys(value):
            return False
    return True


@functools.cache
def known_tokenizers() -> frozenset[str]:
    """The Hugging Face tokenizer names of open_clip's own architecture configs."""
    folder = Path(open_clip.__file__).parent / "model_configs"
    names = set()
    for path in folder.glob("*.json"):
        name = (json.loads(path.read_text(encoding="utf-8")).get("text_cfg") or {}).get("hf_tokenizer_name")
        if isinstance(name, str):
            names.add(name)
    return frozenset(names)
