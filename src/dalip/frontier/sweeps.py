"""The WiSE-FT sweeps a frontier reads: a `dalip interpolate` folder given by the user, or the
sweep of a tuned model, run once and reused while its start, tuned model, weights and suite
are the same."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dalip.evaluation.suite_file import suite_summary
from dalip.evaluation.wiseft import interpolate
from dalip.inference.runtime import Runtime
from dalip.inference.specs import load_model
from dalip.readers import MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES, read_json
from dalip.report.suite import write_interpolation_report


def read_sweep(folder: Path) -> dict[str, Any]:
    """The results of a `dalip interpolate` folder, checked to be one."""
    path = folder / "results.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"--sweep {folder}: no results.json (expected a `dalip interpolate --out` folder)"
        )
    results = read_json(path, "sweep results", MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES)
    if not isinstance(results, dict) or not isinstance(results.get("interpolation"), list):
        raise ValueError(f"{path}: not the results of `dalip interpolate` (no 'interpolation' list)")
    return results


def cached_sweep(
    start: str,
    spec: str,
    weights: list[float],
    suite: Any,
    folder: Path,
    runtime: Callable[[], Runtime],
    points: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The sweep of one tuned model, reused from `folder` when an earlier run swept the same
    start and tuned models (checked by their sha256) at the same weights with the same suite
    (datasets, templates, modes); points evaluated by this run's earlier sweeps are reused
    (`interpolate`'s `points`); `runtime` makes the Runtime of a sweep that must run."""
    earlier = folder / "results.json"
    if earlier.is_file():
        results = read_json(earlier, "sweep results", MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES)
        same_suite = isinstance(results, dict) and _scored(results.get("suite")) == _scored(
            _plain(suite_summary(suite))
        )
        if same_suite and _same_sweep(results, start, spec, weights):
            return results
    results = interpolate(start, spec, weights, suite, folder, runtime(), points=points)
    write_interpolation_report(results, folder)
    return results


def _plain(data: Any) -> Any:
    """`data` as it reads back from JSON (tuples as lists)."""
    return json.loads(json.dumps(data))


def _scored(summary: Any) -> Any:
    """What of a suite's summary changes the scores: its datasets, templates, modes and seed
    (not its batch size or workers)."""
    keys = ("datasets", "templates", "modes", "seed")
    return {key: summary.get(key) for key in keys} if isinstance(summary, dict) else None


def _same_sweep(results: dict[str, Any], start: str, tuned: str, weights: list[float]) -> bool:
    swept = [point.get("weight") for point in results.get("interpolation", [])]
    if swept != weights:
        return False
    recorded = (results.get("start", {}).get("sha256"), results.get("tuned", {}).get("sha256"))
    return recorded == (load_model(start, "start").sha256, load_model(tuned, "tuned").sha256)
