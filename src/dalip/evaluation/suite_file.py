"""What a suite is: its datasets and settings, read from YAML, a dict or a list (run: `suite.py`).

A suite is a YAML file (or the same structure as a Python dict / list of datasets):

    name: plants-quick              # optional
    domain: plant                   # domain of datasets that name none; default "unspecified"
    modes: [fused, first]           # similarity modes, "default" (the model's own) or "all"; default all
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
      - {name: plant-ranks, task: zeroshot, path: plant/test, taxonomy: auto}  # also by rank
      - {name: PlantNet, task: zeroshot, layout: metadata_csv, path: PLT_NET_Mini}  # metadata_csv.py

Relative paths are relative to the YAML file, or under `data_root` when one is given (a
shipped suite, named instead of a file, needs one: `shipped_suites`). Every key is checked
against the dataclasses below (types, Literal choices, ranges); a mistake is a ValueError
naming the file and the key. Each dataset gets one score per model and mode (zeroshot:
top-1; retrieval: mean recall; linear_probe: top-1; fewshot: mean accuracy at the largest
k); domain means and the overall mean (over datasets) follow.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from dalip.data.files import few, repeated_names
from dalip.evaluation.shipped_suites import is_suite_name, shipped_suite
from dalip.inference.templates import load_templates, template_set_name
from dalip.model.dalip_model import SIMILARITY_MODES
from dalip.readers import read_yaml
from dalip.schema import check_choice, check_fields, checked, from_dict

TaskName = Literal["zeroshot", "retrieval", "linear_probe", "fewshot"]
Layout = Literal["auto", "metadata_csv"]  # auto: an image folder or a labelled CSV
FeatureKind = Literal["first", "second", "concat"]  # image features a probe fits on
MODES = (*SIMILARITY_MODES, "default", "all")  # default: the mode the model answers with


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
    c_values: list[float] | None = checked(None, above=0)
    shots: list[int] = checked(default_factory=lambda: [1, 5], minimum=1)
    folds: int = checked(5, minimum=1)
    splits: str | None = None  # few-shot splits file to reuse
    clip_benchmark: str | None = None  # a CLIP_benchmark `wds/NAME` dataset; `path` is its root
    split: str = "test"  # CLIP_benchmark split
    taxonomy: str | None = None  # zeroshot: also score by rank (a taxonomy.csv, or "auto")
    layout: Layout = "auto"  # metadata_csv: `path` is a folder with BioCLIP's metadata.csv

    def check(self, where: str = "") -> None:
        """ValueError for what the types cannot say; `where` prefixes the field names."""
        where = where or f"dataset {self.name!r}: "
        if self.name in ("", ".", "..") or any(c in self.name for c in "/\\\0"):
            raise ValueError(
                f"{where}name: {self.name!r} is not a plain name (it names files such as "
                f"fewshot_splits/NAME.json); use no / or \\"
            )
        if self.clip_benchmark and self.task not in ("zeroshot", "retrieval"):
            raise ValueError(
                f"{where}clip_benchmark: CLIP_benchmark datasets are zeroshot or retrieval, not {self.task}"
            )
        needs = ("path",) if self.task in ("zeroshot", "retrieval") else ("train", "test")
        for key in needs:
            if not getattr(self, key):
                raise ValueError(f"{where}task {self.task} needs {', '.join(needs)}")
        if self.taxonomy and (self.task != "zeroshot" or self.clip_benchmark):
            raise ValueError(f"{where}taxonomy: scores zeroshot datasets of ours by rank, not {self.task}")
        if self.layout == "metadata_csv" and (
            self.task != "zeroshot" or self.clip_benchmark or self.taxonomy
        ):
            raise ValueError(f"{where}layout: metadata_csv folders are read for zeroshot alone")
        if self.task == "fewshot" and not self.shots:
            raise ValueError(f"{where}shots: expected at least one k, e.g. [1, 5]")


@dataclass
class Suite:
    """A suite: datasets and how to score them (see the module docstring for the YAML form)."""

    datasets: list[DatasetSpec]
    name: str = "suite"
    domain: str = "unspecified"  # of datasets that name none
    modes: list[str] = field(default_factory=lambda: ["all"])  # each one of MODES
    templates: str | list[str] = "generic"
    batch_size: int = checked(64, minimum=1)
    workers: int = checked(0, minimum=0)
    seed: int = checked(0, minimum=0)
    source: str | None = None  # the YAML file, when read from one
    data_root: str | None = None  # the folder relative dataset paths were read under, when given
    skipped: list[dict[str, Any]] = field(default_factory=list)  # datasets left out: not found


# Fields that results show only when set, so that a suite using none of them reads as before.
_SHOWN_WHEN_SET = {"data_root": None, "skipped": []}
_DATASET_SHOWN_WHEN_SET = {"layout": "auto"}
_NOT_FROM_FILES = ("source", "data_root", "skipped")  # set by dalip, never by a suite file


def _dataset_from(entry: Any, base: Path, data: Path, index: int, where: str) -> DatasetSpec:
    here = f"{where}: datasets[{index}]"
    if not isinstance(entry, Mapping):
        raise ValueError(
            f"{here}: expected a mapping such as {{name: x, task: zeroshot, path: dir}}, "
            f"got {type(entry).__name__} {entry!r}"
        )
    if "task" not in entry:
        raise ValueError(f"{here}: missing 'task' (one of {', '.join(typing.get_args(TaskName))})")
    values = dict(entry)
    values.setdefault("name", Path(str(values.get("path") or values.get("test") or f"dataset{index}")).name)
    spec = from_dict(DatasetSpec, values, f"{here}.")
    check_fields(spec, f"{here}.")
    for key in ("path", "train", "test", "splits", "taxonomy"):
        if getattr(spec, key) and getattr(spec, key) != "auto":
            setattr(spec, key, str(data / os.path.expanduser(getattr(spec, key))))
    spec.templates = _rebased_templates(spec.templates, base)
    spec.check(f"{here}.")
    return spec


def _rebased_templates(templates: Any, base: Path) -> Any:
    if isinstance(templates, str) and (base / templates).is_file():
        return str(base / templates)
    return templates


def _read_source(suite: Any, data_root: str | os.PathLike | None) -> tuple[Any, Path, str | None, str]:
    """(the suite's data, the folder its templates are relative to, its file, how errors name
    it) from a YAML file, a shipped suite's name, or data as it is."""
    if not isinstance(suite, (str, os.PathLike)):
        return suite, Path.cwd(), None, "suite"
    where = os.fspath(suite)
    if is_suite_name(where):
        suite, path = shipped_suite(where)
        if data_root is None:
            raise ValueError(
                f"suite {where!r}: its datasets are read under a data root; give data_root "
                f"(dalip eval: --dataset-root DIR, see docs/datasets.md)"
            )
    else:
        path, suite = Path(where), read_yaml(where, "suite file")
    return suite, path.resolve().parent, str(path.resolve()), where


