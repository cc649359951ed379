"""`dalip embed`: image or text features to an .npz file."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dalip.atomic import atomic_write
from dalip.cli.common import MODEL_HELP, add_runtime_flags, runtime_from_flags
from dalip.evaluation.runtime import embed
from dalip.evaluation.specs import load_model


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
    add_runtime_flags(parser)
    parser.set_defaults(handler=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    texts = args.texts
    if args.texts_file:
        if not Path(args.texts_file).is_file():
            raise FileNotFoundError(f"texts file not found: {args.texts_file}")
        texts = [line for line in Path(args.texts_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    loaded = load_model(args.model)
    features, items = embed(loaded.model, loaded.tokenizer, loaded.preprocess, images=args.images or (),
                            texts=texts or (), runtime=runtime_from_flags(args))
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
