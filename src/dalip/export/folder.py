"""open_clip model folders: what `open_clip.create_model_and_transforms("local-dir:PATH")`
and `hf-hub:ORG/REPO` load, written from a DALIPModel and read back.

A folder holds `open_clip_config.json` (`model_cfg`: the architecture; `preprocess_cfg`:
size, mean, std, interpolation, resize mode) and `open_clip_model.safetensors` (the
open_clip weights: the first-order model). The fused two-tower model is the same folder
plus `dalip_heads.safetensors` (the MBDC heads) and a `dalip` section in the config (alpha,
MBDC options, architecture name): plain open_clip still loads it as the first-order model,
`load_folder` loads the whole DALIP model.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import open_clip
import torch
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file, save_file

from dalip.export.files import write_files
from dalip.model.dalip_model import DALIPModel
from dalip.model.factory import load_error_reason, quiet_loading, wrap_clip
from dalip.model.file_format import refuse_nonfinite_weights
from dalip.model.registry import check_supported_architecture, register_config
from dalip.model.stored_config import check_model_config
from dalip.readers import read_json

logger = logging.getLogger(__name__)

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
HEADS_NAME = "dalip_heads.safetensors"
LOCAL_DIR_PREFIX = "local-dir:"
HF_HUB_PREFIX = "hf-hub:"


def open_clip_config(model: DALIPModel) -> dict[str, Any]:
    """`open_clip_config.json` of the model: `model_cfg` as built (forced image size,
    context length, QuickGELU included) and its `preprocess_cfg`."""
    config = model.config()
    if config["open_clip_config"] is None:
        raise ValueError(f"{model.model_name}: open_clip has no config of this architecture to export")
    model_cfg = copy.deepcopy(config["open_clip_config"])  # `quick_gelu` set when built with it
    size = config["image_size"]  # as built, e.g. [224, 224] (a forced size included)
    square = isinstance(size, list) and len(size) == 2 and size[0] == size[1]
    model_cfg["vision_cfg"]["image_size"] = size[0] if square else size
    model_cfg["text_cfg"]["context_length"] = config["context_length"]
    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model.clip))
    preprocess_cfg = {key: list(v) if isinstance(v, tuple) else v for key, v in preprocess_cfg.items()}
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}


def export_folder(
    model: DALIPModel, folder: str | os.PathLike, fused: bool = False, force: bool = False
) -> list[Path]:
    """Write `model` as an open_clip folder; `fused=True` adds the MBDC heads and the
    `dalip` section so that `load_folder` rebuilds the fused two-tower model.

    Returns the paths written. Other files in `folder` are left alone.
    """
    config = open_clip_config(model)
    clip_state = {k: v.detach().contiguous().cpu() for k, v in model.clip.state_dict().items()}
    writers = {
        WEIGHTS_NAME: lambda staging: save_file(clip_state, str(staging / WEIGHTS_NAME)),
    }
    if fused:
        own = model.config()
        config["dalip"] = {key: value for key, value in own.items() if key != "open_clip_config"}
        heads = {
            k: v.detach().contiguous().cpu()
            for k, v in model.state_dict().items()
            if not k.startswith("clip.")
        }
        writers[HEADS_NAME] = lambda staging: save_file(heads, str(staging / HEADS_NAME))
    text = json.dumps(config, indent=2) + "\n"
    writers[CONFIG_NAME] = lambda staging: (staging / CONFIG_NAME).write_text(text, encoding="utf-8")
    return write_files(folder, writers, force)


def read_folder_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's open_clip_config.json; errors name the file and what was expected."""
    path = Path(folder) / CONFIG_NAME
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing (an open_clip model folder holds {CONFIG_NAME} and weights)"
        )
    config = read_json(path, "model folder config")  # bounded: size, values, nesting
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise ValueError(f"{path}: expected an object with a 'model_cfg' object (open_clip's folder format)")
    if "preprocess_cfg" in config:  # checked as a checkpoint's is: what open_clip's transforms accept
        check_model_config({"model_name": "folder", "preprocess_cfg": config["preprocess_cfg"]}, str(path))
    return config


