"""`dalip export`: a dalip checkpoint -> a plain open_clip checkpoint (first-order model)."""

from __future__ import annotations

import argparse

from dalip.checkpoint import export_open_clip, load_checkpoint
from dalip.cli.common import add_force_flag
from dalip.outputs import check_output_file


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="dalip checkpoint -> plain open_clip checkpoint (first-order model)",
        description="The written file loads with open_clip.create_model_and_transforms(NAME, "
                    "pretrained=OUT) and gives the same first-order features.",
    )
    parser.add_argument("checkpoint", help="dalip checkpoint (.safetensors or training step_*.pt)")
    parser.add_argument("out", help="output file (.safetensors, or .pt for a torch file)")
    add_force_flag(parser, "an existing OUT file")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    check_output_file(args.out, args.force, what="OUT")
    model = load_checkpoint(args.checkpoint)
    export_open_clip(model, args.out)
    print(f"wrote {args.out}; load with open_clip.create_model_and_transforms({model.model_name!r}, "
          f"pretrained={args.out!r}) or evaluate as openclip:{model.model_name}:{args.out}")
    return 0
