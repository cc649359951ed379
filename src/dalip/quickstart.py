"""`dalip quickstart`: the paper's story at laptop scale, through the same code paths as
`dalip make-dataset`, `dalip train`, `dalip eval` and `dalip interpolate`.

1. start model: dalip-tiny trained with the plain CLIP loss on the general data only —
   a stand-in for a pretrained OpenCLIP model (cached in the output folder);
2. domain tuning, twice, from the start model on plant 10 : general 3 with identical
   data, steps and seed: once with the CLIP loss, once with the DALIP loss. The general
   part covers only every other general concept (PlantMix's general pairs are a slice of
   what pretraining saw), so the general test, over all of them, measures retention;
3. evaluation of all three on the held-out plant and general test splits (zero-shot; no
   retrieval: the embedded captions describe classes, not images), and WiSE-FT sweeps
   from the start model to each tuned model.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dalip.atomic import write_text
from dalip.config import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SourceConfig,
    TrainConfig,
    config_to_dict,
)
from dalip.data.files import CLASSES_FILE, read_classes_file, read_table
from dalip.data.synthetic import make_dataset
from dalip.evaluation.frontier import curve_from_sweep, frontier
from dalip.evaluation.suite import run_suite
from dalip.evaluation.validation import answer_mode_choice, training_validation
from dalip.evaluation.wiseft import interpolate
from dalip.outputs import OutputFolder, read_manifest, remove_earlier_output
from dalip.readers import MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES, read_json
from dalip.report.quickstart import write_report
from dalip.report.suite import write_interpolation_report, write_suite_report
from dalip.schema import from_dict
from dalip.train.loop import train
from dalip.train.out_dir import clean_temporary_files
from dalip.train.state import training_checkpoints

logger = logging.getLogger(__name__)

MODEL_NAME = "dalip-tiny"
WISE_FT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
RUNS = ("start", "tuned-clip", "tuned-dalip")


@dataclass(frozen=True)
class Budget:
    """Data size and training length of one quickstart size."""

    species: int
    general_classes: int
    general_tune_classes: int  # general concepts in the tuning mix (every other one)
    train_per_class: int
    test_per_class: int
    image_size: int
    batch_size: int
    start_steps: int
    tune_steps: int
    workers: int


BUDGETS = {
    # "test" exists for the test suite: every file, in about a minute.
    "test": Budget(
        species=6,
        general_classes=4,
        general_tune_classes=2,
        train_per_class=6,
        test_per_class=4,
        image_size=64,
        batch_size=16,
        start_steps=6,
        tune_steps=6,
        workers=0,
    ),
    # "small" loads data in the training process (workers=0): on 2 cores, loader workers
    # take CPU from the step and the stages ran about 15% slower with 2 of them.
    "small": Budget(
        species=24,
        general_classes=44,
        general_tune_classes=22,
        train_per_class=40,
        test_per_class=20,
        image_size=64,
        batch_size=32,
        start_steps=500,
        tune_steps=200,
        workers=0,
    ),
    "medium": Budget(
        species=24,
        general_classes=44,
        general_tune_classes=22,
        train_per_class=100,
        test_per_class=30,
        image_size=64,
        batch_size=64,
        start_steps=1500,
        tune_steps=600,
        workers=2,
    ),
}


def generate_data(out: Path, budget: Budget, seed: int) -> Path:
    """The embedded dataset under out/data, reused when its options match."""
    root = out / "data"
    options = dict(
        species=budget.species,
        image_size=budget.image_size,
        train_per_class=budget.train_per_class,
        val_per_class=max(2, budget.test_per_class // 2),
        test_per_class=budget.test_per_class,
        general_classes=budget.general_classes,
    )
    manifest = root / "manifest.json"
    if manifest.exists():
        stored = read_json(manifest, "dataset manifest", MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES)
        stored_options = stored.get("options") if isinstance(stored, dict) else None
        same = isinstance(stored_options, dict) and all(
            stored_options.get(k) == v for k, v in options.items()
        )
        if same and stored.get("seed") == seed:
            logger.info("reusing the dataset in %s", root)
            return root
    logger.info("writing the embedded dataset to %s", root)
    make_dataset(str(root), seed=seed, force=True, **options)
    return root


def tuning_subset(data: Path, budget: Budget) -> Path:
    """A captions CSV of the general training split restricted to every other concept
    (`budget.general_tune_classes` of them), beside the split's own captions.csv."""
    split = data / "general" / "train"
    folders = [folder for folder, _ in read_classes_file(split / CLASSES_FILE)]
    kept = set(folders[::2][: budget.general_tune_classes])
    rows = read_table(split / "captions.csv", ["filepath", "caption"])
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]), lineterminator="\n")  # as make-dataset writes it
    writer.writeheader()
    writer.writerows(row for row in rows if row["filepath"].split("/", 1)[0] in kept)
    path = split / "captions-tuning.csv"
    if not path.is_file() or path.read_text() != table.getvalue():  # a reused folder stays untouched
        write_text(path, table.getvalue())
    return path


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


