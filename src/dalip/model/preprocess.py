"""What the data needs to feed a model: open_clip's image transforms and its tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import open_clip
from open_clip.transform import PreprocessCfg, image_transform_v2

from dalip.model.dalip_model import DALIPModel


def create_transforms(model: DALIPModel, aug_cfg: dict[str, Any] | None = None) -> tuple[Callable, Callable]:
    """open_clip's train (augmenting) and validation transforms for the model's image tower."""
    config = PreprocessCfg(**model.clip.visual.preprocess_cfg)
    return (
        image_transform_v2(config, is_train=True, aug_cfg=aug_cfg),
        image_transform_v2(config, is_train=False),
    )


def create_tokenizer(model: DALIPModel | str, context_length: int | None = None) -> Callable:
    """open_clip's tokenizer for a model (or an architecture name), at its context length.

    SigLIP-family (and other) architectures name a Hugging Face tokenizer: it needs the
    `transformers` package and, once, the network (then the Hugging Face cache); when it cannot
    be loaded the ValueError says which tokenizer and how to get it."""
    if isinstance(model, DALIPModel):
        name, context_length = model.model_name, model.clip.context_length
    else:
        name = model
    hub_name = ((open_clip.get_model_config(name) or {}).get("text_cfg") or {}).get("hf_tokenizer_name")
    if not hub_name and "siglip" in name.lower():  # open_clip's own rule for unnamed SigLIP tokenizers
        hub_name = "SigLIP's sentencepiece tokenizer (transformers)"
    try:
        return open_clip.get_tokenizer(name, context_length=context_length)
    except Exception as error:  # transformers missing, offline without a cached copy, a hub error
        if not hub_name:
            raise
        missing = isinstance(error, ImportError)
        how = (
            "install it with pip install 'dalip[hf]' (transformers, sentencepiece)"
            if missing
            else "fetch it once with network access (it is then read from the Hugging Face cache, "
            "HF_HOME), or copy a cache that holds it"
        )
        hub_name = repr(hub_name) if "/" in hub_name else hub_name
        why = type(error).__name__ + (f": {str(error).strip().splitlines()[0]}" if str(error).strip() else "")
        raise ValueError(
            f"model {name!r}: its tokenizer is the Hugging Face tokenizer {hub_name}, which could not "
            f"be loaded ({why}); {how}"
        ) from error
