"""The zero-shot checks of a training run: every `eval_every` steps on `data.val`, and at its
end, for a DALIP run with `data.val` and `data.val_general`, the choice of the similarity the
model answers with (`model.answer_mode: auto`).

They live with the evaluation code, above training: `dalip.train.loop.train` takes them as its
`validate` and `choose_mode` arguments (`dalip train` and the quickstart hand them in)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dalip.config import TrainConfig
from dalip.evaluation.zero_shot import zero_shot
from dalip.inference.runtime import Runtime
from dalip.model.dalip_model import SIMILARITY_MODES
from dalip.train.task import TrainingTask


def training_validation(config: TrainConfig) -> Callable[[TrainingTask, int], dict[str, Any]] | None:
    """The zero-shot check `dalip.train.loop.train` runs every `eval_every` steps on `data.val`
    (None when the config asks for none); fused and first order when the task has both, in the
    run's precision (bf16 / amp autocast), on the model's device."""
    if not (config.eval_every and config.data.val):
        return None

    def validate(task: TrainingTask, batch_size: int) -> dict[str, Any]:
        modes = ("fused", "first") if task.second_order else ("first",)
        return zero_shot(
            task.model,
            config.data.val,
            task.tokenizer,
            task.preprocess_val,
            templates=config.data.val_templates,
            modes=modes,
            runtime=Runtime(batch_size, config.data.workers, precision=config.precision),
        )

    return validate


# The modes an end-of-run choice is between: second order alone lost about 11 general points
# on the embedded data and is measured, never chosen.
CHOSEN_AMONG = ("fused", "first")


def choose_answer_mode(
    model: Any,
    tokenizer: Any,
    preprocess: Any,
    folders: dict[str, tuple[str, str]],
    runtime: Runtime,
) -> dict[str, Any]:
    """Score `model` zero-shot on the "domain" and "general" image folders ({name: (folder,
    templates)}) in every mode; the choice is the mode with the higher mean of the two top-1
    accuracies, fused or first (a tie goes to first). Returns {"chosen", "by", "val": {mode:
    {"domain", "general", "mean"}}} (`dalip train`'s end-of-run choice; benchmarks replay it)."""
    top1 = {}
    for name, (folder, templates) in folders.items():
        result = zero_shot(
            model, folder, tokenizer, preprocess, templates=templates, modes=SIMILARITY_MODES, runtime=runtime
        )
        top1[name] = {mode: result["modes"][mode]["top1"] for mode in SIMILARITY_MODES}
    val = {
        mode: {
            "domain": top1["domain"][mode],
            "general": top1["general"][mode],
            "mean": (top1["domain"][mode] + top1["general"][mode]) / 2,
        }
        for mode in SIMILARITY_MODES
    }
    chosen = max(reversed(CHOSEN_AMONG), key=lambda mode: val[mode]["mean"])
    return {"chosen": chosen, "by": "mean of data.val and data.val_general zero-shot top-1", "val": val}


def answer_mode_choice(config: TrainConfig) -> Callable[[TrainingTask, int], dict[str, Any]] | None:
    """The end-of-run choice of the model's answer mode (`choose_answer_mode` on `data.val` and
    `data.val_general`), or None when the config leaves nothing to choose: a mode is named
    (`model.answer_mode`), the run has no second-order term (CLIP loss, alpha 1), or `data.val` /
    `data.val_general` is missing (the model then answers with `dalip.config.DEFAULT_ANSWER_MODE`)."""
    if config.model.answer_mode != "auto" or config.loss.kind != "dalip" or config.model.alpha >= 1.0:
        return None
    if not (config.data.val and config.data.val_general):
        return None
    folders = {
        "domain": (config.data.val, config.data.val_templates),
        "general": (config.data.val_general, "generic"),
    }

    def choose(task: TrainingTask, batch_size: int) -> dict[str, Any]:
        runtime = Runtime(batch_size, config.data.workers, precision=config.precision)
        return choose_answer_mode(task.model, task.tokenizer, task.preprocess_val, folders, runtime)

    return choose
