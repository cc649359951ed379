"""create_model: an open_clip architecture + pretrained weights -> DALIPModel, transforms, tokenizer."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from typing import Any

import open_clip
import torch

from dalip.config import DEFAULT_ALPHA, PAPER_MBDC, MBDCOptions
from dalip.model.dalip_model import LOSS_FORMS, DALIPModel
from dalip.model.file_format import (
    is_training_checkpoint,
    read_checkpoint_config,
    read_model_file,
    read_stored_config,
    refuse_nonfinite_weights,
)
from dalip.model.preprocess import create_tokenizer, create_transforms
from dalip.model.registry import check_supported_architecture, register_config
from dalip.model.stored_config import check_plain_model_name
from dalip.readers import quoted

logger = logging.getLogger(__name__)

# Our small architectures use a smaller MBDC than the paper's (4 heads x 46): a 4324-wide
# projection would dwarf a model of a few million parameters.
TINY_MBDC = replace(PAPER_MBDC, reduced_dim=16)
TINY_ARCHITECTURES = (
    "dalip-tiny",
    "dalip-tiny-sigmoid",
    "dalip-tiny-eva02",
    "dalip-tiny-pe",
    "dalip-tiny-mobileclip",
    "dalip-tiny-convnext",
    "dalip-tiny-resnet",
    "dalip-tiny-coca",
)
ARCHITECTURE_MBDC: dict[str, MBDCOptions] = dict.fromkeys(TINY_ARCHITECTURES, TINY_MBDC)
# dalip 0.1 wrote no weighting or dropout kind: its checkpoints keep the behaviour they were trained with.
LEGACY_MBDC_OPTIONS = {"weighting": "before_norm", "dropout_kind": "element"}
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_LOW_PRECISION = {
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "pure_fp16": torch.float16,
    "pure_bf16": torch.bfloat16,
}


def mbdc_options_for(model_name: str, options: MBDCOptions | None = None, **overrides: Any) -> MBDCOptions:
    """MBDC options: `options` (default: the paper's) with `heads` / `reduced_dim` None taken
    from the architecture's own (ours), then `overrides` (None: keep)."""
    names = [item.name for item in fields(MBDCOptions)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"unknown MBDC option(s) {unknown}; expected some of {names}")
    architecture = ARCHITECTURE_MBDC.get(model_name, PAPER_MBDC)
    chosen = architecture if options is None else options.filled(architecture)
    return replace(chosen, **{k: v for k, v in overrides.items() if v is not None})


def resolve_pretrained(model_name: str, pretrained: str | None) -> str:
    """Classify `pretrained`: "none", "dalip" (our model file or training checkpoint), "file"
    (open_clip weights) or "tag"."""
    if not pretrained:
        return "none"
    if os.path.isfile(pretrained):
        ours = read_checkpoint_config(pretrained) is not None or is_training_checkpoint(pretrained)
        return "dalip" if ours else "file"
    looks_like_path = os.sep in pretrained or "/" in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES)
    if looks_like_path:
        raise ValueError(f"pretrained file not found: {pretrained}")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        known = ", ".join(tags) if tags else "none (use a local checkpoint file)"
        raise ValueError(
            f"unknown pretrained tag {pretrained!r} for {model_name}; expected a checkpoint file "
            f"or one of: {known}"
        )
    return "tag"


def tag_uses_quick_gelu(model_name: str, pretrained: str | None) -> bool:
    """True when `pretrained` is an open_clip tag whose weights were trained with QuickGELU
    (OpenAI's): the model must then be built with it, which open_clip only warns about."""
    if not pretrained or os.path.isfile(pretrained):
        return False
    return bool(open_clip.get_pretrained_cfg(model_name, pretrained).get("quick_gelu", False))


def _create_clip(
    model_name: str,
    weights: str | None,
    precision: str,
    image_size: Any,
    context_length: int | None,
    cache_dir: str | None,
) -> open_clip.CLIP:
    quick_gelu = tag_uses_quick_gelu(model_name, weights)
    if quick_gelu:
        logger.info("building %s with QuickGELU: the %r weights were trained with it", model_name, weights)
    try:
        with quiet_loading():
            clip = open_clip.create_model(
                model_name,
                pretrained=weights,
                precision=precision,
                force_quick_gelu=quick_gelu,
                force_image_size=image_size,
                force_context_length=context_length,
                cache_dir=cache_dir,
            )
        return clip if weights is not None else _initialize_coca_projection(clip)
    except Exception as error:  # a file is untrusted input: any failure to read it is the file's
        if weights is not None and os.path.isfile(weights):
            raise ValueError(
                f"pretrained file {weights} does not hold {model_name} weights ({load_error_reason(error)})"
            ) from error
        if weights is not None and isinstance(error, (RuntimeError, OSError)):
            raise OSError(
                f"could not fetch pretrained weights {weights!r} for {model_name}: {load_error_reason(error)}"
            ) from error
        raise


