"""Models named on a command line or in Python: dalip checkpoints, open_clip model folders
and plain open_clip models.

A model spec is one of:
- a `DALIPModel` instance;
- the path of a dalip checkpoint (`model.save` file or a training `step_*.pt`);
- `openclip:ARCH:WEIGHTS`: a plain open_clip model, `ARCH` an open_clip architecture and
  `WEIGHTS` an open_clip checkpoint file (for example one written by `dalip export`) or
  an open_clip pretrained tag (fetched by open_clip);
- `local-dir:PATH` or `hf-hub:ORG/REPO`: an open_clip model folder (`dalip export --format
  open_clip-dir` or `fused-dir`, or any open_clip folder / Hugging Face repository): the
  DALIP model when the folder holds the fused model, else a plain open_clip model;
  `openclip:local-dir:PATH` / `openclip:hf-hub:ORG/REPO` always load the plain open_clip
  (first-order) model.

On the command line a spec may be prefixed with a display name: `NAME=SPEC`.
Plain open_clip models have first-order features only (`has_second_order = False`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from dalip.checkpoint import load_checkpoint
from dalip.export.folder import HF_HUB_PREFIX, LOCAL_DIR_PREFIX, is_fused_folder, load_folder, resolve_folder
from dalip.model.dalip_model import DALIPModel, capped_scale
from dalip.model.factory import (
    load_error_reason,
    quiet_loading,
    resolve_pretrained,
    tag_uses_quick_gelu,
)
from dalip.model.features import Encoder, Features
from dalip.model.file_format import refuse_nonfinite_weights
from dalip.model.preprocess import create_tokenizer, create_transforms

OPENCLIP_PREFIX = "openclip:"
FOLDER_PREFIXES = (LOCAL_DIR_PREFIX, HF_HUB_PREFIX)


class OpenCLIPModel(nn.Module):
    """A plain open_clip CLIP with DALIPModel's evaluation interface (`Encoder`, first order only)."""

    has_second_order = False
    default_mode = "first"
    answer_mode = None

    def __init__(self, clip: nn.Module, model_name: str) -> None:
        super().__init__()
        self.clip = clip  # same attribute name as DALIPModel, so "clip.*" weights line up
        self.model_name = model_name

    def encode_image(self, images: torch.Tensor, second_order: bool = True) -> Features:
        """images (B, 3, H, W) -> Features(first (B, D), None)."""
        return Features(F.normalize(self.clip.encode_image(images), dim=-1), None)

    def encode_text(self, texts: torch.Tensor, second_order: bool = True) -> Features:
        """texts (B, L) -> Features(first (B, D), None)."""
        return Features(F.normalize(self.clip.encode_text(texts), dim=-1), None)

    def similarity(self, image: Features, text: Features, mode: str | None = None) -> torch.Tensor:
        if mode not in (None, "first"):
            raise ValueError(
                f"similarity mode {mode!r} needs second-order features; a plain open_clip model has none"
            )
        return image.first @ text.first.T

    @property
    def loss_form(self) -> str:
        """sigmoid for a model with a logit bias (the SigLIP family), else softmax."""
        return "softmax" if getattr(self.clip, "logit_bias", None) is None else "sigmoid"

    @torch.no_grad()
    def logits(self, image: Features, text: Features, mode: str | None = None) -> torch.Tensor:
        """(N_image, N_text) temperature (at most 100) times the similarity, plus the logit bias."""
        logits = capped_scale(self.clip.logit_scale) * self.similarity(image, text, mode)
        bias = getattr(self.clip, "logit_bias", None)
        return logits if bias is None else logits + bias


