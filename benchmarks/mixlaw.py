"""The mixing-law benchmark (`dalip mixlaw`) on the embedded data, over paired seeds.

1. Held-out prediction error: pilots at plant shares 0.5, 0.65, 0.8, 0.9, 0.95 (the embedded
   study's fit) and 0.6, 0.7, 10/13 (PlantMix's 10:3), 0.85 (held out), every one for each
   seed, 100 steps each from the quickstart's start model. The law fitted to the five is
   scored on the four; then, over every subset of k of the nine mixtures (k = 4 .. 8), the
   law fitted to the subset is scored on the rest (the paper's claim: 5-7 pilots suffice).
   Losses are the mean over seeds of each domain's val-split contrastive loss.
2. Recommended vs 10:3: the mixture `dalip mixlaw` recommends from the five (objective:
   lowest plant loss with the general loss at most --eps above the start model's), trained
   for each seed (`--confirm`), against the 10:3 pilots of the same seeds; paired
   differences with 95% t intervals on the val split (what the law optimises) and, once, on
   the test split (contrastive loss and zero-shot top-1).

Every run is cached in --out (a rerun reuses them). Results: --out/benchmark.json, and the
Markdown printed for RESULTS.md.

    python benchmarks/mixlaw.py --out bench-mixlaw --quickstart quickstart --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from dalip.inference.runtime import Runtime  # noqa: E402
from dalip.mixlaw.build import build_study  # noqa: E402
from dalip.mixlaw.embedded import SHARES, embedded_base  # noqa: E402
from dalip.mixlaw.law import fit_law  # noqa: E402
from dalip.mixlaw.measure import Measures, measure  # noqa: E402
from dalip.mixlaw.study import run_study  # noqa: E402
from dalip.outputs import OutputFolder  # noqa: E402

HELD_OUT = (0.6, 0.7, 10 / 13, 0.85)
PAPER = 10 / 13


def subset_errors(means: dict[float, dict[str, float]], domains: list[str]) -> dict[int, dict[str, Any]]:
    """k -> mean abs / rel error of laws fitted on every k-subset of the mixtures, on the rest."""
    shares = sorted(means)
    found = {}
    for k in range(4, len(shares)):
        absolute, relative, inside = [], [], []
        for chosen in itertools.combinations(shares, k):
            laws = {d: fit_law(np.array(chosen), [means[s][d] for s in chosen], restarts=4) for d in domains}
            for share in set(shares) - set(chosen):
                for domain in domains:
                    predicted = float(laws[domain](np.array([share]))[0])
                    error = abs(predicted - means[share][domain])
                    absolute.append(error)
                    relative.append(error / means[share][domain])
                    inside.append(min(chosen) < share < max(chosen))
        absolute, relative, inside = map(np.array, (absolute, relative, inside))
        found[k] = {
            "subsets": len(list(itertools.combinations(shares, k))),
            "abs_error": float(absolute.mean()),
            "rel_error": float(relative.mean()),
            "abs_error_inside": float(absolute[inside].mean()) if inside.any() else None,
            "abs_error_outside": float(absolute[~inside].mean()) if (~inside).any() else None,
        }
    return found


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """mean of a - b with its 95% t interval (paired by seed)."""
    diff = np.array(a) - np.array(b)
    half = (
        float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
        if len(diff) > 1
        else float("nan")
    )
    return {"mean": float(diff.mean()), "low": float(diff.mean() - half), "high": float(diff.mean() + half)}


def test_measures(data: Path, modes: tuple[str, ...]) -> Measures:
    return Measures(
        val={
            "plant": str(data / "plant/test/captions.csv"),
            "general": str(data / "general/test/captions.csv"),
        },
        zeroshot={"plant": str(data / "plant/test"), "general": str(data / "general/test")},
        templates={"plant": "plant", "general": "generic"},
        modes=modes,
    )


def compare(results: dict[str, Any], out: Path, data: Path, eps: float) -> dict[str, Any]:
    """The recommended mixture's runs against the 10:3 pilots, seed by seed, val and test."""
    mode, domains = results["mode"], results["domains"]
    paper = {p["seed"]: p for p in results["pilots"] if abs(p["mixture"][0] - PAPER) < 1e-9}
    chosen = {run["seed"]: run for run in results["confirm"]["runs"]}
    seeds = sorted(chosen)
    limit = results["start"]["loss"]["general"][mode] + eps
    tests = test_measures(data, (mode,))
    runtime = Runtime()

    def test_of(run: dict[str, Any]) -> dict[str, Any]:
        model = out / run["name"] / "model.safetensors"
        return measure(
            model, tests, out / "measures-test" / (run["name"].replace("/", "-") + ".json"), runtime
        )

    test = {
        kind: {s: test_of(runs[s]) for s in seeds}
        for kind, runs in (("recommended", chosen), ("paper", paper))
    }
    report: dict[str, Any] = {
        "seeds": seeds,
        "general_limit": limit,
        "val": {},
        "test_loss": {},
        "test_top1": {},
    }
    for domain in domains:
        ours, theirs = [chosen[s]["loss"][domain] for s in seeds], [paper[s]["loss"][domain] for s in seeds]
        report["val"][domain] = {"recommended": ours, "paper": theirs, "difference": paired(ours, theirs)}
        ours = [test["recommended"][s]["loss"][domain][mode] for s in seeds]
        theirs = [test["paper"][s]["loss"][domain][mode] for s in seeds]
        report["test_loss"][domain] = {
            "recommended": ours,
            "paper": theirs,
            "difference": paired(ours, theirs),
        }
        ours = [100 * test["recommended"][s]["zero_shot"][domain][mode] for s in seeds]
        theirs = [100 * test["paper"][s]["zero_shot"][domain][mode] for s in seeds]
        report["test_top1"][domain] = {
            "recommended": ours,
            "paper": theirs,
            "difference": paired(ours, theirs),
        }
    report["within_limit"] = {
        kind: [runs[s]["loss"]["general"] <= limit for s in seeds]
        for kind, runs in (("recommended", chosen), ("paper", paper))
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--quickstart", default="quickstart", help="reuse its data and start model when they match"
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eps", type=float, default=0.05)
    args = parser.parse_args()
    out, seeds = Path(args.out), [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    with OutputFolder(out, "mixlaw", resume=True) as folder:
        base, data = embedded_base(out, quickstart_dir=Path(args.quickstart))
        study = build_study(
            base,
            shares=",".join(map(str, SHARES)),
            holdout=",".join(map(str, HELD_OUT)),
            seeds=seeds,
            val={
                "plant": str(data / "plant/val/captions.csv"),
                "general": str(data / "general/val/captions.csv"),
            },
            zeroshot={"plant": str(data / "plant/val"), "general": str(data / "general/val")},
            templates={"plant": "plant", "general": "generic"},
            eps=args.eps,
            confirm=True,
        )
        results = run_study(study, out, Runtime(), folder)
        domains = results["domains"]
        means: dict[float, dict[str, float]] = {}
        for pilot in results["pilots"]:
            means.setdefault(round(pilot["mixture"][0], 6), {d: [] for d in domains})
            for domain in domains:
                means[round(pilot["mixture"][0], 6)][domain].append(pilot["loss"][domain])
        means = {share: {d: float(np.mean(v)) for d, v in losses.items()} for share, losses in means.items()}
        benchmark = {
            "seeds": seeds,
            "eps": args.eps,
            "held_out": results["held_out"],
            "recommended": results["recommended"],
            "recommended_interval": results["recommended_interval"],
            "laws": results["laws"],
            "subsets": subset_errors(means, domains),
            "comparison": compare(results, out, data, args.eps),
            "seconds": time.perf_counter() - started,
            "machine": _common.machine_line(_common.machine()),
        }
        (out / "benchmark.json").write_text(json.dumps(benchmark, indent=1) + "\n")
        folder.record()
    print(
        json.dumps(
            {k: benchmark[k] for k in ("recommended", "recommended_interval", "subsets", "seconds")}, indent=1
        )
    )


if __name__ == "__main__":
    main()
