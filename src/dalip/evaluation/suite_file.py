"""What a suite is: its datasets and settings, read from YAML, a dict or a list (run: `suite.py`).

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
      - {name: cars, task: zeroshot, clip_benchmark: wds/cars, path: benchmark/cars}

Relative paths are relative to the YAML file. Each dataset gets one score per model and
mode (zeroshot: top-1; retrieval: mean recall; linear_probe: top-1; fewshot: mean
accuracy at the largest k); domain means and the overall mean (over datasets) follow.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from dalip.evaluation.templates import load_templates, template_set_name
from dalip.schema import from_dict

TaskName = Literal["zeroshot", "retrieval", "linear_probe", "fewshot"]
FeatureKind = Literal["first", "second", "concat"]  # image features a probe fits on


@dataclass
class DatasetSpec:
    """One dataset of a suite (see the module docstring for the YAML form)."""

    name: str
    task: TaskName
    domain: str | None = None  # None: the suite's domain
    path: str | None = None
    train: str | None = None
    test: str | None = None
    templates: str | list[str] | None = None
    class_names: list[str] | None = None
    image_key: str = "filepath"
    caption_key: str = "caption"
    label_key: str = "label"
    features: FeatureKind = "first"
    c_values: list[float] | None = None
    shots: list[int] = field(default_factory=lambda: [1, 5])
    folds: int = 5
    splits: str | None = None  # few-shot splits file to reuse
    clip_benchmark: str | None = None  # a CLIP_benchmark `wds/NAME` dataset; `path` is its root
    split: str = "test"  # CLIP_benchmark split

    def check(self) -> None:
        if self.clip_benchmark and self.task not in ("zeroshot", "retrieval"):
            raise ValueError(f"dataset {self.name!r}: CLIP_benchmark datasets are zeroshot or retrieval, not {self.task}")
        needs = ("path",) if self.task in ("zeroshot", "retrieval") else ("train", "test")
        for key in needs:
            if not getattr(self, key):
                raise ValueError(f"dataset {self.name!r}: task {self.task} needs {', '.join(needs)}")


@dataclass
class Suite:
    """A suite: datasets and how to score them (see the module docstring for the YAML form)."""

    datasets: list[DatasetSpec]
    name: str = "suite"
    domain: str = "unspecified"  # of datasets that name none
    modes: list[str] = field(default_factory=lambda: ["fused"])
    templates: str | list[str] = "generic"
    batch_size: int = 64
    workers: int = 0
    seed: int = 0
    source: str | None = None  # the YAML file, when read from one


def _dataset_from(entry: Any, base: Path, index: int) -> DatasetSpec:
    where = f"suite.datasets[{index}]"
    if not isinstance(entry, Mapping) or "task" not in entry:
        raise ValueError(f"{where}: expected a mapping with a 'task' (zeroshot, retrieval, linear_probe or fewshot)")
    values = dict(entry)
    values.setdefault("name", Path(str(values.get("path") or values.get("test") or f"dataset{index}")).name)
    for key in ("path", "train", "test", "splits"):
        if values.get(key):
            values[key] = str(base / os.path.expanduser(str(values[key])))
    _rebase_templates(values, base)
    spec = from_dict(DatasetSpec, values, where)
    spec.check()
    return spec


def _rebase_templates(values: dict[str, Any], base: Path) -> None:
    if isinstance(values.get("templates"), str) and (base / values["templates"]).is_file():
        values["templates"] = str(base / values["templates"])


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
    entries = top.pop("datasets", None)
    if not entries:
        raise ValueError("suite: no datasets (expected a 'datasets' list)")
    _rebase_templates(top, base)
    if isinstance(top.get("modes"), str):
        top["modes"] = [top["modes"]]
    settings = from_dict(Suite, {**top, "datasets": []}, "suite")
    settings.datasets = [_dataset_from(entry, base, i) for i, entry in enumerate(entries)]
    settings.source = source
    for dataset in settings.datasets:
        dataset.domain = dataset.domain or settings.domain
    names = [d.name for d in settings.datasets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"suite: dataset names must be unique, repeated: {duplicates}")
    return settings


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


def suite_summary(suite: Suite) -> dict[str, Any]:
    """The suite as plain data (with templates resolved to the set names and lists used)."""
    described = asdict(suite)
    for entry in described["datasets"]:
        if entry["clip_benchmark"] and not entry["templates"]:
            continue  # the dataset's own templates, known once it is read (each result records them)
        if entry["task"] == "zeroshot":
            spec = entry["templates"] or suite.templates
            entry["template_set"], entry["templates"] = template_set_name(spec), load_templates(spec)
    return described
