"""`dalip interpolate`: WiSE-FT sweeps between a start and a fine-tuned model."""

from __future__ import annotations

import argparse
from pathlib import Path

from dalip.cli.common import MODEL_HELP, MODES, add_force_flag, add_runtime_flags, runtime_from_flags
from dalip.evaluation.suite_file import load_suite
from dalip.evaluation.wiseft import check_weights, interpolate
from dalip.inference.specs import check_spec
from dalip.outputs import OutputFolder
from dalip.report.suite import interpolation_table, write_interpolation_report


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "interpolate",
        help="WiSE-FT: evaluate (1-w)*start + w*tuned for several w with a suite",
    )
    parser.add_argument("--start", required=True, metavar="SPEC", help="start model: " + MODEL_HELP)
    parser.add_argument("--tuned", required=True, metavar="SPEC", help="fine-tuned dalip checkpoint")
    parser.add_argument(
        "--weights", default="0,0.25,0.5,0.75,1", help="comma list of w (default 0,0.25,0.5,0.75,1)"
    )
    parser.add_argument("--suite", required=True, help="suite YAML")
    parser.add_argument("--mode", default=None, choices=MODES, help="similarity mode (default: the suite's)")
    parser.add_argument("--save-models", action="store_true", help="also save each interpolated model")
    parser.add_argument(
        "--out", required=True, help="output folder (new or empty, or an earlier run's with --force)"
    )
    add_force_flag(parser, "an earlier interpolate's results in --out")
    add_runtime_flags(parser)
    parser.set_defaults(handler=run_interpolate)


def parse_weights(text: str) -> list[float]:
    try:
        weights = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(
            f"--weights: expected comma-separated numbers such as 0,0.5,1, got {text!r}"
        ) from error
    return check_weights(weights)


def run_interpolate(args: argparse.Namespace) -> int:
    weights, suite = parse_weights(args.weights), load_suite(args.suite)
    check_spec(args.start)
    check_spec(args.tuned)
    with OutputFolder(args.out, "interpolate", force=args.force):
        results = interpolate(
            args.start,
            args.tuned,
            weights,
            suite,
            args.out,
            runtime_from_flags(args, suite),
            modes=[args.mode] if args.mode else None,
            save_models=args.save_models,
        )
        write_interpolation_report(results, Path(args.out))
    print(interpolation_table(results), end="")
    print(f"results: {Path(args.out) / 'results.json'}; plot: {Path(args.out) / 'interpolation.png'}")
    return 0
