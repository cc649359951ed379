"""`dalip export`: a dalip checkpoint -> an open_clip checkpoint or folder, the fused model as
an open_clip folder, or ONNX encoders."""

from __future__ import annotations

import argparse

from dalip.checkpoint import load_checkpoint
from dalip.export.files import check_output_folder
from dalip.export.folder import export_folder
from dalip.export.onnx import export_onnx
from dalip.export.open_clip_file import export_open_clip
from dalip.outputs import check_output_file

EXPORT_FORMATS = ("open_clip", "open_clip-dir", "fused-dir", "onnx")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="dalip checkpoint -> open_clip checkpoint or folder, fused folder, or ONNX",
        description="open_clip: one weights file of the first-order model, loaded with "
        "open_clip.create_model_and_transforms(NAME, pretrained=OUT); it gives the same "
        "first-order features. open_clip-dir: a folder (weights + open_clip_config.json) loaded "
        "with create_model_and_transforms('local-dir:OUT'). fused-dir: the same folder plus the "
        "MBDC heads, loaded whole as the dalip model spec local-dir:OUT. onnx: image and text "
        "encoders with outputs first, second and fused.",
    )
    parser.add_argument("checkpoint", help="dalip checkpoint (.safetensors or training step_*.pt)")
    parser.add_argument("out", help="output file (open_clip: .safetensors or .pt) or folder (other formats)")
    parser.add_argument("--format", default="open_clip", choices=EXPORT_FORMATS, help="default: open_clip")
    parser.add_argument(
        "--force", action="store_true", help="overwrite OUT (folders: the files this export writes)"
    )
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    if args.format == "open_clip":
        check_output_file(args.out, args.force, what="OUT")
        model = load_checkpoint(args.checkpoint)
        export_open_clip(model, args.out)
        print(
            f"wrote {args.out}; load with open_clip.create_model_and_transforms({model.model_name!r}, "
            f"pretrained={args.out!r}) or evaluate as openclip:{model.model_name}:{args.out}"
        )
        return 0
    check_output_folder(args.out, [], args.force)  # a file in the way fails before loading
    model = load_checkpoint(args.checkpoint)
    if args.format == "onnx":
        written = export_onnx(model, args.out, force=args.force)
        hint = "run with onnxruntime; dalip_onnx.json gives inputs, preprocessing and alpha"
    else:
        written = export_folder(model, args.out, fused=args.format == "fused-dir", force=args.force)
        hint = (
            f"evaluate as local-dir:{args.out}"
            if args.format == "fused-dir"
            else f"load with open_clip.create_model_and_transforms('local-dir:{args.out}')"
        )
    print(f"wrote {', '.join(path.name for path in written)} in {args.out}; {hint}")
    return 0
