"""The zero-shot check a training run makes every `eval_every` steps on `data.val`.

It lives with the evaluation code, above training: `dalip.train.loop.train` takes it as its
`validate` argument (`dalip train` and the quickstart hand it in)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dalip.config import TrainConfig
from dalip.evaluation.runtime import Runtime
from dalip.evaluation.zero_shot import zero_shot
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
