"""Evaluation suites: several datasets x several models in one table (WiSE-FT: `wiseft.py`).

A suite is a YAML file (or the same structure as a Python dict / list of datasets):

    name: plants-quick              # optional
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

from dalip.config import check_fields, checked, from_dict, read_yaml
from dalip.evaluation import probe
from dalip.evaluation.record import reproducibility_record
from dalip.evaluation.retrieval import retrieval
from dalip.evaluation.runtime import resolve_modes
from dalip.evaluation.specs import LoadedModel, check_spec, default_name, load_model
from dalip.evaluation.templates import load_templates
from dalip.evaluation.zero_shot import zero_shot
from dalip.model.dalip_model import SIMILARITY_MODES

logger = logging.getLogger(__name__)

TASKS = ("zeroshot", "retrieval", "linear_probe", "fewshot")
FEATURE_KINDS = ("first", "second", "concat")
MODES = (*SIMILARITY_MODES, "all")


@dataclass
class DatasetSpec:
    """One dataset of a suite (see the module docstring for the YAML form)."""

    name: str
    task: str = field(metadata={"choices": TASKS})
    domain: str = "general"
    path: str | None = None
    train: str | None = None
    test: str | None = None
    templates: str | list[str] | None = None
    class_names: list[str] | None = None
    image_key: str = "filepath"
    caption_key: str = "caption"
    label_key: str = "label"
    features: str = checked("first", choices=FEATURE_KINDS)
    c_values: list[float] | None = field(default=None, metadata={"above": 0})
    shots: list[int] = field(default_factory=lambda: [1, 5], metadata={"minimum": 1})
    folds: int = checked(5, minimum=1)
    splits: str | None = None  # few-shot splits file to reuse

    def check(self, where: str = "") -> None:
        """ValueError for what the types cannot say; `where` prefixes the field names."""
        where = where or f"dataset {self.name!r}: "
        if self.name in ("", ".", "..") or any(c in self.name for c in "/\\\0"):
            raise ValueError(f"{where}name: {self.name!r} is not a plain name (it names files such as "
                             f"fewshot_splits/NAME.json); use no / or \\")
        needs = ("path",) if self.task in ("zeroshot", "retrieval") else ("train", "test")
        for key in needs:
            if not getattr(self, key):
                raise ValueError(f"{where}task {self.task} needs {', '.join(needs)}")
        if self.task == "fewshot" and not self.shots:
            raise ValueError(f"{where}shots: expected at least one k, e.g. [1, 5]")


@dataclass
class Suite:
    datasets: list[DatasetSpec]
    name: str = "suite"
    modes: list[str] = field(default_factory=lambda: ["fused"], metadata={"choices": MODES})
    templates: str | list[str] = "generic"
    batch_size: int = checked(64, minimum=1)
    workers: int = checked(0, minimum=0)
    seed: int = checked(0, minimum=0)
    source: str | None = None  # the YAML file, when read from one


def _dataset_from(entry: Any, base: Path, index: int, where: str) -> DatasetSpec:
    here = f"{where}: datasets[{index}]"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{here}: expected a mapping such as {{name: x, task: zeroshot, path: dir}}, "
                         f"got {type(entry).__name__} {entry!r}")
    if "task" not in entry:
        raise ValueError(f"{here}: missing 'task' (one of {', '.join(TASKS)})")
    values = dict(entry)
    values.setdefault("name", Path(str(values.get("path") or values.get("test") or f"dataset{index}")).name)
    spec = from_dict(DatasetSpec, values, f"{here}.")
    check_fields(spec, f"{here}.")
    for key in ("path", "train", "test", "splits"):
        if getattr(spec, key):
            setattr(spec, key, str(base / os.path.expanduser(getattr(spec, key))))
    if isinstance(spec.templates, str) and (base / spec.templates).is_file():
        spec.templates = str(base / spec.templates)
    spec.check(f"{here}.")
    return spec


def load_suite(suite: str | os.PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]] | Suite) -> Suite:
    """A suite from a YAML file, a dict with `datasets`, or a list of dataset dicts.

    Every key is checked against the dataclasses above (types, ranges, choices); a mistake
    is a ValueError naming the file and the key."""
    if isinstance(suite, Suite):
        return suite
    base, source, where = Path.cwd(), None, "suite"
    if isinstance(suite, (str, os.PathLike)):
        where = os.fspath(suite)
        base, source = Path(suite).resolve().parent, str(Path(suite).resolve())
        suite = read_yaml(suite, "suite file")
    if isinstance(suite, list):
        suite = {"datasets": suite}
    if not isinstance(suite, Mapping):
        raise ValueError(f"{where}: expected a mapping with a 'datasets' list (or a list of datasets), "
                         f"got {'nothing' if suite is None else type(suite).__name__}")
    top = dict(suite)
    if isinstance(top.get("modes"), str):
        top["modes"] = [top["modes"]]
    entries = top.pop("datasets", None)
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: no datasets (expected a non-empty 'datasets' list)")
    if "source" in top:
        raise ValueError(f"{where}: unknown key 'source'")
    result = from_dict(Suite, {**top, "datasets": []}, f"{where}: ")
    check_fields(result, f"{where}: ")
    result.datasets = [_dataset_from(entry, base, i, where) for i, entry in enumerate(entries)]
    names = [d.name for d in result.datasets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{where}: dataset names must be unique, repeated: {duplicates}")
    if isinstance(result.templates, str) and (base / result.templates).is_file():
        result.templates = str(base / result.templates)
    result.source = source
    return result


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
    """Evaluate every model on every dataset of a suite; returns the results (with a
    reproducibility record). Few-shot splits are saved in `out_dir`; the report files
    (results.json/.md/.png) are written by `dalip.report.suite.write_suite_report`.

    `models`: {display name: spec} (spec: DALIPModel, dalip checkpoint path or
    `openclip:ARCH:WEIGHTS`), a list of specs, or one spec.
    """
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
    return results


def suite_summary(suite: Suite) -> dict[str, Any]:
    """The suite as plain data (with templates resolved to the lists used)."""
    described = asdict(suite)
    for entry in described["datasets"]:
        if entry["task"] == "zeroshot":
            entry["templates"] = load_templates(entry["templates"] or suite.templates)
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
    model, preprocess, tokenizer = loaded.model, loaded.preprocess, loaded.tokenizer
    keys = dict(image_key=spec.image_key, label_key=spec.label_key)
    if spec.task == "zeroshot":
        return zero_shot(
            model, spec.path, tokenizer, preprocess, templates=spec.templates or suite.templates,
            modes=modes, class_names=spec.class_names, **keys, **runtime,
        )
    if spec.task == "retrieval":
        return retrieval(
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
