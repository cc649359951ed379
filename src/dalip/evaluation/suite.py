"""Evaluation suites: several datasets x several models in one table (the suite itself:
`suite_file.py`; WiSE-FT sweeps: `wiseft.py`). Each task runs through the `TASKS` table."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from dalip.evaluation import probe
from dalip.evaluation.clip_benchmark import evaluate_clip_benchmark
from dalip.evaluation.metadata_csv import evaluate_metadata_csv
from dalip.evaluation.ranks import zero_shot_ranks
from dalip.evaluation.record import reproducibility_record
from dalip.evaluation.retrieval import retrieval
from dalip.evaluation.suite_file import DatasetSpec, Suite, load_suite, suite_summary, with_overrides
from dalip.evaluation.zero_shot import zero_shot
from dalip.inference.runtime import Runtime, resolve_modes
from dalip.inference.specs import LoadedModel, check_spec, default_name, load_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One suite entry for one model: what a task runner needs."""

    loaded: LoadedModel
    spec: DatasetSpec
    suite: Suite
    modes: list[str]
    runtime: Runtime
    out_dir: Path
    cache: dict  # probe features shared by linear_probe and fewshot entries

    @property
    def features(self) -> str:
        # a model without second-order features is probed on what it has
        return self.spec.features if self.loaded.has_second_order else "first"


def _zero_shot(job: Job) -> dict[str, Any]:
    loaded, spec = job.loaded, job.spec
    result = zero_shot(
        loaded.model,
        spec.path,
        loaded.tokenizer,
        loaded.preprocess,
        templates=spec.templates or job.suite.templates,
        modes=job.modes,
        runtime=job.runtime,
        class_names=spec.class_names,
        label_key=spec.label_key,
        image_key=spec.image_key,
    )
    if spec.taxonomy:  # the same images scored at each rank (BioCLIP 2's per-rank accuracy)
        ranked = zero_shot_ranks(
            loaded.model,
            spec.path,
            loaded.tokenizer,
            loaded.preprocess,
            taxonomy=spec.taxonomy,
            templates=spec.templates or job.suite.templates,
            modes=job.modes,
            runtime=job.runtime,
            label_key=spec.label_key,
            image_key=spec.image_key,
        )
        result.update(ranked)
    return result


def _retrieval(job: Job) -> dict[str, Any]:
    loaded, spec = job.loaded, job.spec
    return retrieval(
        loaded.model,
        spec.path,
        loaded.tokenizer,
        loaded.preprocess,
        modes=job.modes,
        runtime=job.runtime,
        image_key=spec.image_key,
        caption_key=spec.caption_key,
    )


def _clip_benchmark(job: Job) -> dict[str, Any]:
    """A CLIP_benchmark dataset (zero-shot or retrieval), read in its WebDataset layout."""
    spec = job.spec
    return evaluate_clip_benchmark(
        job.loaded,
        spec.clip_benchmark,
        spec.path,
        spec.split,
        spec.task,
        job.modes,
        job.runtime,
        templates=spec.templates,
        default_templates=job.suite.templates,
        class_names=spec.class_names,
    )


def _metadata_csv(job: Job) -> dict[str, Any]:
    """A folder with BioCLIP's metadata.csv (a Meta-Album Mini dataset), zero-shot."""
    spec = job.spec
    templates = spec.templates or job.suite.templates
    return evaluate_metadata_csv(job.loaded, spec.path, job.modes, job.runtime, templates, spec.class_names)


def _linear_probe(job: Job) -> dict[str, Any]:
    spec = job.spec
    return probe.linear_probe(
        job.loaded.model,
        spec.train,
        spec.test,
        job.loaded.preprocess,
        features=job.features,
        c_values=spec.c_values or probe.DEFAULT_C_VALUES,
        seed=job.suite.seed,
        runtime=job.runtime,
        cache=job.cache,
        label_key=spec.label_key,
        image_key=spec.image_key,
    )


def _fewshot(job: Job) -> dict[str, Any]:
    spec = job.spec
    return probe.fewshot(
        job.loaded.model,
        spec.train,
        spec.test,
        job.loaded.preprocess,
        shots=spec.shots,
        folds=spec.folds,
        seed=job.suite.seed,
        features=job.features,
        splits_path=job.out_dir / "fewshot_splits" / f"{spec.name}.json",
        splits_from=spec.splits,
        runtime=job.runtime,
        cache=job.cache,
        label_key=spec.label_key,
        image_key=spec.image_key,
    )


def _largest_k_mean(result: dict[str, Any]) -> float:
    largest = max(result["accuracy"], key=lambda key: int(key.split("-")[0]))
    return result["accuracy"][largest]["mean"]


@dataclass(frozen=True)
class Task:
    """How a suite task runs, and the one number per dataset and mode it puts in the table."""

    run: Callable[[Job], dict[str, Any]]
    score: Callable[[dict[str, Any], str], float]


