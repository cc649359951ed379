"""Whether a suite's datasets are there, checked before any model loads: the file each one's
layout cannot do without, a copy of the suite without those that are missing (`dalip eval
--skip-missing`), which records them as skipped, and a read of what the present ones declare."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dalip.evaluation.clip_benchmark import describe_clip_benchmark
from dalip.evaluation.metadata_csv import METADATA_FILE, read_metadata_folder
from dalip.evaluation.suite_file import DatasetSpec, Suite


def expected_paths(spec: DatasetSpec) -> list[Path]:
    """The files or folders a dataset of a suite is read from (for its layout's key file)."""
    if spec.clip_benchmark:
        return [Path(spec.path) / spec.split / "nshards.txt"]
    if spec.layout == "metadata_csv":
        return [Path(spec.path) / METADATA_FILE]
    if spec.task in ("zeroshot", "retrieval"):
        return [Path(spec.path)]
    return [Path(spec.train), Path(spec.test)]


def missing_datasets(suite: Suite) -> dict[str, str]:
    """{dataset name: the first of its expected paths that does not exist}, in suite order."""
    missing = {}
    for spec in suite.datasets:
        absent = [path for path in expected_paths(spec) if not path.exists()]
        if absent:
            missing[spec.name] = str(absent[0])
    return missing


def skip_datasets(suite: Suite, missing: dict[str, str]) -> Suite:
    """A copy of the suite without the `missing` datasets, which it lists in `skipped`
    ({name, domain, expected}) so that the report can say what its means average."""
    kept = [spec for spec in suite.datasets if spec.name not in missing]
    skipped = [
        {"name": spec.name, "domain": spec.domain, "expected": missing[spec.name]}
        for spec in suite.datasets
        if spec.name in missing
    ]
    return replace(suite, datasets=kept, skipped=[*suite.skipped, *skipped])


def check_layouts(suite: Suite) -> None:
    """Read what each dataset's layout declares (CLIP_benchmark's class names and shard list; a
    metadata.csv and the images it lists), so that a broken dataset fails before any model
    loads rather than hours into a run; FileNotFoundError / ValueError naming the file."""
    for spec in suite.datasets:
        if spec.clip_benchmark:
            describe_clip_benchmark(spec.clip_benchmark, spec.path, spec.split)
        elif spec.layout == "metadata_csv":
            read_metadata_folder(spec.path)
