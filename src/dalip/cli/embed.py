"""`dalip embed`: image or text features to an .npz file."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dalip.atomic import atomic_write
from dalip.cli.common import MODEL_HELP, add_force_flag, add_runtime_flags, report_unreadable, runtime_from_flags
from dalip.data.files import read_text_lines
from dalip.evaluation.datasets import list_image_files
from dalip.evaluation.runtime import embed
from dalip.evaluation.specs import load_model
from dalip.outputs import check_output_file


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed", help="image or text features to an .npz (first, second, items)",
        description="Writes an .npz with arrays 'first' (N, D), 'second' (N, D2; absent for plain "
                    "open_clip models), 'items' (image paths or texts, one per row) and 'kind'.",
    )
    parser.add_argument("--model", "-m", required=True, metavar="SPEC", help=MODEL_HELP)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", help="image files and/or folders")
    source.add_argument("--texts", nargs="+", help="texts to embed")
    source.add_argument("--texts-file", help="one text per line")
    parser.add_argument("--out", required=True, help="output .npz file")
    add_force_flag(parser, "an existing --out file")
    add_runtime_flags(parser)
    parser.set_defaults(handler=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    check_output_file(args.out, args.force)
    texts = args.texts
    if args.texts_file:
        if not Path(args.texts_file).is_file():
            raise FileNotFoundError(f"texts file not found: {args.texts_file}")
        texts = [line for line in read_text_lines(args.texts_file, "texts file") if line.strip()]
    images = list_image_files(args.images) if args.images else ()
    loaded = load_model(args.model)
    features, items = embed(loaded.model, loaded.tokenizer, loaded.preprocess, images=images,
                            texts=texts or (), runtime=runtime_from_flags(args))
    if images:
        report_unreadable(list(images), items)
    arrays = {"first": features.first.numpy(), "items": np.array(items), "kind": np.array("text" if texts else "image")}
    if features.second is not None:
        arrays["second"] = features.second.numpy()

    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(args.out, write)
    shapes = ", ".join(f"{k} {arrays[k].shape}" for k in ("first", "second") if k in arrays)
    print(f"wrote {args.out}: {len(items)} {arrays['kind']}s; {shapes}")
    return 0
