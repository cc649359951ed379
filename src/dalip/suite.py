"""Evaluation suites: several datasets x several models in one table (WiSE-FT sweeps: `dalip.wiseft`).

A suite is a YAML file (or the same structure as a Python dict / list of datasets):

    name: plants-quick              # optional
    domain: plant                   # domain of datasets that name none; default "unspecified"
    modes: [fused, first]           # similarity modes, or "all"; default [fused]
    templates: generic              # default zero-shot templates (set name, file or list)
    batch_size: 64
    workers: 0
    seed: 0                         # linear-probe hold-out and few-shot draws
    datasets:
      - {name: plant-zs, task: zeroshot, domain: plant, path: plant/test, templates: plant}
      - {name: plant-ret, task: retrieval, domain: plant, path: plant/test/captions.csv}
      - {name: plant-lp, task: linear_probe, domain: plant, train: plant/train, test: plant/test}
      - {name: plant-fs, task: fewshot, domain: plant, train: plant/train, test: plant/test}

Relative paths are relative to the YAML file. Each dataset gets one score per model and
mode (zeroshot: top-1; retrieval: mean recall; linear_probe: top-1; fewshot: mean
accuracy at the largest k); domain means and the overall mean (over datasets) follow.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from torch import nn

from dalip.evaluation.clip_benchmark import evaluate_clip_benchmark, write_clip_benchmark_results
from dalip.evaluation_data import resolve_modes
from dalip.model_specs import LoadedModel, check_spec, default_name, load_model
from dalip.templates import load_templates, template_set_name

logger = logging.getLogger(__name__)

TASKS = ("zeroshot", "retrieval", "linear_probe", "fewshot")


@dataclass
class DatasetSpec:
    """One dataset of a suite (see the module docstring for the YAML form)."""

    name: str
    task: str
    domain: str | None = None  # None: the suite's domain
    path: str | None = None
    train: str | None = None
    test: str | None = None
    templates: str | list[str] | None = None
    class_names: list[str] | None = None
    image_key: str = "filepath"
    caption_key: str = "caption"
    label_key: str = "label"
    features: str = "first"
    c_values: list[float] | None = None
    shots: list[int] = field(default_factory=lambda: [1, 5])
    folds: int = 5
    splits: str | None = None  # few-shot splits file to reuse
    clip_benchmark: str | None = None  # a CLIP_benchmark `wds/NAME` dataset; `path` is its root
    split: str = "test"  # CLIP_benchmark split

    def check(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"dataset {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        if self.clip_benchmark and self.task not in ("zeroshot", "retrieval"):
            raise ValueError(f"dataset {self.name!r}: CLIP_benchmark datasets are zeroshot or retrieval, not {self.task}")
        needs = ("path",) if self.task in ("zeroshot", "retrieval") else ("train", "test")
        for key in needs:
            if not getattr(self, key):
                raise ValueError(f"dataset {self.name!r}: task {self.task} needs {', '.join(needs)}")


@dataclass
class Suite:
    datasets: list[DatasetSpec]
    name: str = "suite"
    domain: str = "unspecified"
    modes: list[str] = field(default_factory=lambda: ["fused"])
    templates: str | list[str] = "generic"
    batch_size: int = 64
    workers: int = 0
    seed: int = 0
    source: str | None = None  # the YAML file, when read from one


def _dataset_from(entry: Mapping[str, Any], base: Path, index: int) -> DatasetSpec:
    known = {f.name for f in fields(DatasetSpec)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"suite dataset #{index + 1}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    if "task" not in entry:
        raise ValueError(f"suite dataset #{index + 1}: missing 'task' (one of {TASKS})")
    values = dict(entry)
    values.setdefault("name", Path(str(values.get("path") or values.get("test") or f"dataset{index}")).name)
    for key in ("path", "train", "test", "splits"):
        if values.get(key):
            values[key] = str(base / os.path.expanduser(str(values[key])))
    if isinstance(values.get("templates"), str) and (base / values["templates"]).is_file():
        values["templates"] = str(base / values["templates"])
    spec = DatasetSpec(**values)
    spec.check()
    return spec


def load_suite(suite: str | os.PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]] | Suite) -> Suite:
    """A suite from a YAML file, a dict with `datasets`, or a list of dataset dicts."""
    if isinstance(suite, Suite):
        return suite
    base, source = Path.cwd(), None
    if isinstance(suite, (str, os.PathLike)):
        if not os.path.isfile(suite):
            raise FileNotFoundError(f"suite file not found: {suite}")
        base, source = Path(suite).resolve().parent, str(Path(suite).resolve())
        suite = yaml.safe_load(Path(suite).read_text(encoding="utf-8")) or {}
    top = {"datasets": list(suite)} if isinstance(suite, Sequence) else dict(suite)
    known = {f.name for f in fields(Suite)} - {"source"}
    unknown = sorted(set(top) - known)
    if unknown:
        raise ValueError(f"suite: unknown key(s) {unknown}; expected some of {sorted(known)}")
    if not top.get("datasets"):
        raise ValueError("suite: no datasets (expected a 'datasets' list)")
    datasets = [_dataset_from(entry, base, i) for i, entry in enumerate(top.pop("datasets"))]
    names = [d.name for d in datasets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"suite: dataset names must be unique, repeated: {duplicates}")
    if isinstance(top.get("templates"), str) and (base / top["templates"]).is_file():
        top["templates"] = str(base / top["templates"])
    if isinstance(top.get("modes"), str):
        top["modes"] = [top["modes"]]
    loaded = Suite(datasets=datasets, source=source, **top)
    for dataset in loaded.datasets:
        dataset.domain = dataset.domain or loaded.domain
    return loaded


def with_overrides(
    suite: Suite, modes: Sequence[str] | None = None, batch_size: int | None = None, workers: int | None = None
) -> Suite:
    """The suite with command-line / caller overrides applied (None keeps the suite's value)."""
    if modes is not None:
        suite.modes = list(modes)
    if batch_size is not None:
        suite.batch_size = batch_size
    if workers is not None:
        suite.workers = workers
    return suite


def model_modes(loaded: LoadedModel, modes: Sequence[str]) -> list[str]:
    """The suite's modes for this model; a model without second-order features gets "first"."""
    if not loaded.has_second_order:
        return ["first"]
    return resolve_modes(loaded.model, modes)


def primary_score(task: str, result: dict[str, Any], mode: str) -> float:
    """The one number per dataset that goes into the table."""
    if task == "zeroshot":
        return result["modes"][mode]["top1"]
    if task == "retrieval":
        return result["modes"][mode]["mean_recall"]
    if task == "linear_probe":
        return result["top1"]
    largest = max(result["accuracy"], key=lambda key: int(key.split("-")[0]))
    return result["accuracy"][largest]["mean"]


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


def run_suite(
    models: Mapping[str, Any] | Sequence[Any] | Any,
    suite_path_or_list: Any,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    precision: str = "fp32",
    batch_size: int | None = None,
    workers: int | None = None,
    modes: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate every model on every dataset of a suite; writes results.json/.md/.png in `out_dir`.

    `models`: {display name: spec} (spec: DALIPModel, dalip checkpoint path or
    `openclip:ARCH:WEIGHTS`), a list of specs, or one spec.
    """
    from dalip.report import reproducibility_record, write_suite_report

    suite = with_overrides(load_suite(suite_path_or_list), modes, batch_size, workers)
    named = _name_models(models)
    for spec in named.values():
        check_spec(spec)
    results: dict[str, Any] = {"suite": suite_summary(suite), "models": {}}
    for name, spec in named.items():
        loaded = load_model(spec, name)
        logger.info("evaluating %s (%s)", name, loaded.spec)
        results["models"][name] = evaluate_loaded(loaded, suite, Path(out_dir), device, precision, progress)
        del loaded
    results["record"] = reproducibility_record(results, suite)
    write_suite_report(results, Path(out_dir))
    benchmarks = {spec.name: spec.clip_benchmark for spec in suite.datasets if spec.clip_benchmark}
    if benchmarks:
        write_clip_benchmark_results(results, benchmarks, Path(out_dir))
    return results


def suite_summary(suite: Suite) -> dict[str, Any]:
    """The suite as plain data (with templates resolved to the lists used)."""
    described = asdict(suite)
    for entry in described["datasets"]:
        if entry["task"] == "zeroshot":
            spec = entry["templates"] or suite.templates
            entry["template_set"], entry["templates"] = template_set_name(spec), load_templates(spec)
    return described


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


def evaluate_loaded(
    loaded: LoadedModel, suite: Suite, out_dir: Path, device: str = "auto",
    precision: str = "fp32", progress: bool = False,
) -> dict[str, Any]:
    """One model on every dataset of a suite -> {spec, sha256, modes, datasets, summary}."""
    modes = model_modes(loaded, suite.modes)
    runtime = dict(batch_size=suite.batch_size, workers=suite.workers, device=device,
                   precision=precision, progress=progress)
    cache: dict = {}  # probe features shared by linear_probe and fewshot entries
    datasets = {}
    for spec in suite.datasets:
        logger.info("  %s: %s (%s)", loaded.name, spec.name, spec.task)
        result = run_dataset(loaded, spec, suite, modes, out_dir, runtime, cache)
        result["domain"] = spec.domain
        result["scores"] = {mode: primary_score(spec.task, result, mode) for mode in modes}
        datasets[spec.name] = result
    return {
        "spec": loaded.spec, "sha256": loaded.sha256, "second_order": loaded.has_second_order,
        "modes": modes, "datasets": datasets, "summary": summarise(datasets, modes),
    }


def run_dataset(
    loaded: LoadedModel, spec: DatasetSpec, suite: Suite, modes: list[str], out_dir: Path,
    runtime: dict[str, Any], cache: dict,
) -> dict[str, Any]:
    """Run one suite entry with the right evaluation function."""
    from dalip import evaluate, probe

    model, preprocess, tokenizer = loaded.model, loaded.preprocess, loaded.tokenizer
    keys = dict(image_key=spec.image_key, label_key=spec.label_key)
    if spec.clip_benchmark:
        return evaluate_clip_benchmark(
            loaded, spec.clip_benchmark, spec.path, spec.split, spec.task, modes, runtime,
            templates=spec.templates, default_templates=suite.templates, class_names=spec.class_names,
        )
    if spec.task == "zeroshot":
        return evaluate.zero_shot(
            model, spec.path, tokenizer, preprocess, templates=spec.templates or suite.templates,
            modes=modes, class_names=spec.class_names, **keys, **runtime,
        )
    if spec.task == "retrieval":
        return evaluate.retrieval(
            model, spec.path, tokenizer, preprocess, modes=modes, image_key=spec.image_key,
            caption_key=spec.caption_key, **runtime,
        )
    # a model without second-order features is probed on what it has
    features = spec.features if loaded.has_second_order else "first"
    if spec.task == "linear_probe":
        return probe.linear_probe(
            model, spec.train, spec.test, preprocess, features=features,
            c_values=spec.c_values or probe.DEFAULT_C_VALUES, seed=suite.seed, cache=cache, **keys, **runtime,
        )
    return probe.fewshot(
        model, spec.train, spec.test, preprocess, shots=spec.shots, folds=spec.folds, seed=suite.seed,
        features=features, splits_path=out_dir / "fewshot_splits" / f"{spec.name}.json",
        splits_from=spec.splits, cache=cache, **keys, **runtime,
    )

