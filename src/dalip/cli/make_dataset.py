"""`dalip make-dataset`: write the embedded synthetic plant + general dataset."""

from __future__ import annotations

import argparse
import time
import typing

from dalip.data.synthetic import GeneratorOptions, make_dataset
from dalip.data.synthetic.generator import ImageFormat

_DEFAULTS = GeneratorOptions()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


# (flag, metavar, type, help) of the numeric options; defaults come from GeneratorOptions
_COUNT_OPTIONS = (
    ("--species", "N", _positive, "plant species"),
    ("--image-size", "PX", _positive, "image side in pixels"),
    ("--train-per-class", "N", _positive, "training images per class"),
    ("--val-per-class", "N", _positive, "validation images per class"),
    ("--test-per-class", "N", _positive, "test images per class"),
    ("--general-classes", "N", int, "general-domain classes, 0 for none"),
    ("--samples-per-shard", "N", _positive, "samples per tar shard"),
)


def add_make_dataset_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `make-dataset` to the `dalip` command; its handler is `run_make_dataset`."""
    parser = subparsers.add_parser(
        "make-dataset",
        help="write the embedded synthetic plant + general dataset",
        description=(
            "Write a procedural, seeded dataset of fine-grained synthetic plant species "
            "(leaf shape, margin, venation, colour, spots) and general pictures as image "
            "folders, CSV files and WebDataset shards, with a manifest.json."
        ),
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (new or empty, or an earlier make-dataset's with --force)",
    )
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="random seed (default %(default)s)")
    for flag, metavar, kind, text in _COUNT_OPTIONS:
        default = getattr(_DEFAULTS, flag[2:].replace("-", "_"))
        parser.add_argument(
            flag, type=kind, default=default, metavar=metavar, help=f"{text} (default %(default)s)"
        )
    parser.add_argument(
        "--image-format",
        choices=typing.get_args(ImageFormat),
        default=_DEFAULTS.image_format,
        help="image encoding (default %(default)s)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the dataset an earlier make-dataset wrote in --out (only the files it wrote)",
    )
    parser.set_defaults(handler=run_make_dataset)
    return parser


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add this module's subcommands (`make-dataset`) to the `dalip` command."""
    add_make_dataset_parser(subparsers)


def run_make_dataset(args: argparse.Namespace) -> int:
    """Handler of `dalip make-dataset`: write the dataset and print a summary."""
    start = time.perf_counter()
    manifest = make_dataset(
        args.out,
        seed=args.seed,
        species=args.species,
        image_size=args.image_size,
        force=args.force,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        test_per_class=args.test_per_class,
        general_classes=args.general_classes,
        samples_per_shard=args.samples_per_shard,
        image_format=args.image_format,
    )
    seconds = time.perf_counter() - start
    total = sum(manifest["counts"].values())
    print(
        f"wrote {total} images to {args.out} in {seconds:.1f} s ({total / max(seconds, 1e-9):.0f} images/s)"
    )
    for name, count in manifest["counts"].items():
        print(f"  {name:<14} {count:>6} images  {manifest['splits'][name]['shards']}")
    return 0