def is_fused_folder(folder: str | os.PathLike) -> bool:
    """Whether the folder holds the fused two-tower model (written with `fused=True`)."""
    return "dalip" in read_folder_config(folder)


def load_folder(folder: str | os.PathLike, device: str | torch.device = "cpu") -> DALIPModel:
    """The fused two-tower model of a folder written by `export_folder(..., fused=True)`,
    weights loaded, in eval mode.

    The open_clip model is built by open_clip from the folder itself (its `model_cfg`, QuickGELU
    and preprocessing included, its weights); the MBDC heads come from `dalip_heads.safetensors`.
    """
    config = read_folder_config(folder)
    if "dalip" not in config:
        raise ValueError(
            f"{Path(folder) / CONFIG_NAME}: no 'dalip' section, so this folder holds a plain open_clip "
            f"model; load it with open_clip.create_model_and_transforms('local-dir:{folder}')"
        )
    heads_path = Path(folder) / HEADS_NAME
    if not heads_path.is_file():
        raise FileNotFoundError(f"{heads_path}: missing (the fused model's MBDC heads)")
    # The folder is untrusted input, as a checkpoint is: its stored config is checked first.
    where = str(Path(folder) / CONFIG_NAME)
    if not isinstance(config["dalip"], dict):
        raise ValueError(f"{where}: its 'dalip' section is not a JSON object (alpha, mbdc, model_name)")
    own = check_model_config({**config["dalip"], "open_clip_config": config["model_cfg"]}, where)
    name = own["model_name"]
    if open_clip.get_model_config(name) is None:  # so that the model can be saved and rebuilt
        register_config(name, config["model_cfg"])
    check_supported_architecture(name)
    try:
        with quiet_loading():
            clip = open_clip.create_model(f"{LOCAL_DIR_PREFIX}{folder}")
        model = wrap_clip(clip, own)
        heads = load_file(str(heads_path), device="cpu")
    except Exception as error:  # weights or heads that do not fit the folder's config, a broken file
        raise ValueError(
            f"{folder}: cannot be loaded as a dalip model ({load_error_reason(error)})"
        ) from error
    try:
        missing, unexpected = model.load_state_dict(heads, strict=False)
    except RuntimeError as error:  # heads of other shapes
        raise ValueError(
            f"{heads_path}: heads do not match the config's MBDC options ({load_error_reason(error)})"
        ) from error
    wrong = unexpected + [key for key in missing if not key.startswith("clip.")]
    if wrong:
        raise ValueError(f"{heads_path}: heads do not match the config's MBDC options (e.g. {wrong[0]})")
    refuse_nonfinite_weights(model.state_dict(), os.fspath(folder))
    return model.to(device).eval()


def hf_hub_folder(repo: str) -> Path:
    """Fetch (or find in the Hugging Face cache) an open_clip repository's files; the local
    snapshot folder. Offline (HF_HUB_OFFLINE=1) only the cache is read."""

    def fetch(name: str, required: bool = True) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id=repo, filename=name))
        except Exception as error:  # the hub's errors: offline, not found, no network...
            if not required:
                return None
            raise OSError(f"hf-hub:{repo}: could not fetch {name} ({type(error).__name__})") from error

    folder = fetch(CONFIG_NAME).parent
    config = read_folder_config(folder)
    if fetch(WEIGHTS_NAME, required=False) is None:
        fetch("open_clip_pytorch_model.bin")
    if "dalip" in config:
        fetch(HEADS_NAME)
    return folder


def resolve_folder(spec: str) -> Path:
    """`local-dir:PATH` -> PATH; `hf-hub:ORG/REPO` -> its local snapshot folder."""
    if spec.startswith(LOCAL_DIR_PREFIX):
        folder = spec[len(LOCAL_DIR_PREFIX) :]
        if not folder:
            raise ValueError(f"model spec {spec!r}: expected local-dir:PATH")
        read_folder_config(folder)
        return Path(folder)
    repo = spec[len(HF_HUB_PREFIX) :]
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"model spec {spec!r}: expected hf-hub:ORGANISATION/REPOSITORY")
    return hf_hub_folder(repo)