def load_suite(
    suite: str | os.PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]] | Suite,
    data_root: str | os.PathLike | None = None,
) -> Suite:
    """A suite from a YAML file, a shipped suite's name (`shipped_suites`), a dict with
    `datasets`, or a list of dataset dicts. With `data_root`, relative dataset paths are read
    under that folder instead of the file's (templates files stay relative to the file)."""
    if isinstance(suite, Suite):
        return suite
    suite, base, source, where = _read_source(suite, data_root)
    data = Path(os.path.expanduser(data_root)).absolute() if data_root is not None else base
    if isinstance(suite, list):
        suite = {"datasets": suite}
    if not isinstance(suite, Mapping):
        raise ValueError(
            f"{where}: expected a mapping with a 'datasets' list (or a list of datasets), "
            f"got {'nothing' if suite is None else type(suite).__name__}"
        )
    top = dict(suite)
    if isinstance(top.get("modes"), str):
        top["modes"] = [top["modes"]]
    entries = top.pop("datasets", None)
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: no datasets (expected a non-empty 'datasets' list)")
    for key in _NOT_FROM_FILES:
        if key in top:
            raise ValueError(f"{where}: unknown field {key!r}")
    settings = from_dict(Suite, {**top, "datasets": []}, f"{where}: ")
    check_fields(settings, f"{where}: ")
    for index, mode in enumerate(settings.modes):
        check_choice(f"{where}: modes[{index}]", mode, MODES)
    settings.datasets = [_dataset_from(entry, base, data, i, where) for i, entry in enumerate(entries)]
    for dataset in settings.datasets:
        dataset.domain = dataset.domain or settings.domain
    names = [d.name for d in settings.datasets]
    duplicates = repeated_names(names)
    if duplicates:
        raise ValueError(f"{where}: dataset names must be unique, repeated: [{few(duplicates)}]")
    settings.templates = _rebased_templates(settings.templates, base)
    settings.source = source
    settings.data_root = None if data_root is None else str(data)
    return settings


def with_overrides(
    suite: Suite,
    modes: Sequence[str] | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
) -> Suite:
    """A copy of the suite with command-line / caller overrides applied (None keeps the suite's
    value; the suite given is left as it is); ValueError naming a value out of range."""
    changes = {"modes": None if modes is None else list(modes), "batch_size": batch_size, "workers": workers}
    changed = replace(suite, **{key: value for key, value in changes.items() if value is not None})
    check_fields(changed, "suite: ")
    return changed


def suite_summary(suite: Suite) -> dict[str, Any]:
    """The suite as plain data (with templates resolved to the set names and lists used)."""
    described = _without_unset(asdict(suite), _SHOWN_WHEN_SET)
    for entry in described["datasets"]:
        _without_unset(entry, _DATASET_SHOWN_WHEN_SET)
        if entry["clip_benchmark"] and not entry["templates"]:
            continue  # the dataset's own templates, known once it is read (each result records them)
        if entry["task"] == "zeroshot":
            spec = entry["templates"] or suite.templates
            entry["template_set"], entry["templates"] = template_set_name(spec), load_templates(spec)
    return described


def _without_unset(described: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    for key, default in defaults.items():
        if described.get(key) == default:
            del described[key]
    return described