def suite(data: Path, budget: Budget, ranks: bool = False) -> dict[str, Any]:
    """The quickstart's zero-shot suite; `ranks`: the plant test also by taxonomic rank (the
    evaluation of the three models, not each WiSE-FT point)."""
    return {
        "name": "quickstart",
        "modes": ["all"],  # a DALIP model in every mode, the one it answers with marked
        "batch_size": 64,
        "workers": budget.workers,
        "datasets": [
            {
                "name": "plant-zeroshot",
                "task": "zeroshot",
                "domain": "plant",
                "path": str(data / "plant/test"),
                "templates": "plant",
                **({"taxonomy": "auto"} if ranks else {}),
            },
            {
                "name": "general-zeroshot",
                "task": "zeroshot",
                "domain": "general",
                "path": str(data / "general/test"),
                "templates": "generic",
            },
        ],
        # No retrieval: the embedded captions name a species or class, not an image (371 of
        # the 480 plant test captions equal another image's), so image-text recall would
        # measure caption styles, not whether a model finds the image.
    }


def quickstart(
    out_dir: str | Path, seed: int = 0, budget: str = "small", force: bool = False
) -> dict[str, Any]:
    """Run the three stages and write the report; returns the combined results."""
    if budget not in BUDGETS:
        raise ValueError(f"--budget: expected one of {', '.join(BUDGETS)}, got {budget!r}")
    out, settings = Path(out_dir), BUDGETS[budget]
    # `force` replaces an earlier quickstart's files; its data and start model are reused
    # when their settings match (generate_data, train_stage).
    with OutputFolder(out, "quickstart", force=force, keep=("data", "start")) as folder:
        return _run_stages(out, settings, budget, seed, folder)


def _run_stages(out: Path, settings: Budget, budget: str, seed: int, folder: OutputFolder) -> dict[str, Any]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = generate_data(out, settings, seed)
    timings["data"] = time.perf_counter() - started
    folder.record()
    timings["start"] = train_stage(run_config(out, data, settings, seed, "start"), cacheable=True)
    for stage in ("tuned-clip", "tuned-dalip"):
        folder.record()
        timings[stage] = train_stage(run_config(out, data, settings, seed, stage))
    folder.record()
    checkpoints = {run: str(out / run / "model.safetensors") for run in RUNS}
    mark = time.perf_counter()
    zero_shot = suite(data, settings)
    evaluation = run_suite(checkpoints, suite(data, settings, ranks=True), out / "eval")
    write_suite_report(evaluation, out / "eval")
    timings["eval"] = time.perf_counter() - mark
    mark = time.perf_counter()
    wise_ft = {}
    for kind in ("clip", "dalip"):
        sweep = out / f"wiseft-{kind}"
        known = {0.0: evaluation["models"]["start"], 1.0: evaluation["models"][f"tuned-{kind}"]}
        wise_ft[kind] = interpolate(
            checkpoints["start"],
            checkpoints[f"tuned-{kind}"],
            WISE_FT_WEIGHTS,
            zero_shot,
            sweep,
            modes=["first"] if kind == "clip" else ["fused", "first"],
            evaluated=known,
        )
        write_interpolation_report(wise_ft[kind], sweep)
    timings["wise_ft"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    curves = [curve_from_sweep(wise_ft[kind], kind, str(seed), "plant", "general") for kind in wise_ft]
    results = {
        "budget": budget,
        "seed": seed,
        "checkpoints": checkpoints,
        "evaluation": evaluation,
        "wise_ft": wise_ft,
        "frontier": frontier(curves, "clip"),
        "timings_seconds": timings,
        "settings": settings.__dict__,
    }
    write_report(out, results, data)
    return results
