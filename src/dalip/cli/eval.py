"""`dalip eval`: evaluate and compare models on a suite or on single datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dalip.cli.common import MODEL_HELP, MODES, add_force_flag, add_runtime_flags, runtime_from_flags
from dalip.evaluation.clip_benchmark import PREFIX, describe_clip_benchmark
from dalip.evaluation.presence import check_layouts, missing_datasets, skip_datasets
from dalip.evaluation.shipped_suites import SHIPPED_SUITES, is_suite_name
from dalip.evaluation.suite import run_suite
from dalip.evaluation.suite_file import Suite, load_suite
from dalip.inference.specs import check_spec, parse_model_arg
from dalip.outputs import OutputFolder
from dalip.report.suite import markdown_table, write_suite_report
from dalip.report.text import printable

DATASETS_DOC = "docs/datasets.md"  # where each shipped suite's datasets come from and lie


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate and compare models on a suite or on single datasets",
        description="Zero-shot classification, retrieval, linear probe and few-shot; writes "
        "results.json, results.md and results.png to --out and prints the table.",
    )
    parser.add_argument(
        "--model", "-m", action="append", required=True, metavar="[NAME=]SPEC", help=MODEL_HELP
    )
    _add_suite_flags(parser)
    parser.add_argument(
        "--zeroshot",
        action="append",
        default=[],
        metavar="PATH",
        help="image folder or labelled CSV for zero-shot classification (repeatable)",
    )
    taxonomy_help = (
        "also score --zeroshot datasets by rank from this taxonomy.csv ('auto': the one beside each)"
    )
    parser.add_argument("--taxonomy", metavar="FILE", help=taxonomy_help)
    parser.add_argument(
        "--retrieval", action="append", default=[], metavar="CSV", help="caption CSV (repeatable)"
    )
    parser.add_argument("--linear-probe", action="append", default=[], nargs=2, metavar=("TRAIN", "TEST"))
    parser.add_argument("--fewshot", action="append", default=[], nargs=2, metavar=("TRAIN", "TEST"))
    parser.add_argument(
        "--clip-benchmark",
        action="append",
        default=[],
        metavar="wds/NAME",
        help="a CLIP_benchmark WebDataset dataset (zero-shot or retrieval; repeatable), "
        "read from --dataset-root; results also in CLIP_benchmark's JSON format",
    )
    parser.add_argument("--split", default="test", help="CLIP_benchmark split (default test)")
    parser.add_argument(
        "--templates",
        default=None,
        help="generic (default), plant, none, openai (80), simple (7) or a file (one per line, "
        "with {}); CLIP_benchmark datasets use their own unless this is given",
    )
    parser.add_argument(
        "--domain",
        default="unspecified",
        help="domain tag of the datasets given by flags (default: unspecified)",
    )
    parser.add_argument(
        "--features",
        default="first",
        choices=("first", "second", "concat"),
        help="image features for probes (default first)",
    )
    parser.add_argument("--seed", type=int, default=0, help="probe hold-out and few-shot draws")
    mode_help = "default: the suite's modes, else all side by side, the model's own (default) marked *"
    parser.add_argument("--mode", default=None, choices=MODES, help=f"similarity mode ({mode_help})")
    parser.add_argument(
        "--out", required=True, help="output folder (new or empty, or an earlier eval's with --force)"
    )
    add_force_flag(parser, "an earlier eval's results in --out")
    add_runtime_flags(parser)
    parser.set_defaults(handler=run_eval)


def _add_suite_flags(parser: argparse.ArgumentParser) -> None:
    """--suite and where its datasets are read: --dataset-root (CLIP_benchmark's flags too),
    --skip-missing."""
    parser.add_argument(
        "--suite",
        help="suite YAML (datasets, tasks, domains; docs: Evaluation), or a shipped suite's name: "
        f"{', '.join(SHIPPED_SUITES)} (read under --dataset-root; see {DATASETS_DOC})",
    )
    parser.add_argument(
        "--dataset-root",
        metavar="DIR",
        help="folder of the --clip-benchmark dataset ({name} is replaced by NAME); with --suite, the "
        "folder its relative dataset paths are read under, each dataset checked before any model "
        "loads (a shipped suite needs it)",
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="with --suite: run the datasets that are there and list the missing ones as skipped "
        "(default: name them and stop)",
    )


def _flag_suite(args: argparse.Namespace) -> dict[str, Any]:
    datasets = [
        dict(name=Path(p).stem if Path(p).is_file() else Path(p).name, task="zeroshot", path=p)
        | ({"taxonomy": args.taxonomy} if args.taxonomy else {})
        for p in args.zeroshot
    ]
    datasets += [dict(name=Path(p).stem, task="retrieval", path=p) for p in args.retrieval]
    datasets += [
        dict(
            name=f"{Path(test).name}-probe",
            task="linear_probe",
            train=train,
            test=test,
            features=args.features,
        )
        for train, test in args.linear_probe
    ]
    datasets += [
        dict(
            name=f"{Path(test).name}-fewshot", task="fewshot", train=train, test=test, features=args.features
        )
        for train, test in args.fewshot
    ]
    datasets += [_clip_benchmark_entry(name, args) for name in args.clip_benchmark]
    for entry in datasets:
        entry["domain"] = args.domain
    return {"datasets": datasets, "templates": args.templates or "generic", "seed": args.seed}


def _clip_benchmark_entry(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if not name.startswith(PREFIX) or name == PREFIX:
        raise ValueError(
            f"--clip-benchmark {name!r}: expected wds/NAME (CLIP_benchmark's WebDataset datasets)"
        )
    if not args.dataset_root:
        raise ValueError(
            f"--clip-benchmark {name}: give --dataset-root DIR (the folder holding {args.split}/)"
        )
    if len(args.clip_benchmark) > 1 and "{name}" not in args.dataset_root:
        raise ValueError("--dataset-root: with several --clip-benchmark datasets, put {name} in it")
    short = name[len(PREFIX) :]
    root = args.dataset_root.replace("{name}", short)
    if not Path(root).is_dir():
        raise FileNotFoundError(
            f"--dataset-root: {root} is not a folder (expected {name}'s {args.split}/ inside)"
        )
    task = describe_clip_benchmark(name, root, args.split).task  # checks the layout before any model loads
    entry = dict(name=short.replace("/", "_"), task=task, path=root, clip_benchmark=name, split=args.split)
    if args.templates:
        entry["templates"] = args.templates
    return entry


def _suite_from_args(args: argparse.Namespace) -> Suite:
    """The suite of --suite (a file or a shipped name, under --dataset-root when given) or of
    the dataset flags; with a data root or --skip-missing, its datasets checked for presence."""
    if not args.suite:
        if args.skip_missing:
            raise ValueError("--skip-missing: applies to --suite (datasets given by flags must all be there)")
        return load_suite(_flag_suite(args))
    shipped = is_suite_name(args.suite) and args.suite in SHIPPED_SUITES
    if args.dataset_root and "{name}" in args.dataset_root:
        raise ValueError(
            "--dataset-root: {name} is for several --clip-benchmark datasets; with --suite give the "
            "one folder holding the suite's datasets"
        )
    if shipped and not args.dataset_root:
        raise ValueError(
            f"--suite {args.suite}: give --dataset-root DIR, the folder holding its datasets "
            f"(see {DATASETS_DOC})"
        )
    suite = load_suite(args.suite, data_root=args.dataset_root)
    if args.dataset_root or args.skip_missing:
        suite = _present_datasets(suite, args.skip_missing, f" (see {DATASETS_DOC})" if shipped else "")
        check_layouts(suite)
    return suite


def _present_datasets(suite: Suite, skip_missing: bool, hint: str) -> Suite:
    """The suite when every dataset is there. Otherwise each missing one is named on a line of
    its own: as a warning, the rest running, with `skip_missing` (unless none is there); else
    as an error (exit status 2)."""
    missing = missing_datasets(suite)
    if not missing:
        return suite
    lines = [f"dataset {name}: expected {path}{hint}" for name, path in missing.items()]
    if skip_missing and len(missing) < len(suite.datasets):
        for line in lines:
            print(f"warning: {printable(line)}; skipped", file=sys.stderr)
        return skip_datasets(suite, missing)
    for line in lines[:-1]:  # the last one is the error main() reports
        print(f"dalip eval: error: {printable(line)}", file=sys.stderr)
    advice = "none of the suite's datasets is there" if skip_missing else "--skip-missing runs the rest"
    raise FileNotFoundError(f"{lines[-1]}; {advice}")


def run_eval(args: argparse.Namespace) -> int:
    flagged = args.zeroshot or args.retrieval or args.linear_probe or args.fewshot or args.clip_benchmark
    if bool(args.suite) == bool(flagged):
        raise ValueError(
            "give either --suite FILE or dataset flags (--zeroshot, --retrieval, --linear-probe, "
            "--fewshot, --clip-benchmark)"
        )
    if args.taxonomy and not args.zeroshot:
        raise ValueError("--taxonomy: scores --zeroshot datasets by rank (in a suite: taxonomy: per dataset)")
    models = dict(parse_model_arg(spec) for spec in args.model)
    if len(models) != len(args.model):
        raise ValueError(f"--model: display names must be unique, got {args.model}")
    suite = _suite_from_args(args)  # a broken suite or model path fails before --out is touched
    for spec in models.values():
        check_spec(spec)
    runtime = runtime_from_flags(args, suite)
    with OutputFolder(args.out, "eval", force=args.force):
        results = run_suite(models, suite, args.out, runtime, modes=[args.mode] if args.mode else None)
        write_suite_report(results, Path(args.out))
    print(markdown_table(results), end="")
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0
