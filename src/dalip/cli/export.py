"""`dalip export`: a dalip checkpoint -> a plain open_clip checkpoint (first-order model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dalip.checkpoint import export_open_clip, load_checkpoint


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="dalip checkpoint -> plain open_clip checkpoint (first-order model)",
        description="The written file loads with open_clip.create_model_and_transforms(NAME, "
                    "pretrained=OUT) and gives the same first-order features.",
    )
    parser.add_argument("checkpoint", help="dalip checkpoint (.safetensors or training step_*.pt)")
    parser.add_argument("out", help="output file (.safetensors, or .pt for a torch file)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    if Path(args.out).exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; use --force to overwrite")
    model = load_checkpoint(args.checkpoint)
    export_open_clip(model, args.out)
    print(f"wrote {args.out}; load with open_clip.create_model_and_transforms({model.model_name!r}, "
          f"pretrained={args.out!r}) or evaluate as openclip:{model.model_name}:{args.out}")
    return 0
