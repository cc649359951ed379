"""open_clip's name -> JSON architecture registry: our configs, and which names DALIP supports.

Importing this module registers the architectures in `configs/` (e.g. `dalip-tiny`, and the
`dalip-tiny-*` members of each tower family, whose timm towers `tiny_towers` registers with timm).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import open_clip
import timm

from dalip.model import tiny_towers  # noqa: F401  (registers the tiny timm towers the configs name)
from dalip.model.stored_config import check_plain_model_name
from dalip.model.towers import vision_transformer_reason
from dalip.readers import read_json

MODEL_CONFIG_DIR = Path(__file__).parent / "configs"


def register_model_configs(path: str | Path = MODEL_CONFIG_DIR) -> None:
    """Add a folder (or file) of open_clip JSON model configs to open_clip's registry."""
    path = Path(path)
    names = [p.stem for p in path.glob("*.json")] if path.is_dir() else [path.stem]
    if not all(name in open_clip.list_models() for name in names):
        open_clip.add_model_config(path)


register_model_configs()

ARCHITECTURE_KEYS = ("embed_dim", "vision_cfg", "text_cfg")


def register_config_file(path: str | Path, model_name: str, what: str = "model.config_file") -> None:
    """Register the one architecture a JSON file describes (named after the file, as open_clip
    does), which must be `model_name`'s; ValueError naming the file otherwise (open_clip
    itself skips a JSON that is no architecture without a word)."""
    path = Path(path)
    try:
        config = read_json(path, what)
    except ValueError as error:  # not JSON, not UTF-8, nested too deep: the message names the file
        raise ValueError(f"{what} {error}") from error
    if not isinstance(config, dict) or not all(
        isinstance(config.get(k), (int, dict)) for k in ARCHITECTURE_KEYS
    ):
        raise ValueError(
            f"{what} {path}: not an open_clip model config (expected a JSON object with "
            f"{', '.join(ARCHITECTURE_KEYS)})"
        )
    if path.stem != model_name:
        raise ValueError(
            f"{what} {path}: describes the architecture {path.stem!r} (its file name), but "
            f"model.name is {model_name!r}; name the file {model_name}.json or set model.name"
        )
    open_clip.add_model_config(path)  # the file itself, checked above: nothing is written


def register_config(name: str, open_clip_config: dict[str, Any]) -> None:
    """Register an architecture given as data (e.g. the copy stored in a checkpoint).

    The name may come from a file: it is checked to be plain first, and the one JSON file
    written lives in a temporary folder of dalip's own, deleted on return.
    """
    check_plain_model_name(name, "model config")
    # open_clip keeps what a scan registered, so the file is only needed during the call.
    with tempfile.TemporaryDirectory(prefix="dalip-config-") as folder:
        target = Path(folder) / f"{name}.json"  # a plain name (checked above): inside the folder
        target.write_text(json.dumps(open_clip_config))
        open_clip.add_model_config(folder)


def unsupported_reason(config: dict[str, Any]) -> str | None:
    """Why an open_clip model config cannot carry DALIP heads, or None when it can (read from the
    config alone; `dalip.model.towers` reads the built towers by the same rules)."""
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    if "hf_model_name" in text:
        return (
            f"its text tower is the Hugging Face transformers model {text['hf_model_name']!r}; dalip reads "
            f"text tokens from open_clip's own TextTransformer only"
        )
    if "timm_model_name" in vision:
        if not timm.is_model(vision["timm_model_name"]):
            return f"its image tower {vision['timm_model_name']!r} is not a model of the installed timm"
        return None
    if isinstance(vision.get("layers"), (list, tuple)):  # open_clip's ModifiedResNet
        return None
    return vision_transformer_reason(vision.get("pool_type", "tok"), vision.get("attentional_pool", False))


def supported_model_names() -> list[str]:
    """open_clip architectures (and ours) that DALIP can wrap."""
    return [
        name
        for name in open_clip.list_models()
        if unsupported_reason(open_clip.get_model_config(name)) is None
    ]


def check_supported_architecture(model_name: str) -> None:
    """Raise ValueError unless `model_name` is a registered, supported architecture."""
    config = open_clip.get_model_config(model_name)
    if config is None:
        examples = ["ViT-B-16", "ViT-B-16-SigLIP2", "PE-Core-B-16", "convnext_base", "RN50", "dalip-tiny"]
        raise ValueError(
            f"unknown model name {model_name!r}; expected an open_clip architecture or one of ours, "
            f"e.g. {', '.join(examples)} (see `dalip models` or open_clip.list_models())"
        )
    reason = unsupported_reason(config)
    if reason is not None:
        raise ValueError(f"model {model_name!r} is not supported by DALIP: {reason}")
