"""`dalip serve`: a thin layer over `dalip.serve` (needs the `serve` extra)."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
from typing import Any

from dalip.cli.common import MODEL_HELP as SPEC_HELP
from dalip.cli.predict_taxa import add_taxonomy_flags, check_no_taxonomy_flags
from dalip.data.taxonomy import TAXONOMY_FILE, read_taxonomy
from dalip.inference.labels import read_label_file
from dalip.inference.specs import check_spec, load_model, parse_model_arg
from dalip.serve import Gallery, Identifier, ServeOptions
from dalip.serve.gallery import CACHE_FOLDER
from dalip.serve.taxa import ServedTaxonomy
from dalip.serve.uploads import MEGABYTE

MODEL_HELP = SPEC_HELP + " (repeat -m to compare models side by side)"
SERVE_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}

logger = logging.getLogger("dalip.serve")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="a local web page and JSON API: identify a photo, compare models, similar gallery images",
        description="Start a web page where a photo can be dropped to see each model's most likely labels "
        "(DALIP models in fused and first-order mode) and the most similar gallery images; "
        "the same answers as JSON at /api/predict and /api/neighbours. Needs the serve extra: "
        "pip install 'dalip[serve]'.",
    )
    parser.add_argument(
        "--model", "-m", action="append", required=True, metavar="[NAME=]SPEC", help=MODEL_HELP
    )
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument(
        "--labels", metavar="FILE", help="default labels, one per line (default: the gallery's classes)"
    )
    labels.add_argument(
        "--classes", metavar="FOLDER", help="default labels: the classes of an image folder (root/<class>/)"
    )
    labels.add_argument(
        "--taxonomy",
        metavar="FILE|auto",
        help="a taxonomy.csv (auto: the gallery's): the labels are its species, answers are taxa too",
    )
    parser.add_argument(
        "--gallery", metavar="FOLDER", help="image folder (root/<class>/*.jpg) searched for similar images"
    )
    parser.add_argument(
        "--index-cache",
        metavar="FOLDER",
        help="where gallery indexes are cached (default: GALLERY/.dalip-index)",
    )
    parser.add_argument(
        "--templates",
        default="none",
        metavar="NAME|FILE",
        help="none (labels as given; default), generic, plant, openai, simple or a file",
    )
    _add_limit_flags(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)",
    )
    parser.add_argument(
        "--port", type=int, metavar="PORT", default=8000, help="port (default 8000; 0: any free port)"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    parser.add_argument(
        "--batch-size", type=int, metavar="N", default=64, help="images per batch while indexing the gallery"
    )
    add_taxonomy_flags(parser, same_plant=False)
    parser.set_defaults(handler=run_serve)


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--top-k", type=int, metavar="K", default=5, help="labels shown per model (default 5)"
    )
    parser.add_argument(
        "--neighbours", type=int, metavar="N", default=8, help="similar images shown per model (default 8)"
    )
    parser.add_argument(
        "--max-upload-mb", type=float, metavar="MB", default=20.0, help="largest photo accepted (default 20)"
    )
    parser.add_argument(
        "--max-photos",
        type=int,
        metavar="N",
        default=8,
        help="photos of one plant answered together in one request (default 8)",
    )
    parser.add_argument(
        "--max-labels",
        type=int,
        metavar="N",
        default=1000,
        help="longest label list accepted from a page (default 1000)",
    )


def _check_extra() -> None:
    missing = [
        package for module, package in SERVE_MODULES.items() if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ValueError(f"dalip serve needs {', '.join(missing)}: pip install 'dalip[serve]'")


def _default_labels(args: argparse.Namespace, gallery: Any) -> list[str] | None:
    if args.labels:
        return read_label_file(args.labels)
    if args.classes:
        return Gallery.scan(args.classes, "--classes").classes
    return list(gallery.classes) if gallery is not None else None


def _taxonomy(args: argparse.Namespace) -> ServedTaxonomy | None:
    """The served taxonomy with the flags' defaults, or None (then no taxonomy flag may be given)."""
    if not args.taxonomy:
        check_no_taxonomy_flags(args)
        return None
    path = args.taxonomy
    if path == "auto":
        if not args.gallery:
            raise ValueError("--taxonomy auto: reads GALLERY/taxonomy.csv; give --gallery or a file")
        path = os.path.join(args.gallery, TAXONOMY_FILE)
    return ServedTaxonomy(read_taxonomy(path), args.rank, args.min_probability, args.subset, args.text_type)


def run_serve(args: argparse.Namespace) -> int:
    _check_extra()
    from dalip.serve.app import bind, create_app, run, url_of  # optional: fastapi, uvicorn

    options = ServeOptions(
        top_k=args.top_k,
        neighbours=args.neighbours,
        max_photos=args.max_photos,
        templates=args.templates,
        max_upload_bytes=int(args.max_upload_mb * MEGABYTE),
        max_labels=args.max_labels,
        device=args.device,
        batch_size=args.batch_size,
    )
    options.validate()
    specs = [parse_model_arg(argument) for argument in args.model]
    if len({name for name, _ in specs}) != len(specs):
        raise ValueError(f"--model: display names must be unique, got {args.model}")
    for _, spec in specs:
        check_spec(spec)
    gallery = Gallery.scan(args.gallery) if args.gallery else None
    taxonomy = _taxonomy(args)
    labels = _default_labels(args, gallery) if taxonomy is None else None
    cache = args.index_cache or (gallery.root / CACHE_FOLDER if gallery is not None else None)
    sock = bind(args.host, args.port)
    models = []
    for name, spec in specs:
        logger.info("loading %s: %s", name, spec)
        models.append(load_model(spec, name))
    identifier = Identifier(models, labels, gallery, options, cache, taxonomy)
    url = url_of(sock)
    if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
        logger.warning("listening on %s: anyone who can reach this machine can use the page", args.host)
    print(f"dalip serve: open {url} in a browser (Ctrl-C stops); JSON API at {url}/api/predict", flush=True)
    run(create_app(identifier), sock)
    return 0
