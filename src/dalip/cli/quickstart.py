"""`dalip quickstart`: DALIP vs CLIP on the embedded data, end to end, with a report."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from dalip.quickstart import quickstart
from dalip.quickstart.report import comparison_table


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="DALIP vs CLIP on the embedded plant data, end to end (CPU, no download)",
        description="Train a start model with the CLIP loss on general data, tune it on a plant + "
        "general mix with the CLIP loss and with the DALIP loss, evaluate all three "
        "and write a report with tables and figures.",
    )
    parser.add_argument("--out", default="quickstart", help="output folder (default: ./quickstart)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of every run")
    parser.add_argument(
        "--budget",
        default="small",
        choices=("small", "medium", "test"),
        help="small: about 5 minutes on 2 CPU cores (default); medium: longer, "
        "more data; test: a smoke run for the test suite",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="run again into a folder that holds a quickstart (reuses data and start model)",
    )
    parser.set_defaults(handler=run_quickstart)


def run_quickstart(args: argparse.Namespace) -> int:
    results = quickstart(args.out, seed=args.seed, budget=args.budget, force=args.force)
    out = Path(args.out)
    print(comparison_table(results))
    print(f"\nTotal time: {results['timings_seconds']['total']:.0f} s. Files in {out}/:")
    print("  report.md, results.json; figures/loss_curves.png, accuracy.png, predictions.png, wiseft.png;")
    print(
        "  start/, tuned-clip/, tuned-dalip/ (model.safetensors, metrics.jsonl); eval/; wiseft-clip/, wiseft-dalip/"
    )
    models = " ".join(
        f"-m {run}={shlex.quote(str(out / run / 'model.safetensors'))}"
        for run in ("tuned-clip", "tuned-dalip")
    )
    print('\nTry both tuned models on a photo in your browser (after pip install -e ".[serve]"):')
    gallery = shlex.quote(str(out / "data" / "plant" / "test"))
    print(f"  dalip serve {models} --gallery {gallery} --taxonomy auto")
    return 0
