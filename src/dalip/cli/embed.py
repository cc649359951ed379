"""`dalip embed`: image, text or zero-shot class features (and their fused vectors) to an .npz file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from dalip.atomic import atomic_write
from dalip.cli.common import (
    MODEL_HELP,
    add_force_flag,
    add_runtime_flags,
    report_unreadable,
    runtime_from_flags,
)
from dalip.data.files import read_text_lines
from dalip.inference.classes import embed_classes
from dalip.inference.images import list_image_files
from dalip.inference.labels import check_labels, read_label_file
from dalip.inference.runtime import embed
from dalip.inference.specs import load_model
from dalip.inference.templates import load_templates
from dalip.outputs import check_output_file


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="image, text or class features to an .npz (first, second, fused, items)",
        description="Writes an .npz with arrays 'first' (N, D), 'second' (N, D2; absent for plain "
        "open_clip models), 'items' (image paths, texts or labels, one per row), 'kind' and "
        "'answer_mode' (the similarity the model answers with: which array to search); "
        "--fused adds 'fused' (N, D + D2), whose dot products are the fused similarity, "
        "and 'alpha'.",
    )
    parser.add_argument("--model", "-m", required=True, metavar="SPEC", help=MODEL_HELP)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", help="image files and/or folders")
    source.add_argument("--texts", nargs="+", help="texts to embed")
    source.add_argument("--texts-file", help="one text per line")
    source.add_argument("--labels", help="comma-separated class names: zero-shot class vectors")
    source.add_argument("--labels-file", help="class names, one per line: zero-shot class vectors")
    parser.add_argument(
        "--templates",
        default=None,
        help="with --labels: template set (none (default), generic, plant, openai, simple) or file",
    )
    parser.add_argument(
        "--fused",
        action="store_true",
        help="also write 'fused' = [sqrt(alpha) first, sqrt(1 - alpha) second] and 'alpha'",
    )
    parser.add_argument("--out", required=True, help="output .npz file")
    add_force_flag(parser, "an existing --out file")
    add_runtime_flags(parser)
    parser.set_defaults(handler=run_embed)


def _read_texts(args: argparse.Namespace) -> list[str] | None:
    if not args.texts_file:
        return args.texts
    if not Path(args.texts_file).is_file():
        raise FileNotFoundError(f"texts file not found: {args.texts_file}")
    return [line for line in read_text_lines(args.texts_file, "texts file") if line.strip()]


def embed_arrays(args: argparse.Namespace) -> dict[str, Any]:
    """The arrays `dalip embed` writes, from its parsed flags (unreadable images named on stderr)."""
    texts = _read_texts(args)
    labels = args.labels or args.labels_file
    if args.templates and not labels:
        raise ValueError("--templates applies to class vectors only (--labels or --labels-file)")
    templates = args.templates or "none"
    images = list_image_files(args.images) if args.images else ()
    loaded = load_model(args.model)
    if args.fused and not loaded.has_second_order:
        raise ValueError(f"--fused: {args.model} is a plain open_clip model with first-order features only")
    runtime = runtime_from_flags(args)
    if labels:
        items = (
            read_label_file(args.labels_file)
            if args.labels_file
            else check_labels(args.labels.split(","), "--labels")
        )
        features = embed_classes(loaded.model, loaded.tokenizer, items, templates, runtime)
        kind = "class"
    else:
        features, items = embed(
            loaded.model,
            loaded.tokenizer,
            loaded.preprocess,
            images=images,
            texts=texts or (),
            runtime=runtime,
        )
        kind = "text" if texts else "image"
        if images:
            report_unreadable(list(images), items)
    arrays = {"first": features.first.numpy(), "items": np.array(items), "kind": np.array(kind)}
    # which of the arrays gives the model's own answers (its stored mode, else first)
    arrays["answer_mode"] = np.array(loaded.model.default_mode)
    if features.second is not None:
        arrays["second"] = features.second.numpy()
    if args.fused:
        arrays["fused"] = loaded.model.fused_embedding(features).numpy()
        arrays["alpha"] = np.array(loaded.model.alpha, dtype=np.float32)
    if kind == "class":
        arrays["templates"] = np.array(load_templates(templates))
    return arrays


def run_embed(args: argparse.Namespace) -> int:
    check_output_file(args.out, args.force)
    arrays = embed_arrays(args)

    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(args.out, write)
    shapes = ", ".join(f"{k} {arrays[k].shape}" for k in ("first", "second", "fused") if k in arrays)
    print(f"wrote {args.out}: {len(arrays['items'])} {arrays['kind']}s; {shapes}")
    return 0
