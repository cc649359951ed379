"""`dalip predict`: top-k zero-shot labels for images."""

from __future__ import annotations

import argparse
import json

from dalip.cli.common import (
    ANSWER_HELP,
    MODEL_HELP,
    MODES,
    add_runtime_flags,
    count,
    report_unreadable,
    runtime_from_flags,
)
from dalip.cli.predict_taxa import (
    add_taxonomy_flags,
    check_no_taxonomy_flags,
    images_and_model,
    run_taxon_predict,
)
from dalip.inference.labels import check_labels, read_label_file
from dalip.inference.predict import predict
from dalip.report.text import printable


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="top-k labels for images (zero-shot)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files and/or folders")
    parser.add_argument("--model", "-m", required=True, metavar="SPEC", help=MODEL_HELP)
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help="comma-separated labels, e.g. 'rose,oak,maple'")
    labels.add_argument("--labels-file", help="one label per line")
    labels.add_argument("--taxonomy", help="a taxonomy.csv: answer with taxa (the options below)")
    parser.add_argument(
        "--templates", default="none", help="none (labels as given), generic, plant, openai, simple or a file"
    )
    parser.add_argument(
        "--mode", default=None, choices=MODES[:3], help=f"similarity mode (default: {ANSWER_HELP})"
    )
    parser.add_argument("--top-k", "--k", type=count(1), default=5, help="labels shown per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text (--format json)")
    parser.add_argument("--format", choices=["text", "json", "csv"], help="output format (default text)")
    add_taxonomy_flags(parser)
    add_runtime_flags(parser)
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    output = "json" if args.json and args.format in (None, "json") else args.format or "text"
    if args.json and args.format not in (None, "json"):
        raise ValueError(f"--json and --format {args.format}: choose one output format")
    if args.taxonomy:
        return run_taxon_predict(args, output)
    check_no_taxonomy_flags(args)
    if output == "csv":
        raise ValueError("--format csv: the answers with their taxonomy need --taxonomy")
    labels = (
        read_label_file(args.labels_file)
        if args.labels_file
        else check_labels(args.labels.split(","), "--labels")
    )
    paths, loaded, mode = images_and_model(args)
    predictions = predict(
        loaded.model,
        paths,
        labels,
        loaded.tokenizer,
        loaded.preprocess,
        templates=args.templates,
        mode=mode,
        top_k=args.top_k,
        runtime=runtime_from_flags(args),
    )
    unreadable = report_unreadable(paths, [item["image"] for item in predictions])
    if output == "json":
        print(
            json.dumps(
                {"model": loaded.spec, "mode": mode, "results": predictions, "unreadable": unreadable},
                indent=2,
            )
        )
        return 0
    for item in predictions:  # file names and labels are the user's: shown printable, kept in --json
        print(printable(item["image"]))
        for prediction in item["predictions"]:
            print(f"  {prediction['probability']:7.2%}  {printable(prediction['label'])}")
    return 0
