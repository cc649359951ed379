"""`dalip predict --taxonomy`: answers as taxa (rank, checklist, back-off, one plant from
several photos), printed as text, JSON or CSV (`dalip.inference.taxon_predict`)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

from dalip.cli.common import report_unreadable, runtime_from_flags
from dalip.data.taxonomy import RANKS, TEXT_TYPES, read_taxonomy
from dalip.inference.images import list_image_files
from dalip.inference.specs import load_model
from dalip.inference.taxon_predict import predict_taxa, ranked_checklist
from dalip.report.text import printable

FLAGS = {
    "rank": "species",
    "subset": None,
    "min_probability": None,
    "same_plant": False,
    "text_type": "taxonomic",
}


def add_taxonomy_flags(parser: argparse.ArgumentParser, same_plant: bool = True) -> None:
    """--rank, --subset, --min-probability, --text-type (and --same-plant), as pybioclip names them."""
    group = parser.add_argument_group("with --taxonomy")
    group.add_argument(
        "--rank", default="species", choices=RANKS, help="answer at this rank (default species)"
    )
    group.add_argument(
        "--subset", metavar="FILE|RANK=NAME", help="a checklist file of taxa, or e.g. family=Rosaceae"
    )
    group.add_argument(
        "--min-probability",
        type=float,
        metavar="P",
        help="back off to the finest rank whose best taxon reaches P; 'no answer' if none does",
    )
    if same_plant:
        group.add_argument("--same-plant", action="store_true", help="all images show one plant: one answer")
    group.add_argument(
        "--text-type", default="taxonomic", choices=TEXT_TYPES, help="the species' text (default taxonomic)"
    )


def check_no_taxonomy_flags(args: argparse.Namespace) -> None:
    given = [name for name, default in FLAGS.items() if getattr(args, name, default) != default]
    if given:
        raise ValueError(f"--{given[0].replace('_', '-')}: needs --taxonomy (the classes' ranks)")


def images_and_model(args: argparse.Namespace) -> tuple[list[str], Any, str]:
    """The image files, the loaded model and its mode: `--mode`, else the one the model answers
    with (stored with it, or dalip's default; first order for a plain open_clip model)."""
    paths = list_image_files(args.images)
    loaded = load_model(args.model)
    if not loaded.has_second_order:
        return paths, loaded, "first"
    return paths, loaded, args.mode or loaded.model.default_mode


def run_taxon_predict(args: argparse.Namespace, output: str) -> int:
    taxonomy = read_taxonomy(args.taxonomy)
    ranked_checklist(taxonomy, args.subset, args.rank)  # a rank no class names fails before the model loads
    paths, loaded, mode = images_and_model(args)
    answers = predict_taxa(
        loaded.model,
        paths,
        taxonomy,
        loaded.tokenizer,
        loaded.preprocess,
        templates=args.templates,
        mode=mode,
        top_k=args.top_k,
        rank=args.rank,
        subset=args.subset,
        min_probability=args.min_probability,
        same_plant=args.same_plant,
        text_type=args.text_type,
        runtime=runtime_from_flags(args),
    )
    unreadable = report_unreadable(paths, [image for item in answers for image in item["images"]])
    if output == "json":
        print(
            json.dumps(
                {"model": loaded.spec, "mode": mode, "results": answers, "unreadable": unreadable}, indent=2
            )
        )
    elif output == "csv":
        _write_csv(answers)
    else:
        for item in answers:
            print(printable(", ".join(item["images"])))
            print(f"  answer: {_line(item['answer'])}")
            for prediction in item["predictions"]:
                print(f"  {prediction['probability']:7.2%}  {printable(_path(prediction))}")
    return 0


def _path(taxon: dict) -> str:
    names = " > ".join(taxon["lineage"].values())
    return f"{names} ({taxon['common_name']})" if taxon["common_name"] else names


def _line(taxon: dict | None) -> str:
    if taxon is None:
        return "no answer (no rank reaches --min-probability)"
    return (
        f"{taxon['rank']} {printable(taxon['taxon'])} ({taxon['probability']:.0%}): {printable(_path(taxon))}"
    )


def _write_csv(answers: list[dict]) -> None:
    """One row per image (or plant) and prediction, pybioclip's columns plus the answer."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(
        ["images", "answer_rank", "answer", "rank", "taxon", "probability", *RANKS, "common_name"]
    )
    for item in answers:
        chosen = item["answer"]
        head = ["|".join(item["images"]), chosen["rank"] if chosen else "", chosen["taxon"] if chosen else ""]
        for prediction in item["predictions"]:
            ranks = [prediction["lineage"].get(rank, "") for rank in RANKS]
            probability = f"{prediction['probability']:.6f}"
            writer.writerow(
                [
                    *head,
                    prediction["rank"],
                    prediction["taxon"],
                    probability,
                    *ranks,
                    prediction["common_name"],
                ]
            )
