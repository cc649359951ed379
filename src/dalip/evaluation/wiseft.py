"""WiSE-FT: weight-space interpolation between a start model and its fine-tuned version.

`theta(w) = (1 - w) * theta_start + w * theta_tuned` for every floating-point tensor.
The result has the tuned model's architecture: MBDC heads are interpolated when the
start model has them too (a dalip checkpoint) and taken from the tuned model otherwise
(a plain open_clip start, `openclip:ARCH:WEIGHTS`). Each point is evaluated by a suite,
so the table and plot show how much domain accuracy is gained and general accuracy kept.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dalip.evaluation.record import reproducibility_record
from dalip.evaluation.suite import evaluate_loaded, model_modes, suite_runtime
from dalip.evaluation.suite_file import load_suite, suite_summary, with_overrides
from dalip.inference.runtime import Runtime
from dalip.inference.specs import LoadedModel, load_model, state_sha256
from dalip.readers import quoted

logger = logging.getLogger(__name__)


def interpolate_state(
    start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """(1 - weight) * start + weight * tuned per tensor; tensors only the tuned model has are kept."""
    mixed = {}
    for key, tuned_value in tuned.items():
        start_value = start.get(key)
        if start_value is None:
            # the heads, and a logit bias a softmax start lacks, are the tuned model's own
            if key.startswith("clip.") and key != "clip.logit_bias":
                raise ValueError(
                    f"start model has no weight {key!r}: the two models are different architectures"
                )
            mixed[key] = tuned_value
        elif start_value.shape != tuned_value.shape:
            raise ValueError(
                f"weight {key!r} has shape {tuple(start_value.shape)} in the start model and "
                f"{tuple(tuned_value.shape)} in the tuned one: the models are different architectures"
            )
        elif not tuned_value.is_floating_point():
            mixed[key] = tuned_value
        else:
            value = (1.0 - weight) * start_value.float() + weight * tuned_value.float()
            mixed[key] = value.to(tuned_value.dtype)
    return mixed


def interpolate_weights(start: nn.Module, tuned: nn.Module, weight: float) -> nn.Module:
    """A copy of `tuned` whose weights are interpolated towards `start` (w=1: tuned, w=0: start)."""
    model = copy.deepcopy(tuned).cpu()
    start_state = {k: v.detach().cpu() for k, v in start.state_dict().items()}
    tuned_state = {k: v.detach().cpu() for k, v in tuned.state_dict().items()}
    model.load_state_dict(interpolate_state(start_state, tuned_state, weight))
    return model.eval()


MAX_EXTRAPOLATION = 10.0  # |w| beyond this is no interpolation anyone means (and overflows plots)


def check_weights(weights: Sequence[float]) -> list[float]:
    weights = [float(w) for w in weights]
    if not weights or not all(math.isfinite(w) and abs(w) <= MAX_EXTRAPOLATION for w in weights):
        raise ValueError(
            f"interpolation weights (--weights): expected numbers in [-{MAX_EXTRAPOLATION:g}, "
            f"{MAX_EXTRAPOLATION:g}] (0: the start model, 1: the tuned one; outside [0, 1] "
            f"extrapolates), got {quoted(weights)}"
        )
    outside = [w for w in weights if not 0.0 <= w <= 1.0]
    if outside:
        logger.warning("weights %s lie outside [0, 1]: extrapolating", outside)
    return weights


def _same_model(start: LoadedModel, tuned: LoadedModel) -> bool:
    """Whether the w=0 point is the start model itself: the same stored config (alpha, heads,
    architecture), so only the weights differ and w=0 takes all of them from the start."""
    configs = [getattr(loaded.model, "config", None) for loaded in (start, tuned)]
    return all(callable(config) for config in configs) and configs[0]() == configs[1]()


def reused_entry(entry: Mapping[str, Any], modes: Sequence[str], weight: float) -> dict[str, Any]:
    """A suite entry of the start or tuned model as the entry of the w=0 or w=1 point:
    restricted to the sweep's `modes` (ValueError when it lacks one)."""
    missing = [mode for mode in modes if mode not in entry["modes"]]
    if missing:
        raise ValueError(f"the evaluation given for w={weight:g} has no {', '.join(missing)} mode")
    datasets = {}
    for name, result in entry["datasets"].items():
        datasets[name] = {
            **result,
            "modes": {m: result["modes"][m] for m in modes},
            "scores": {m: result["scores"][m] for m in modes},
        }
    return {
        **entry,
        "spec": f"wise-ft w={weight:g} ({entry['spec']})",
        "modes": list(modes),
        "datasets": datasets,
        "summary": {m: entry["summary"][m] for m in modes},
        "reused": True,
    }


