"""One mixing-law study, end to end: train the pilots (ordinary dalip runs, cached), measure
them, fit, recommend, and with `confirm` train the recommended mixture and measure it.

Layout of the study folder: `pilots/<mixture>-seed<S>-steps<N>/` (each a `dalip train`
folder), `measures/<run>.json`, `confirm/<run>/`, and `mixlaw.json`, `report.md`,
`mixlaw.png`. A finished pilot whose config.yaml is the one asked for is not trained again;
a killed one resumes from its last checkpoint, or starts again (`dalip.mixlaw.training`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalip.atomic import write_text
from dalip.config import DEFAULT_ANSWER_MODE, TrainConfig, config_to_dict
from dalip.inference.runtime import Runtime
from dalip.mixlaw.fit import Objective, fit_study
from dalip.mixlaw.measure import Measures, measure
from dalip.mixlaw.plan import Pilot, check_mixtures, domain_weights, domains_of, pilot_config
from dalip.mixlaw.report import range_note, recommended_shares, write_report
from dalip.mixlaw.training import train_pilot
from dalip.outputs import OutputFolder
from dalip.report.text import printable

logger = logging.getLogger(__name__)


@dataclass
class Study:
    """A study's settings (docs: "Choosing the mix"). `mixtures` are fitted, `held_out`
    ones only predicted; `steps`: one or more pilot budgets (default: the base config's);
    `full_steps`: the budget to predict from two or more; `mode`: the similarity mode whose
    loss the laws fit; `extrapolate`: the recommendation may lie outside the pilots' range of
    shares (else it is the best within it); `mixtures_option`: the option that gave
    `mixtures`, named in messages."""

    base: TrainConfig
    mixtures: list[tuple[float, ...]]
    measures: Measures
    objective: Objective
    held_out: list[tuple[float, ...]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: list[int] = field(default_factory=list)
    full_steps: int | None = None
    mode: str = DEFAULT_ANSWER_MODE
    confirm: bool = False
    resamples: int = 200
    extrapolate: bool = False
    mixtures_option: str = ""

    def domains(self) -> list[str]:
        return domains_of(self.base)

    def check(self) -> None:
        domains = self.domains()
        where = self.mixtures_option or ("--shares" if len(domains) == 2 else "--mixtures")
        check_mixtures(self.mixtures, self.held_out, where)
        self.measures.check(domains)
        if self.mode not in self.measures.modes:
            raise ValueError(
                f"--mode: {self.mode} is not among the measured modes {list(self.measures.modes)}"
            )
        for option, name in (("--domain", self.objective.target), ("--keep", self.objective.keep)):
            if name is not None and name not in domains:
                raise ValueError(
                    f"{option}: no source is of domain {name!r}; the domains are {', '.join(domains)}"
                )
        for name in self.objective.weights or {}:
            if name not in domains:
                raise ValueError(
                    f"--weight: no source is of domain {name!r}; the domains are {', '.join(domains)}"
                )
        if self.objective.weights is None and self.objective.keep == self.objective.target:
            raise ValueError("--keep: the domain to keep must differ from --domain, the domain to gain")
        if self.objective.weights is None and self.start_model() is None:
            raise ValueError(
                "--eps: the limit is relative to the start model, and model.pretrained names no local "
                "checkpoint; use --weight for a weighted objective"
            )
        if self.full_steps is not None and len(self.budgets()) < 2:
            raise ValueError(
                f"--full-steps: needs pilots at two or more --steps budgets to predict {self.full_steps} "
                f"steps from; the pilots have one ({self.budgets()[0]} steps)"
            )
        if len(self.budgets()) > 1 and self.full_steps is None:
            logger.info(
                "pilots at %s steps and no --full-steps: the laws fit the longest budget", self.budgets()
            )

    def budgets(self) -> list[int]:
        return sorted(self.steps or [self.base.steps])

    def start_model(self) -> str | None:
        pretrained = self.base.model.pretrained
        return pretrained if pretrained and os.path.isfile(pretrained) else None

    def pilots(self) -> list[Pilot]:
        every = [(m, False) for m in self.mixtures] + [(m, True) for m in self.held_out]
        return [
            Pilot(tuple(mixture), seed, steps, held)
            for steps in self.budgets()
            for mixture, held in every
            for seed in self.seeds
        ]


def _run_pilot(
    study: Study, pilot: Pilot, folder: Path, runtime: Runtime, output: OutputFolder
) -> dict[str, Any]:
    """Train (`train_pilot`) and measure one pilot in `folder` (a folder of the study's `output`)."""
    domains = study.domains()
    name = pilot.name(domains)
    config = pilot_config(study.base, domains, pilot, folder / name)
    seconds = train_pilot(config, output)
    measured = measure(
        Path(config.out_dir) / "model.safetensors",
        study.measures,
        folder.parent / "measures" / f"{folder.name}-{name}.json",
        runtime,
    )
    return {
        "name": f"{folder.name}/{name}",
        "mixture": list(pilot.mixture),
        "seed": pilot.seed,
        "steps": pilot.steps,
        "held_out": pilot.held_out,
        "weights": [source.weight for source in config.data.sources],
        "loss": {domain: measured["loss"][domain][study.mode] for domain in domains},
        "losses_by_mode": measured["loss"],
        "zero_shot": measured["zero_shot"],
        "train_seconds": seconds,
    }


def run_study(
    study: Study, out: str | os.PathLike, runtime: Runtime | None = None, folder: OutputFolder | None = None
) -> dict[str, Any]:
    """Train, measure, fit and report into `out` (resuming an earlier study there; `folder`:
    the open OutputFolder of `out` when the caller already wrote into it); returns what
    `mixlaw.json` holds."""
    study.check()
    if folder is None:
        with OutputFolder(out, "mixlaw", resume=True) as folder:
            return run_study(study, out, runtime, folder)
    runtime, out = runtime or Runtime(), Path(out)
    rows = []
    for pilot in study.pilots():
        logger.info("pilot %s", pilot.name(study.domains()))
        rows.append(_run_pilot(study, pilot, out / "pilots", runtime, folder))
        folder.record()
    start = None
    if study.start_model() is not None:
        start = measure(study.start_model(), study.measures, out / "measures" / "start.json", runtime)
    objective = study.objective
    if objective.weights is None:
        reference = start["loss"][objective.keep][study.mode]
        objective = Objective(objective.target, objective.keep, objective.eps, reference)
    fitted = fit_study(
        rows,
        study.domains(),
        objective,
        study.full_steps,
        study.resamples,
        within_range=not study.extrapolate,
    )
    results = _results(study, rows, start, fitted)
    if study.confirm and fitted["recommended"] is not None:
        results["confirm"] = _confirm(study, fitted, out / "confirm", runtime, folder)
        folder.record()
    write_text(out / "mixlaw.json", json.dumps(results, indent=1) + "\n")
    write_report(results, out)
    return results


def _results(
    study: Study, rows: list[dict[str, Any]], start: dict[str, Any] | None, fitted: dict[str, Any]
) -> dict[str, Any]:
    domains = study.domains()
    results = {
        "task": "mixlaw",
        "mode": study.mode,
        "base_sources": [config_to_dict(source) for source in study.base.data.sources],
        "seeds": study.seeds,
        "budgets": study.budgets(),
        "full_steps": study.full_steps,
        "pilots": rows,
        "start": None
        if start is None
        else {"model": study.start_model(), "loss": start["loss"], "zero_shot": start["zero_shot"]},
        **fitted,
    }
    if fitted["recommended"] is not None:
        results["recommended_weights"] = domain_weights(study.base, domains, fitted["recommended"])
    return results


def _confirm(
    study: Study, fitted: dict[str, Any], folder: Path, runtime: Runtime, output: OutputFolder
) -> dict[str, Any]:
    """Train the recommended mixture (at `full_steps`, else the longest pilot budget) for every
    seed and measure it against the prediction."""
    steps = study.full_steps or study.budgets()[-1]
    mixture = tuple(fitted["recommended"])
    runs = [_run_pilot(study, Pilot(mixture, seed, steps), folder, runtime, output) for seed in study.seeds]
    observed = {d: sum(run["loss"][d] for run in runs) / len(runs) for d in study.domains()}
    return {
        "steps": steps,
        "runs": runs,
        "observed": observed,
        "predicted": {d: fitted["predicted"][d]["loss"] for d in study.domains()},
    }


def summary_lines(results: dict[str, Any], base: TrainConfig) -> Sequence[str]:
    """The recommendation as `weight:` lines to paste into the config (one per source)."""
    note = [line for line in [range_note(results)] if line]  # outside the pilots' range
    if results.get("recommended") is None:
        return ["no mixture meets the objective: " + results["objective"], *note]
    lines = [
        "recommended mixture: " + recommended_shares(results),
        *note,
        "data.sources weights for the config (in its order):",
    ]
    for source, weight in zip(base.data.sources, results["recommended_weights"]):
        lines.append(
            f"  - path: {printable(source.path)}\n    domain: {source.domain}\n    weight: {weight:.4f}"
        )
    return lines
