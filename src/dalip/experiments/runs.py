"""The runs of an experiment: each stage's config, and training it cached (a finished run of the
same config is reused, an interrupted one resumed, anything else started again)."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from dalip.config import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SourceConfig,
    TrainConfig,
    config_to_dict,
)
from dalip.evaluation.validation import answer_mode_choice, training_validation
from dalip.experiments.budgets import MODEL_NAME, Budget
from dalip.experiments.data import tuning_subset
from dalip.outputs import read_manifest, remove_earlier_output
from dalip.schema import from_dict
from dalip.train.loop import train
from dalip.train.out_dir import clean_temporary_files
from dalip.train.state import training_checkpoints

logger = logging.getLogger(__name__)


def run_config(out: Path, data: Path, budget: Budget, seed: int, stage: str) -> TrainConfig:
    """The TrainConfig of one stage; written to <run>/config.yaml by the training loop."""
    general = SourceConfig(kind="csv", path=str(data / "general/train/captions.csv"), weight=3.0)
    plant = SourceConfig(kind="csv", path=str(data / "plant/train/captions.csv"), weight=10.0)
    val: dict[str, Any] = {}
    if stage == "start":
        model = ModelConfig(name=MODEL_NAME)
        loss, sources, steps, lr = LossConfig(kind="clip"), [general], budget.start_steps, 1e-3
    else:  # the val splits: a DALIP run chooses on them the mode it answers with
        model = ModelConfig(name=MODEL_NAME, pretrained=str(out / "start" / "model.safetensors"))
        kind = stage.removeprefix("tuned-")
        general = SourceConfig(kind="csv", path=str(tuning_subset(data, budget)), weight=3.0)
        loss, sources, steps, lr = LossConfig(kind=kind), [plant, general], budget.tune_steps, 3e-4
        val = {
            "val": str(data / "plant/val"),
            "val_general": str(data / "general/val"),
            "val_templates": "plant",
        }
    return TrainConfig(
        model=model,
        loss=loss,
        data=DataConfig(sources=sources, workers=budget.workers, **val),
        optim=OptimConfig(lr=lr, warmup_steps=max(1, steps // 10), weight_decay=0.1),
        out_dir=str(out / stage),
        batch_size=budget.batch_size,
        steps=steps,
        seed=seed,
        checkpoint_every=max(1, steps // 2),
        keep_last=1,
        log_every=max(1, steps // 50),
        tensorboard=False,
    )


def without_mode_choice(config: TrainConfig) -> TrainConfig:
    """`config` without the val folders, so a DALIP run ends without choosing its answer mode:
    the benchmarks read every mode themselves, and their runs cached before dalip 0.5 stay valid."""
    data = dataclasses.replace(config.data, val=None, val_general=None, val_templates="generic")
    return dataclasses.replace(config, data=data)


def trained_with(path: Path, config: TrainConfig) -> bool:
    """Whether the config.yaml at `path` is `config`'s, read with today's fields (a field added
    since, at its default, does not make a cached run stale)."""
    try:
        stored = from_dict(TrainConfig, yaml.safe_load(path.read_text()))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return config_to_dict(stored) == config_to_dict(config)


def train_stage(config: TrainConfig, cacheable: bool = False) -> float:
    """Train one stage; returns seconds spent. `cacheable`: a finished run of the same config
    in its folder is reused, an interrupted one resumed from its newest checkpoint."""
    run = Path(config.out_dir)
    if cacheable and (run / "model.safetensors").exists() and trained_with(run / "config.yaml", config):
        logger.info("reusing the model trained in %s", run)
        return 0.0
    resume = None
    if cacheable and training_checkpoints(run / "checkpoints") and trained_with(run / "config.yaml", config):
        resume = "latest"  # an interrupted run of this very config: continue it
    else:
        manifest = read_manifest(run) if run.is_dir() else None
        if manifest is not None and manifest.get("command") == "train":
            clean_temporary_files(run)  # half-written files of a stage killed inside a write
        remove_earlier_output(run, "train")  # only what that stage's earlier run wrote
    logger.info("training %s: %s loss, %d steps", run.name, config.loss.kind, config.steps)
    started = time.perf_counter()
    summary = train(
        config, resume, validate=training_validation(config), choose_mode=answer_mode_choice(config)
    )
    if summary["interrupted_by_signal"]:  # Ctrl-C / SIGTERM: stop here, not in the next stage
        raise KeyboardInterrupt(f"{run.name} stopped by signal {summary['interrupted_by_signal']}")
    return time.perf_counter() - started


def train_start(out: Path, data: Path, budget: Budget, seed: int) -> float:
    """The start model (dalip-tiny trained with the CLIP loss on the general data) in
    `out/start`, reused when a finished one of the same config is there; seconds spent."""
    return train_stage(run_config(out, data, budget, seed, "start"), cacheable=True)