def _initialize_coca_projection(clip: torch.nn.Module) -> torch.nn.Module:
    """open_clip leaves CoCa's decoder projection as `torch.empty` (whatever memory held, NaN
    at times) when no weights are loaded: draw it as its `init_parameters` intends."""
    decoder = getattr(clip, "text_decoder", None)
    projection = getattr(decoder, "text_projection", None)
    if isinstance(projection, torch.nn.Parameter):
        with torch.no_grad():
            torch.nn.init.normal_(projection, std=decoder.width**-0.5)
    return clip


def load_error_reason(error: BaseException) -> str:
    """One line on why a weights file did not load, without torch's advice to unpickle it."""
    text = str(error)
    if "weights_only" in text or "Unpickl" in type(error).__name__:
        return "not a weights-only torch file: it holds pickled objects, which dalip never executes"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def create_model(
    model_name: str,
    pretrained: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    *,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    context_length: int | None = None,
    separate_second_temperature: bool = False,
    aug_cfg: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    mbdc: MBDCOptions | None = None,
    loss_form: str = "auto",
    **mbdc_options: Any,
) -> tuple[DALIPModel, Callable, Callable, Callable]:
    """Build a DALIP model on an open_clip architecture.

    Args:
        model_name: an open_clip architecture (`open_clip.list_models()`: open_clip's ViTs,
            the timm towers of SigLIP, PE-Core, EVA, MobileCLIP, ConvNeXt ..., the ResNets,
            CoCa) or one of ours (`dalip-tiny`, `dalip-tiny-siglip`, ...); `dalip models` lists
            which are supported.
        pretrained: None, an open_clip tag (downloaded by open_clip), an open_clip checkpoint
            file, or a dalip checkpoint file. Parameters the weights do not cover (the MBDC
            heads, for open_clip weights) are listed in `model.newly_initialized`.
        alpha: weight of the first-order similarity in the fused similarity.
        mbdc: the MBDC heads' options (`ModelConfig.mbdc`); None: the architecture's own.
        loss_form: "softmax", "sigmoid" or "auto": the start model's own (a dalip checkpoint's
            stored form; sigmoid for open_clip models with a logit bias, the SigLIP family).
        **mbdc_options: single options over those (heads, reduced_dim, dropout, dropout_kind,
            weighting, learnable_temperature).

    Returns: (model, preprocess_train, preprocess_val, tokenizer).
    """
    check_supported_architecture(model_name)
    options = mbdc_options_for(model_name, mbdc, **mbdc_options)
    source = resolve_pretrained(model_name, pretrained)
    text_config = open_clip.get_model_config(model_name).get("text_cfg") or {}
    tokenizer = create_tokenizer(model_name, context_length or text_config.get("context_length"))
    open_clip_weights = pretrained if source in ("file", "tag") else None
    # open_clip warns "initialized randomly" when no weights are given (said once below
    # instead) and for a dalip checkpoint, whose weights are loaded after it.
    quiet = quiet_root_logger() if source in ("dalip", "none") else contextlib.nullcontext()
    with quiet:
        clip = _create_clip(model_name, open_clip_weights, precision, image_size, context_length, cache_dir)
    if open_clip_weights is not None:
        refuse_nonfinite_weights(clip.state_dict(), f"pretrained {pretrained}")
    form = resolve_loss_form(loss_form, clip, pretrained if source == "dalip" else None)
    had_bias = clip.logit_bias is not None
    model = DALIPModel(
        clip,
        model_name,
        alpha,
        options,
        separate_second_temperature=separate_second_temperature,
        loss_form=form,
    )
    model.newly_initialized = _load_weights(model, source, pretrained, had_bias)
    if precision in _LOW_PRECISION:
        for module in (model.image_mbdc, model.text_mbdc):
            module.to(_LOW_PRECISION[precision])
    model.to(device)
    preprocess_train, preprocess_val = create_transforms(model, aug_cfg)
    return model, preprocess_train, preprocess_val, tokenizer


