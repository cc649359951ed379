"""`dalip frontier`: WiSE-FT sweeps of several tuned models against one start model, read as
the gain-retention trade-off (`dalip.frontier.curves`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dalip.cli.common import MODEL_HELP, add_force_flag, add_runtime_flags, runtime_from_flags
from dalip.cli.interpolate import parse_weights
from dalip.evaluation.suite_file import load_suite
from dalip.frontier.curves import DEFAULT_LEVELS, Curve, curve_from_sweep, frontier
from dalip.frontier.report import frontier_table, write_frontier_report
from dalip.frontier.sweeps import cached_sweep, read_sweep
from dalip.inference.specs import check_spec
from dalip.outputs import OutputFolder

SWEEPS = "sweeps"


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "frontier",
        help="compare tuning recipes by general accuracy at matched domain gain (WiSE-FT curves)",
        description=(
            "Sweep w from the start model (0) to each tuned model (1), evaluate each point with a "
            "suite, and report general accuracy at matched domain gain and the dominated area, "
            "with paired 95%% intervals against a baseline recipe over the seeds."
        ),
    )
    parser.add_argument("--start", metavar="SPEC", help="start model: " + MODEL_HELP)
    parser.add_argument(
        "--tuned",
        nargs="+",
        default=[],
        metavar="RECIPE[@SEED]=SPEC",
        help="tuned models, e.g. clip@0=runs/clip0/model.safetensors dalip@0=...",
    )
    parser.add_argument(
        "--sweep",
        nargs="+",
        default=[],
        metavar="RECIPE[@SEED]=DIR",
        help="an earlier `dalip interpolate --out DIR` to read instead of sweeping again",
    )
    parser.add_argument("--suite", help="suite YAML (needed with --tuned)")
    parser.add_argument("--baseline", help="the recipe the others are compared with (default: the first)")
    parser.add_argument("--domain", default="plant", help="the domain tuned for (default %(default)s)")
    parser.add_argument("--general", default="general", help="the domain to keep (default %(default)s)")
    parser.add_argument(
        "--weights", default="0,0.25,0.5,0.75,1", help="comma list of w (default %(default)s)"
    )
    parser.add_argument(
        "--levels",
        default=",".join(f"{v:g}" for v in DEFAULT_LEVELS),
        help="gain shares (default %(default)s)",
    )
    parser.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "fused", "first", "second"],
        help="auto (default): the mode each tuned model answers with (stored with it, else first)",
    )
    parser.add_argument(
        "--out", required=True, help="output folder (new or empty, or an earlier run's with --force)"
    )
    add_force_flag(
        parser, "an earlier frontier in --out (its sweeps are reused when their models are the same)"
    )
    add_runtime_flags(parser)
    parser.set_defaults(handler=run_frontier)


def parse_named(items: list[str], flag: str) -> list[tuple[str, str, str]]:
    """["clip@0=PATH", ...] -> [("clip", "0", "PATH"), ...]; the seed is "-" when not given."""
    named = []
    for item in items:
        name, equals, value = item.partition("=")
        recipe, _, seed = name.partition("@")
        if not equals or not recipe or not value or "/" in name:
            raise ValueError(
                f"{flag}: expected RECIPE[@SEED]=VALUE (e.g. clip@0=model.safetensors), got {item!r}"
            )
        named.append((recipe, seed or "-", value))
    return named


def parse_levels(text: str) -> list[float]:
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(
            f"--levels: expected comma-separated shares such as 0.5,0.75,1, got {text!r}"
        ) from error
    if not levels or not all(0 < level <= 2 for level in levels):
        raise ValueError(f"--levels: expected shares in (0, 2] of the baseline's gain, got {text!r}")
    return levels


def run_frontier(args: argparse.Namespace) -> int:
    tuned, sweeps = parse_named(args.tuned, "--tuned"), parse_named(args.sweep, "--sweep")
    levels, weights = parse_levels(args.levels), parse_weights(args.weights)
    if not tuned and not sweeps:
        raise ValueError(
            "give --tuned RECIPE[@SEED]=SPEC ... (with --start and --suite) or --sweep RECIPE[@SEED]=DIR"
        )
    if tuned and (args.start is None or args.suite is None):
        raise ValueError("--tuned needs --start (the model every sweep starts from) and --suite")
    suite = load_suite(args.suite) if tuned else None
    for _, _, spec in tuned:
        check_spec(spec)
    if args.start:
        check_spec(args.start)
    baseline = args.baseline or (tuned or sweeps)[0][0]
    out = Path(args.out)
    curves: list[Curve] = []
    with OutputFolder(out, "frontier", force=args.force, keep=(SWEEPS,)):
        for recipe, seed, folder in sweeps:
            results, path = read_sweep(Path(folder)), str(Path(folder) / "results.json")
            curves.append(curve_from_sweep(results, recipe, seed, args.domain, args.general, args.mode, path))
        points: dict[str, dict[str, Any]] = {}  # evaluated weights, shared by the sweeps
        for recipe, seed, spec in tuned:
            folder = out / SWEEPS / f"{recipe}@{seed}"
            results = cached_sweep(
                args.start, spec, weights, suite, folder, lambda: runtime_from_flags(args, suite), points
            )
            curves.append(curve_from_sweep(results, recipe, seed, args.domain, args.general, args.mode))
        report = frontier(curves, baseline, levels)
        write_frontier_report(curves, report, out, args.domain, args.general)
    print(frontier_table(report, args.domain, args.general), end="")
    print(f"results: {out / 'frontier.json'}; plot: {out / 'frontier.png'}")
    return 0
