"""`dalip eval`, `predict`, `embed`, `export` and `interpolate`: thin layers over
`dalip.evaluate`, `dalip.probe`, `dalip.suite` and `dalip.wiseft`.

Models are given as `[NAME=]SPEC`: a dalip checkpoint path, or `openclip:ARCH:WEIGHTS`
(a plain open_clip model from a file or a pretrained tag).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

MODES = ("fused", "first", "second", "all")
MODEL_HELP = "dalip checkpoint, or openclip:ARCH:WEIGHTS (file or tag); prefix NAME= to name it"


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    for add in (_add_eval, _add_predict, _add_embed, _add_export, _add_interpolate):
        add(subparsers)


def _count(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= minimum (argparse reports anything else, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _add_force(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--force", action="store_true",
                        help=f"replace {what} (a folder: only the files an earlier run of this command wrote)")


def _add_runtime(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--batch-size", type=_count(1), default=None, help="images per batch (default 64, or the suite's)")
    group.add_argument("--workers", type=_count(0), default=None, help="DataLoader worker processes (default 0)")
    group.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    group.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16 autocast (GPU)")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _runtime(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        batch_size=64 if args.batch_size is None else args.batch_size,
        workers=0 if args.workers is None else args.workers, device=args.device,
        precision=args.precision, progress=_progress(args),
    )


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate and compare models on a suite or on single datasets",
        description="Zero-shot classification, retrieval, linear probe and few-shot; writes "
                    "results.json, results.md and results.png to --out and prints the table.",
    )
    parser.add_argument("--model", "-m", action="append", required=True, metavar="[NAME=]SPEC", help=MODEL_HELP)
    parser.add_argument("--suite", help="suite YAML (datasets, tasks, domains; see README)")
    parser.add_argument("--zeroshot", action="append", default=[], metavar="PATH",
                        help="image folder or labelled CSV for zero-shot classification (repeatable)")
    parser.add_argument("--retrieval", action="append", default=[], metavar="CSV", help="caption CSV (repeatable)")
    parser.add_argument("--linear-probe", action="append", default=[], nargs=2, metavar=("TRAIN", "TEST"))
    parser.add_argument("--fewshot", action="append", default=[], nargs=2, metavar=("TRAIN", "TEST"))
    parser.add_argument("--templates", default="generic", help="generic, plant, none or a file (one per line, with {})")
    parser.add_argument("--domain", default="general", help="domain tag of the datasets given by flags")
    parser.add_argument("--features", default="first", choices=("first", "second", "concat"),
                        help="image features for probes (default first)")
    parser.add_argument("--seed", type=int, default=0, help="probe hold-out and few-shot draws")
    parser.add_argument("--mode", default=None, choices=MODES, help="similarity mode (default: fused, or the suite's)")
    parser.add_argument("--out", required=True, help="output folder (new or empty, or an earlier eval's with --force)")
    _add_force(parser, "an earlier eval's results in --out")
    _add_runtime(parser)
    parser.set_defaults(handler=run_eval)


def _flag_suite(args: argparse.Namespace) -> dict[str, Any]:
    datasets = [dict(name=Path(p).stem if Path(p).is_file() else Path(p).name, task="zeroshot", path=p)
                for p in args.zeroshot]
    datasets += [dict(name=Path(p).stem, task="retrieval", path=p) for p in args.retrieval]
    datasets += [dict(name=f"{Path(test).name}-probe", task="linear_probe", train=train, test=test,
                      features=args.features) for train, test in args.linear_probe]
    datasets += [dict(name=f"{Path(test).name}-fewshot", task="fewshot", train=train, test=test,
                      features=args.features) for train, test in args.fewshot]
    for entry in datasets:
        entry["domain"] = args.domain
    return {"datasets": datasets, "templates": args.templates, "seed": args.seed}


def run_eval(args: argparse.Namespace) -> int:
    from dalip.model_specs import check_spec, parse_model_arg
    from dalip.outputs import OutputFolder
    from dalip.report import markdown_table
    from dalip.suite import load_suite, run_suite

    flagged = args.zeroshot or args.retrieval or args.linear_probe or args.fewshot
    if bool(args.suite) == bool(flagged):
        raise ValueError("give either --suite FILE or dataset flags (--zeroshot, --retrieval, --linear-probe, --fewshot)")
    models = dict(parse_model_arg(spec) for spec in args.model)
    if len(models) != len(args.model):
        raise ValueError(f"--model: display names must be unique, got {args.model}")
    suite = load_suite(args.suite or _flag_suite(args))  # a broken suite or model path fails before --out is touched
    for spec in models.values():
        check_spec(spec)
    with OutputFolder(args.out, "eval", force=args.force):
        results = run_suite(
            models, suite, args.out, device=args.device, precision=args.precision,
            batch_size=args.batch_size, workers=args.workers, modes=[args.mode] if args.mode else None,
            progress=_progress(args),
        )
    print(markdown_table(results), end="")
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="top-k labels for images (zero-shot)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files and/or folders")
    parser.add_argument("--model", "-m", required=True, metavar="SPEC", help=MODEL_HELP)
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help="comma-separated labels, e.g. 'rose,oak,maple'")
    labels.add_argument("--labels-file", help="one label per line")
    parser.add_argument("--templates", default="none", help="none (labels as given), generic, plant or a file")
    parser.add_argument("--mode", default="fused", choices=MODES[:3], help="similarity mode (default fused)")
    parser.add_argument("--top-k", type=_count(1), default=5, help="labels shown per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_runtime(parser)
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from dalip.evaluate import check_labels, predict, read_label_file
    from dalip.evaluation_data import list_image_files
    from dalip.model_specs import load_model

    labels = read_label_file(args.labels_file) if args.labels_file else check_labels(args.labels.split(","), "--labels")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    paths = list_image_files(args.images)
    loaded = load_model(args.model)
    mode = args.mode if loaded.has_second_order else "first"
    predictions = predict(loaded.model, paths, labels, loaded.tokenizer, loaded.preprocess,
                          templates=args.templates, mode=mode, top_k=args.top_k, **_runtime(args))
    unreadable = _report_unreadable(paths, [item["image"] for item in predictions])
    if args.json:
        print(json.dumps({"model": loaded.spec, "mode": mode, "results": predictions, "unreadable": unreadable},
                         indent=2))
        return 0
    for item in predictions:
        print(item["image"])
        for prediction in item["predictions"]:
            print(f"  {prediction['probability']:7.2%}  {prediction['label']}")
    return 0


def _report_unreadable(paths: list[str], used: list[str]) -> list[str]:
    """The images that could not be read, also said on stderr (results leave them out)."""
    kept = set(used)
    unreadable = [path for path in paths if path not in kept]
    if unreadable:
        shown = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
        print(f"warning: {len(unreadable)} of {len(paths)} images could not be read and are left out: {shown}",
              file=sys.stderr)
    return unreadable


def _add_embed(subparsers: argparse._SubParsersAction) -> None:
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
    _add_force(parser, "an existing --out file")
    _add_runtime(parser)
    parser.set_defaults(handler=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from dalip.checkpoint import atomic_write
    from dalip.data.files import read_text_lines
    from dalip.evaluate import embed
    from dalip.evaluation_data import list_image_files
    from dalip.model_specs import load_model
    from dalip.outputs import check_output_file

    check_output_file(args.out, args.force)
    texts = args.texts
    if args.texts_file:
        if not Path(args.texts_file).is_file():
            raise FileNotFoundError(f"texts file not found: {args.texts_file}")
        texts = [line for line in read_text_lines(args.texts_file, "texts file") if line.strip()]
    images = list_image_files(args.images) if args.images else ()
    loaded = load_model(args.model)
    features, items = embed(loaded.model, loaded.tokenizer, loaded.preprocess, images=images,
                            texts=texts or (), **_runtime(args))
    if images:
        _report_unreadable(list(images), items)
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


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="dalip checkpoint -> plain open_clip checkpoint (first-order model)",
        description="The written file loads with open_clip.create_model_and_transforms(NAME, "
                    "pretrained=OUT) and gives the same first-order features.",
    )
    parser.add_argument("checkpoint", help="dalip checkpoint (.safetensors or training step_*.pt)")
    parser.add_argument("out", help="output file (.safetensors, or .pt for a torch file)")
    _add_force(parser, "an existing OUT file")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from dalip.checkpoint import export_open_clip
    from dalip.factory import load_checkpoint
    from dalip.outputs import check_output_file

    check_output_file(args.out, args.force, what="OUT")
    model = load_checkpoint(args.checkpoint)
    export_open_clip(model, args.out)
    print(f"wrote {args.out}; load with open_clip.create_model_and_transforms({model.model_name!r}, "
          f"pretrained={args.out!r}) or evaluate as openclip:{model.model_name}:{args.out}")
    return 0


def _add_interpolate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "interpolate", help="WiSE-FT: evaluate (1-w)*start + w*tuned for several w with a suite",
    )
    parser.add_argument("--start", required=True, metavar="SPEC", help="start model: " + MODEL_HELP)
    parser.add_argument("--tuned", required=True, metavar="SPEC", help="fine-tuned dalip checkpoint")
    parser.add_argument("--weights", default="0,0.25,0.5,0.75,1", help="comma list of w (default 0,0.25,0.5,0.75,1)")
    parser.add_argument("--suite", required=True, help="suite YAML")
    parser.add_argument("--mode", default=None, choices=MODES, help="similarity mode (default: the suite's)")
    parser.add_argument("--save-models", action="store_true", help="also save each interpolated model")
    parser.add_argument("--out", required=True, help="output folder (new or empty, or an earlier run's with --force)")
    _add_force(parser, "an earlier interpolate's results in --out")
    _add_runtime(parser)
    parser.set_defaults(handler=run_interpolate)


def parse_weights(text: str) -> list[float]:
    try:
        weights = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(f"--weights: expected comma-separated numbers such as 0,0.5,1, got {text!r}") from error
    if not weights or not all(math.isfinite(w) for w in weights):
        raise ValueError(f"--weights: expected finite numbers such as 0,0.5,1, got {text!r}")
    return weights


def run_interpolate(args: argparse.Namespace) -> int:
    from dalip.model_specs import check_spec
    from dalip.outputs import OutputFolder
    from dalip.report import interpolation_table
    from dalip.suite import load_suite
    from dalip.wiseft import interpolate

    weights, suite = parse_weights(args.weights), load_suite(args.suite)
    check_spec(args.start)
    check_spec(args.tuned)
    with OutputFolder(args.out, "interpolate", force=args.force):
        results = interpolate(
            args.start, args.tuned, weights, suite, args.out, device=args.device,
            precision=args.precision, batch_size=args.batch_size, workers=args.workers,
            modes=[args.mode] if args.mode else None, progress=_progress(args), save_models=args.save_models,
        )
    print(interpolation_table(results), end="")
    print(f"results: {Path(args.out) / 'results.json'}; plot: {Path(args.out) / 'interpolation.png'}")
    return 0