def resolve_loss_form(loss_form: str, clip: torch.nn.Module, dalip_file: str | None = None) -> str:
    """ "softmax" or "sigmoid": `loss_form` itself, or for "auto" the start model's: the form a
    dalip file stores, else sigmoid when the open_clip model has a logit bias (SigLIP's)."""
    if loss_form not in ("auto", *LOSS_FORMS):
        raise ValueError(f"loss.form: expected auto, softmax or sigmoid, got {loss_form!r}")
    if loss_form != "auto":
        return loss_form
    if dalip_file is not None:
        return read_stored_config(dalip_file).get("loss_form", "softmax")
    return "sigmoid" if getattr(clip, "logit_bias", None) is not None else "softmax"


def _load_weights(model: DALIPModel, source: str, pretrained: str | None, had_bias: bool) -> list[str]:
    """Load a dalip start model's weights (open_clip's are loaded by open_clip); the names of the
    parameters the weights did not cover, logged."""
    if source == "none":
        return []
    if source == "dalip":
        new = load_matching_weights(model, pretrained)
    else:  # open_clip weights: the heads, and a logit bias added for the sigmoid form, are new
        new = model.mbdc_parameter_names() + (
            [] if had_bias or model.clip.logit_bias is None else ["clip.logit_bias"]
        )
    if new:
        logger.info("newly initialised (not in %s): %s", pretrained, ", ".join(new))
    return new


def load_matching_weights(model: DALIPModel, path: str | os.PathLike) -> list[str]:
    """Load a dalip checkpoint's weights into `model`; returns parameters left as initialised.

    `path`: a model file or a training checkpoint. Every open_clip weight must match; MBDC
    weights whose shapes differ (other heads or reduced dim) are kept as initialised.
    """
    _, state = read_model_file(path)
    refuse_nonfinite_weights(state, os.fspath(path))
    own = model.state_dict()
    missing_clip = [
        k for k in own if k.startswith("clip.") and (k not in state or state[k].shape != own[k].shape)
    ]
    if missing_clip:
        raise ValueError(
            f"checkpoint {path} does not match {model.model_name}: e.g. {missing_clip[0]} "
            f"is missing or has another shape"
        )
    matching = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    extra = sorted(k for k in state if k not in own)
    if extra:
        logger.warning(
            "%s: %d tensor(s) that %s does not have were ignored: %s%s",
            path,
            len(extra),
            model.model_name,
            ", ".join(quoted(k) for k in extra[:3]),
            ", ..." if len(extra) > 3 else "",
        )
    model.load_state_dict(matching, strict=False)
    return [name for name, _ in model.named_parameters() if name not in matching]


def build_model(config: dict[str, Any], where: str = "checkpoint") -> DALIPModel:
    """Rebuild the architecture stored in a checkpoint (weights are loaded by the caller).

    `config` comes from a file (`where`, named in errors): its name is checked before any
    use and anything open_clip or DALIPModel cannot build from it is a ValueError.
    """
    name = check_plain_model_name(config.get("model_name"), where)
    if open_clip.get_model_config(name) is None and config.get("open_clip_config"):
        register_config(name, config["open_clip_config"])
    check_supported_architecture(name)
    try:
        with quiet_root_logger():  # open_clip warns "initialized randomly": our weights follow
            clip = open_clip.create_model(
                name,
                force_image_size=config.get("image_size"),
                force_context_length=config.get("context_length"),
                force_quick_gelu=bool((config.get("open_clip_config") or {}).get("quick_gelu", False)),
            )
            if config.get("preprocess_cfg"):
                open_clip.set_model_preprocess_cfg(clip, config["preprocess_cfg"])
        return wrap_clip(clip, config)
    except (
        TypeError,
        ValueError,
        KeyError,
        AttributeError,
        RuntimeError,
        ZeroDivisionError,
        AssertionError,
    ) as error:
        raise ValueError(
            f"{where}: its stored architecture {name!r} cannot be built ({load_error_reason(error)})"
        ) from error


def wrap_clip(clip: torch.nn.Module, config: dict[str, Any]) -> DALIPModel:
    """A DALIPModel around an open_clip model already built, with the heads a stored config
    (`DALIPModel.config()`, checked by `check_model_config`) describes (weights are loaded
    by the caller). Fields a file of an earlier version lacks keep that version's behaviour."""
    return DALIPModel(
        clip,
        config["model_name"],
        config.get("alpha", DEFAULT_ALPHA),
        MBDCOptions(**{**LEGACY_MBDC_OPTIONS, **config.get("mbdc", {})}),
        separate_second_temperature=config.get("separate_second_temperature", False),
        loss_form=config.get("loss_form", "softmax"),
        text_padding=config.get("text_padding", "kept"),
        answer_mode=config.get("answer_mode"),
    )


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Reading a weights file: torch's and open_clip's warnings about it stay unprinted
    (a file that does not load is reported once, as an error naming it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
