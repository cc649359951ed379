"""Does DALIP tune better than CLIP at laptop scale? The quickstart comparison over seeds.

For each seed, `dalip quickstart` (same code path) trains the start model and tunes it
with the CLIP and the DALIP loss on the plant + general mix; this script collects the
held-out metrics and reports mean and standard deviation per metric over seeds, and the
paired difference DALIP - CLIP. Results are recorded whether or not DALIP wins.

    python benchmarks/quality.py                      # 3 seeds, budget small
    python benchmarks/quality.py --budget medium --seeds 0 1 2
    python benchmarks/quality.py --results qs-0 qs-1 qs-2   # quickstart folders already run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine, print_json, record_section, run_header  # noqa: E402

from dalip.frontier.curves import paired_interval  # noqa: E402

# (dataset, metric) pairs read from the quickstart's evaluation.
METRICS = (
    ("plant-zeroshot", "top1"),
    ("plant-zeroshot", "top5"),
    ("plant-zeroshot", "mean_per_class_recall"),
    ("general-zeroshot", "top1"),
    ("general-zeroshot", "top5"),
)
# (model, mode) columns: the start model, the CLIP-tuned one, the DALIP-tuned one in every mode.
COLUMNS = (
    ("start", "first"),
    ("tuned-clip", "first"),
    ("tuned-dalip", "fused"),
    ("tuned-dalip", "first"),
    ("tuned-dalip", "second"),
)
DALIP_MODES = ("fused", "first", "second", "own")  # own: the mode the model answers with (stored)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", default="small", choices=("test", "small", "medium"))
    parser.add_argument("--out", default="runs/quality", help="where the per-seed quickstarts go")
    parser.add_argument("--quick", action="store_true", help="test budget, 2 seeds (a smoke run)")
    parser.add_argument(
        "--results",
        nargs="+",
        metavar="DIR",
        help="aggregate these finished `dalip quickstart` folders (one per seed, same budget) "
        "instead of running; --seeds and --budget are read from them",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.seeds = "test", args.seeds[:2]
    if args.results:
        try:
            args.loaded = load_results(args.results)
        except ValueError as error:
            parser.error(str(error))
        args.budget, args.seeds = args.loaded[0]["budget"], [r["seed"] for r in args.loaded]
    return args


def load_results(folders: list[str]) -> list[dict[str, Any]]:
    """The results.json of finished quickstart folders; ValueError unless they are one
    budget and distinct seeds."""
    loaded = []
    for folder in folders:
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise ValueError(f"{path}: not found (expected a finished `dalip quickstart` folder)")
        loaded.append(json.loads(path.read_text()))
    if len({r["budget"] for r in loaded}) > 1:
        raise ValueError(f"--results: the folders mix budgets {sorted({r['budget'] for r in loaded})}")
    if len({r["seed"] for r in loaded}) < len(loaded):
        raise ValueError(f"--results: two folders have the same seed ({[r['seed'] for r in loaded]})")
    return loaded


def metric_values(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{"dataset/metric": {"model/mode": value}} of one quickstart run."""
    models = results["evaluation"]["models"]
    own = models["tuned-dalip"].get("answer_mode", "fused")  # a run before dalip 0.5 answered fused
    values = {}
    for dataset, metric in METRICS:
        row = {f"{m}/{mode}": models[m]["datasets"][dataset]["modes"][mode][metric] for m, mode in COLUMNS}
        values[f"{dataset}/{metric}"] = {**row, "tuned-dalip/own": row[f"tuned-dalip/{own}"]}
    return values


def answer_modes(results: dict[str, Any]) -> str:
    """The mode the DALIP-tuned model answers with, and whether `dalip train` chose it."""
    entry = results["evaluation"]["models"]["tuned-dalip"]
    return f"{entry.get('answer_mode', 'fused')}{'' if entry.get('answer_mode_stored') else ' (default)'}"


