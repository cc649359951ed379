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

import logging
import time
from pathlib import Path
from typing import Any

from dalip.evaluation.suite import run_suite
from dalip.evaluation.wiseft import interpolate
from dalip.experiments import BUDGETS, Budget, generate_data, run_config, train_stage, train_start
from dalip.frontier.curves import curve_from_sweep, frontier
from dalip.outputs import OutputFolder
from dalip.quickstart.report import write_report
from dalip.report.suite import write_interpolation_report, write_suite_report

logger = logging.getLogger(__name__)

WISE_FT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
RUNS = ("start", "tuned-clip", "tuned-dalip")


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
    timings["start"] = train_start(out, data, settings, seed)
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