@dataclass
class LoadedModel:
    """A model ready for evaluation with its transform, tokenizer and provenance."""

    name: str
    model: Encoder
    preprocess: Any
    tokenizer: Any
    spec: str
    sha256: str | None

    @property
    def has_second_order(self) -> bool:
        return self.model.has_second_order


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(model: nn.Module) -> str:
    """SHA-256 over the model's tensors (names and bytes), for models that are not files."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def parse_model_arg(argument: str) -> tuple[str, str]:
    """ "NAME=SPEC" or "SPEC" -> (display name, spec); the name defaults to the file stem."""
    name, separator, spec = argument.partition("=")
    if separator and name and not name.startswith((OPENCLIP_PREFIX, *FOLDER_PREFIXES)) and os.sep not in name:
        return name, spec
    return default_name(argument), argument


def default_name(spec: str) -> str:
    if spec.startswith(OPENCLIP_PREFIX):
        rest = spec[len(OPENCLIP_PREFIX) :]
        if rest.startswith(FOLDER_PREFIXES):
            return default_name(rest)
        parts = rest.split(":", 1)
        weights = Path(parts[1]).stem if len(parts) > 1 else ""
        return f"{parts[0]}:{weights}" if weights else parts[0]
    if spec.startswith(FOLDER_PREFIXES):
        return Path(spec.split(":", 1)[1].rstrip("/\\")).name or spec
    return Path(spec).stem


def from_dalip_model(
    model: DALIPModel, name: str, spec: str = "<in memory>", sha256: str | None = None
) -> LoadedModel:
    """Wrap a DALIPModel with its validation transform and tokenizer."""
    preprocess = create_transforms(model)[1]
    return LoadedModel(name, model, preprocess, create_tokenizer(model), spec, sha256 or state_sha256(model))


def _load_folder(spec: str, name: str, plain: bool = False) -> LoadedModel:
    """`local-dir:` / `hf-hub:` -> the fused DALIP model it holds, or plain open_clip."""
    folder = resolve_folder(spec)
    if not plain and is_fused_folder(folder):
        return from_dalip_model(load_folder(folder), name, spec)
    identifier = f"{LOCAL_DIR_PREFIX}{folder}"
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(identifier)
    except RuntimeError as error:  # weights that do not fit the folder's config
        raise ValueError(
            f"model spec {spec!r}: open_clip could not load {folder}: {str(error).splitlines()[0]}"
        ) from error
    refuse_nonfinite_weights(clip.state_dict(), f"model spec {spec!r}")
    tokenizer = open_clip.get_tokenizer(identifier)
    return LoadedModel(
        name, OpenCLIPModel(clip, identifier).eval(), preprocess, tokenizer, spec, state_sha256(clip)
    )


def _load_open_clip(spec: str, name: str) -> LoadedModel:
    if spec[len(OPENCLIP_PREFIX) :].startswith(FOLDER_PREFIXES):
        return _load_folder(spec[len(OPENCLIP_PREFIX) :], name, plain=True)
    architecture, _, weights = spec[len(OPENCLIP_PREFIX) :].partition(":")
    if not architecture or not weights:
        raise ValueError(f"model spec {spec!r}: expected openclip:ARCH:WEIGHTS (a file or a pretrained tag)")
    if open_clip.get_model_config(architecture) is None:
        raise ValueError(f"model spec {spec!r}: unknown open_clip architecture {architecture!r}")
    try:
        is_file = resolve_pretrained(architecture, weights) != "tag"
    except ValueError as error:
        raise ValueError(f"model spec {spec!r}: {error}") from error
    try:
        with quiet_loading():
            clip, _, preprocess = open_clip.create_model_and_transforms(
                architecture, pretrained=weights, force_quick_gelu=tag_uses_quick_gelu(architecture, weights)
            )
    except Exception as error:  # a file is untrusted input: any failure to read it is the file's
        if is_file:
            raise ValueError(
                f"model spec {spec!r}: {weights} is not an open_clip checkpoint of {architecture} "
                f"({load_error_reason(error)})"
            ) from error
        if isinstance(error, (RuntimeError, OSError)):  # a failed download
            raise OSError(
                f"model spec {spec!r}: open_clip could not load {weights}: {load_error_reason(error)}"
            ) from error
        raise
    refuse_nonfinite_weights(clip.state_dict(), f"model spec {spec!r}")
    tokenizer = open_clip.get_tokenizer(architecture)
    sha = file_sha256(weights) if is_file else None
    return LoadedModel(name, OpenCLIPModel(clip, architecture).eval(), preprocess, tokenizer, spec, sha)


def check_spec(spec: Any) -> None:
    """Fail early (before any evaluation) on a checkpoint path or local folder that does not exist."""
    if isinstance(spec, str) and spec.removeprefix(OPENCLIP_PREFIX).startswith(LOCAL_DIR_PREFIX):
        resolve_folder(spec.removeprefix(OPENCLIP_PREFIX))
        return
    is_path = isinstance(spec, (str, os.PathLike)) and not os.fspath(spec).startswith(
        (OPENCLIP_PREFIX, *FOLDER_PREFIXES)
    )
    if is_path and not os.path.exists(spec):
        raise FileNotFoundError(f"checkpoint not found: {os.fspath(spec)}")


def load_model(spec: Any, name: str | None = None) -> LoadedModel:
    """A DALIPModel, a LoadedModel, a dalip checkpoint path, an `openclip:`, `local-dir:` or
    `hf-hub:` spec -> LoadedModel (CPU)."""
    if isinstance(spec, LoadedModel):
        return spec
    if isinstance(spec, DALIPModel):
        return from_dalip_model(spec, name or spec.model_name)
    spec = os.fspath(spec)
    name = name or default_name(spec)
    if spec.startswith(OPENCLIP_PREFIX):
        return _load_open_clip(spec, name)
    if spec.startswith(FOLDER_PREFIXES):
        return _load_folder(spec, name)
    if not os.path.exists(spec):
        raise FileNotFoundError(f"checkpoint not found: {spec}")
    return from_dalip_model(load_checkpoint(spec), name, os.path.abspath(spec), file_sha256(spec))


def load(spec: Any, device: str | torch.device = "cpu") -> tuple[Encoder, Any, Any]:
    """Any model the command line accepts -> (model, preprocess, tokenizer), as open_clip's
    `create_model_from_pretrained` returns them: the model in eval mode on `device`, its
    evaluation transform and its tokenizer.

    `spec`: a dalip model file or training checkpoint (`step_*.pt`), `local-dir:PATH` or
    `hf-hub:ORG/REPO` (the fused DALIP model of a `dalip export --format fused-dir` folder, else
    plain open_clip), `openclip:ARCH:WEIGHTS` (a plain open_clip model: a file or a pretrained
    tag), or a `DALIPModel`. A plain open_clip model answers with first-order features only.
    """
    loaded = load_model(spec)
    return loaded.model.to(device).eval(), loaded.preprocess, loaded.tokenizer
