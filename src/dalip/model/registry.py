"""open_clip's name -> JSON architecture registry: our configs, and which names DALIP supports.

Importing this module registers the architectures in `configs/` (e.g. `dalip-tiny`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import open_clip

from dalip.model.stored_config import check_plain_model_name

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
        config = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {path}: not valid JSON ({error})") from error
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
        name
        for name in open_clip.list_models()
        if unsupported_reason(open_clip.get_model_config(name)) is None
    ]


def check_supported_architecture(model_name: str) -> None:
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