TASKS: dict[str, Task] = {
    "zeroshot": Task(_zero_shot, lambda result, mode: result["modes"][mode]["top1"]),
    "retrieval": Task(_retrieval, lambda result, mode: result["modes"][mode]["mean_recall"]),
    "linear_probe": Task(_linear_probe, lambda result, mode: result["top1"]),
    "fewshot": Task(_fewshot, lambda result, mode: _largest_k_mean(result)),
}


def _runner(spec: DatasetSpec, task: Task) -> Callable[[Job], dict[str, Any]]:
    """How a dataset runs: its layout's reader when it has one, else its task's."""
    if spec.clip_benchmark:
        return _clip_benchmark
    if spec.layout == "metadata_csv":
        return _metadata_csv
    return task.run


def model_modes(loaded: LoadedModel, modes: Sequence[str]) -> list[str]:
    """The suite's modes for this model; a model without second-order features gets "first"."""
    if not loaded.has_second_order:
        return ["first"]
    return resolve_modes(loaded.model, modes)


def summarise(datasets: Mapping[str, dict[str, Any]], modes: Sequence[str]) -> dict[str, Any]:
    """Per mode: mean score per domain and the overall mean over datasets."""
    summary = {}
    for mode in modes:
        by_domain: dict[str, list[float]] = {}
        for entry in datasets.values():
            by_domain.setdefault(entry["domain"], []).append(entry["scores"][mode])
        every = [score for scores in by_domain.values() for score in scores]
        summary[mode] = {
            "domains": {domain: sum(s) / len(s) for domain, s in by_domain.items()},
            "overall": sum(every) / len(every),
        }
    return summary


def suite_runtime(suite: Suite, device: str = "auto") -> Runtime:
    """The runtime a suite asks for: its batch size and workers, on `device`."""
    return Runtime(suite.batch_size, suite.workers, device)


def run_suite(
    models: Mapping[str, Any] | Sequence[Any] | Any,
    suite_path_or_list: Any,
    out_dir: str | os.PathLike,
    runtime: Runtime | None = None,
    modes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate every model on every dataset of a suite; returns the results (with a
    reproducibility record). Few-shot splits are saved in `out_dir`; the report files
    (results.json/.md/.png) are written by `dalip.report.suite.write_suite_report`.

    `models`: {display name: spec} (spec: DALIPModel, dalip checkpoint path or
    `openclip:ARCH:WEIGHTS`), a list of specs, or one spec. `runtime` (default: the
    suite's batch size and workers, device auto) replaces the suite's batch size and workers.
    """
    suite = load_suite(suite_path_or_list)
    runtime = runtime or suite_runtime(suite)
    suite = with_overrides(suite, modes, runtime.batch_size, runtime.workers)
    named = _name_models(models)
    for spec in named.values():
        check_spec(spec)
    results: dict[str, Any] = {"suite": suite_summary(suite), "models": {}}
    for name, spec in named.items():
        loaded = load_model(spec, name)
        logger.info("evaluating %s (%s)", name, loaded.spec)
        results["models"][name] = evaluate_loaded(loaded, suite, Path(out_dir), runtime)
        del loaded
    results["record"] = reproducibility_record(results, suite)
    return results


def _name_models(models: Any) -> dict[str, Any]:
    """{display name: spec} from a mapping, a list of specs or one spec."""
    if isinstance(models, Mapping):
        return dict(models)
    if isinstance(models, (str, os.PathLike, nn.Module, LoadedModel)):
        models = [models]
    named: dict[str, Any] = {}
    for spec in models:
        if isinstance(spec, LoadedModel):
            name = spec.name
        elif isinstance(spec, nn.Module):
            name = getattr(spec, "model_name", type(spec).__name__)
        else:
            name = default_name(os.fspath(spec))
        base, number = name, 2
        while name in named:
            name, number = f"{base}-{number}", number + 1
        named[name] = spec
    return named


def evaluate_loaded(loaded: LoadedModel, suite: Suite, out_dir: Path, runtime: Runtime) -> dict[str, Any]:
    """One model on every dataset of a suite -> {spec, sha256, modes, datasets, summary}."""
    modes = model_modes(loaded, suite.modes)
    cache: dict = {}
    datasets = {}
    for spec in suite.datasets:
        logger.info("  %s: %s (%s)", loaded.name, spec.name, spec.task)
        task = TASKS[spec.task]
        result = _runner(spec, task)(Job(loaded, spec, suite, modes, runtime, out_dir, cache))
        result["domain"] = spec.domain
        result["scores"] = {mode: task.score(result, mode) for mode in modes}
        datasets[spec.name] = result
    return {
        "spec": loaded.spec,
        "sha256": loaded.sha256,
        "second_order": loaded.has_second_order,
        "modes": modes,
        "answer_mode": loaded.model.default_mode,  # what the model answers with when no mode is named
        "answer_mode_stored": getattr(loaded.model, "answer_mode", None) is not None,
        "datasets": datasets,
        "summary": summarise(datasets, modes),
    }