def aggregate(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds, and paired DALIP - CLIP differences."""
    figures: dict[str, Any] = {}
    for key in per_seed[0]:
        entry = {}
        for column in per_seed[0][key]:
            values = [run[key][column] for run in per_seed]
            entry[column] = {"mean": statistics.fmean(values), "std": _std(values), "values": values}
        for mode in DALIP_MODES:
            differences = [run[key][f"tuned-dalip/{mode}"] - run[key]["tuned-clip/first"] for run in per_seed]
            entry[f"dalip_{mode}_minus_clip"] = {
                "mean": statistics.fmean(differences),
                "std": _std(differences),
                "interval": paired_interval(differences),
            }
            same = [run[key][f"tuned-dalip/{mode}"] - run[key]["tuned-dalip/fused"] for run in per_seed]
            entry[f"dalip_{mode}_minus_fused"] = {"interval": paired_interval(same)}
        figures[key] = entry
    return figures


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _interval(summary: dict[str, Any]) -> str:
    if summary["low"] is None:
        return f"{100 * summary['mean']:+.1f}"
    return f"{100 * summary['mean']:+.1f} [{100 * summary['low']:+.1f}, {100 * summary['high']:+.1f}]"


def mode_table(figures: dict[str, Any]) -> str:
    """Top-1 per DALIP mode: minus CLIP tuning, and the same weights minus fused (paired by seed,
    mean [95% t interval], points)."""
    keys = ("plant-zeroshot/top1", "general-zeroshot/top1")
    header = ["DALIP mode", "plant - CLIP", "general - CLIP", "plant - fused", "general - fused"]
    rows = []
    for mode in DALIP_MODES:
        cells = [_interval(figures[key][f"dalip_{mode}_minus_clip"]["interval"]) for key in keys]
        cells += [_interval(figures[key][f"dalip_{mode}_minus_fused"]["interval"]) for key in keys]
        rows.append([mode] + cells)
    return format_table(header, rows)


def table(figures: dict[str, Any]) -> str:
    header = (
        ["metric"] + [f"{m} [{mode}]" for m, mode in COLUMNS] + ["DALIP fused - CLIP", "DALIP first - CLIP"]
    )
    rows = []
    for key, entry in figures.items():
        cells = [
            f"{100 * entry[f'{m}/{mode}']['mean']:.1f} ± {100 * entry[f'{m}/{mode}']['std']:.1f}"
            for m, mode in COLUMNS
        ]
        cells += [
            f"{100 * entry[k]['mean']:+.1f} ± {100 * entry[k]['std']:.1f}"
            for k in ("dalip_fused_minus_clip", "dalip_first_minus_clip")
        ]
        rows.append([key] + cells)
    return format_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    from dalip.quickstart import quickstart

    args = parse_args(argv)
    info = machine()
    per_seed, seconds, modes = [], [], []
    for seed in args.seeds:
        if args.results:
            results = next(r for r in args.loaded if r["seed"] == seed)
        else:
            results = quickstart(Path(args.out) / f"seed-{seed}", seed=seed, budget=args.budget, force=True)
        per_seed.append(metric_values(results))
        modes.append(answer_modes(results))
        seconds.append(results["timings_seconds"]["total"])
    figures = {
        "budget": args.budget,
        "seeds": args.seeds,
        "seconds_per_seed": seconds,
        "answer_modes": modes,
        "metrics": aggregate(per_seed),
    }
    if args.json:
        print_json(figures)
    else:
        print(table(figures["metrics"]) + "\n\n" + mode_table(figures["metrics"]))
    if not args.no_record:
        body = "\n".join(
            [
                run_header("quality.py", argv, info),
                f"- budget: {args.budget}; seeds: {args.seeds}; seconds per seed: "
                + ", ".join(f"{s:.0f}" for s in seconds),
                "- scores in % on the held-out test splits, mean ± standard deviation over seeds; the last "
                "two columns are paired differences (same seed) against the CLIP-tuned model",
                "",
                table(figures["metrics"]),
                "",
                "Zero-shot top-1 of the DALIP-tuned model in each similarity mode (own: the mode it "
                "answers with, chosen by `dalip train` on the val splits; per seed: "
                + ", ".join(modes)
                + "), paired by seed, mean [95% t interval], points:",
                "",
                mode_table(figures["metrics"]),
            ]
        )
        record_section(f"Quality: DALIP vs CLIP tuning ({args.budget} budget)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