def _reusable(
    evaluated: Mapping[float, Mapping[str, Any]] | None, start: LoadedModel, tuned: LoadedModel
) -> dict[float, Mapping[str, Any]]:
    """The given evaluations that stand for a sweep point: w=1's, and w=0's when the start is
    the tuned model's architecture (`_same_model`); ValueError for other weights."""
    unknown = [w for w in (evaluated or {}) if w not in (0.0, 1.0)]
    if unknown:
        raise ValueError(f"evaluated entries can stand only for w=0 and w=1, got {unknown}")
    known = dict(evaluated or {})
    if 0.0 in known and not _same_model(start, tuned):
        del known[0.0]
    return known


def _evaluate_point(
    model: nn.Module,
    tuned: LoadedModel,
    weight: float,
    suite: Any,
    out_dir: Path,
    runtime: Runtime,
    save_models: bool,
    points: dict[str, dict[str, Any]] | None,
) -> dict[str, Any]:
    """The suite's entry of `model`, the tuned model interpolated at `weight` (saved first
    with `save_models`); taken from `points` when the same weights and config are there."""
    if save_models and hasattr(model, "save"):
        model.save(out_dir / "models" / f"wise_ft_{weight:g}.safetensors")
    sha256 = state_sha256(model)
    config = model.config() if callable(getattr(model, "config", None)) else None
    # few-shot splits are files in each sweep's folder: a suite with them is evaluated anew
    fewshot = any(spec.task == "fewshot" for spec in suite.datasets)
    key = None if points is None or fewshot else f"{sha256} {config}"
    if key is not None and key in points:
        logger.info("WiSE-FT w=%g: these weights were evaluated in an earlier sweep; reused", weight)
        return {**copy.deepcopy(points[key]), "spec": f"wise-ft w={weight:g}", "reused": True}
    name = f"w={weight:g}"
    point = LoadedModel(name, model, tuned.preprocess, tuned.tokenizer, f"wise-ft {name}", sha256)
    logger.info("evaluating WiSE-FT w=%g", weight)
    entry = evaluate_loaded(point, suite, out_dir, runtime)
    if key is not None:
        points[key] = copy.deepcopy(entry)
    return entry


def interpolate(
    start: Any,
    tuned: Any,
    weights: Sequence[float],
    suite: Any,
    out_dir: str | os.PathLike,
    runtime: Runtime | None = None,
    modes: Sequence[str] | None = None,
    save_models: bool = False,
    evaluated: Mapping[float, Mapping[str, Any]] | None = None,
    points: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Evaluate WiSE-FT interpolations of `start` and `tuned` (model specs) with a suite.

    Returns the results dict ("models" keyed "w=<w>", plus "interpolation" per weight), which
    `dalip.report.suite.write_interpolation_report` turns into results.json/.md/.png (one row
    per weight), interpolation.md and interpolation.png. With `save_models`, each interpolated
    DALIPModel is saved as `out_dir`/models/wise_ft_<w>.safetensors.

    `evaluated` may give the entries this suite already produced for the tuned model (key
    1.0) and the start model (key 0.0), as `run_suite` writes them: w=1 is the tuned model
    exactly, so its entry is used instead of evaluating it again; so is w=0's when the
    start has the tuned model's stored config (otherwise, e.g. a CLIP-trained start with
    the DALIP-tuned model's alpha and heads, w=0 is a model of its own and is evaluated).

    `points` carries evaluations between sweeps of one suite (`dalip frontier`'s sweeps of
    several tuned models from one start): a point whose weights and stored config were
    evaluated before is taken from it (the w=0 point of every model tuned with the same
    loss), and each point evaluated is added to it.
    """
    weights = check_weights(weights)
    suite = load_suite(suite)
    runtime = runtime or suite_runtime(suite)
    suite = with_overrides(suite, modes, runtime.batch_size, runtime.workers)
    out_dir = Path(out_dir)
    start_model, tuned_model = load_model(start, "start"), load_model(tuned, "tuned")
    results: dict[str, Any] = {
        "suite": suite_summary(suite),
        "models": {},
        "interpolation": [],
        "start": {"spec": start_model.spec, "sha256": start_model.sha256},
        "tuned": {"spec": tuned_model.spec, "sha256": tuned_model.sha256},
        "answer_mode": tuned_model.model.default_mode,  # what the tuned model answers with
    }
    known = _reusable(evaluated, start_model, tuned_model)
    for weight in weights:
        name = f"w={weight:g}"
        if weight in known and not save_models:
            logger.info(
                "WiSE-FT %s is the %s model: its evaluation is reused", name, "tuned" if weight else "start"
            )
            entry = reused_entry(known[weight], model_modes(tuned_model, suite.modes), weight)
        else:
            model = interpolate_weights(start_model.model, tuned_model.model, weight)
            entry = _evaluate_point(model, tuned_model, weight, suite, out_dir, runtime, save_models, points)
        entry["weight"] = weight
        results["models"][name] = entry
        results["interpolation"].append({"weight": weight, "summary": entry["summary"]})
    results["record"] = reproducibility_record(results, suite)
    return results
