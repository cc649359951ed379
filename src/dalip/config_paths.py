"""Paths in a training config: relative to the config file when written in it, to the working
folder when given with --set (`dalip.config.load_train_config` reads both)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def resolve_relative_paths(data: dict[str, Any], base: Path, where: str) -> None:
    """A config file's raw sections with their paths made absolute against `base`, the file's
    folder (as CSV image paths are relative to the CSV); `pretrained` only when it is a path."""
    for section in ("model", "data"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ValueError(
                f"{where}: section {section!r} must be a mapping of fields, "
                f"got {type(data[section]).__name__}"
            )
    model, data_section = data.get("model") or {}, data.get("data") or {}
    sources = data_section.get("sources") or []
    for source in sources if isinstance(sources, list) else []:
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            source["path"] = _rebase(source["path"], base)
    paths = ((data_section, "val"), (data_section, "val_general"), (model, "config_file"), (data, "out_dir"))
    for node, key in paths:
        if isinstance(node.get(key), str):
            node[key] = _rebase(node[key], base)
    pretrained = model.get("pretrained")
    if isinstance(pretrained, str) and (_looks_like_path(pretrained) or (base / pretrained).exists()):
        model["pretrained"] = _rebase(pretrained, base)  # else an open_clip tag such as "openai"


def make_paths_absolute(config: Any) -> None:
    """A TrainConfig's paths still relative (from --set) made absolute against the working folder."""
    cwd = Path.cwd()
    for source in config.data.sources:
        source.path = _rebase(source.path, cwd)
    config.out_dir = _rebase(config.out_dir, cwd)
    for node, key in ((config.data, "val"), (config.data, "val_general"), (config.model, "config_file")):
        if getattr(node, key):
            setattr(node, key, _rebase(getattr(node, key), cwd))
    pretrained = config.model.pretrained
    if pretrained and (_looks_like_path(pretrained) or os.path.exists(pretrained)):
        config.model.pretrained = _rebase(pretrained, cwd)


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def _rebase(path: str, base: Path) -> str:
    if "://" in path or path.startswith("pipe:"):
        return path
    return os.path.abspath(os.path.join(base, os.path.expanduser(path)))
