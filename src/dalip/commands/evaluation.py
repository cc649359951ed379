"""`dalip eval`, `predict`, `embed`, `export` and `interpolate`: thin layers over
`dalip.evaluate`, `dalip.probe`, `dalip.suite` and `dalip.wiseft`.

Models are given as `[NAME=]SPEC`: a dalip checkpoint path, or `openclip:ARCH:WEIGHTS`
(a plain open_clip model from a file or a pretrained tag).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MODES = ("fused", "first", "second", "all")
MODEL_HELP = ("dalip checkpoint, local-dir:FOLDER or hf-hub:ORG/REPO (open_clip folders), or "
              "openclip:ARCH:WEIGHTS (file or tag); prefix NAME= to name it")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    for add in (_add_eval, _add_predict, _add_embed, _add_export, _add_interpolate):
        add(subparsers)


def _add_runtime(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--batch-size", type=int, default=None, help="images per batch (default 64, or the suite's)")
    group.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default 0)")
    group.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    group.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16 autocast (GPU)")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _runtime(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        batch_size=args.batch_size or 64, workers=args.workers or 0, device=args.device,
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
    parser.add_argument("--clip-benchmark", action="append", default=[], metavar="wds/NAME",
                        help="a CLIP_benchmark WebDataset dataset (zero-shot or retrieval; repeatable), "
                             "read from --dataset-root; results also in CLIP_benchmark's JSON format")
    parser.add_argument("--dataset-root", metavar="DIR",
                        help="folder of the --clip-benchmark dataset ({name} is replaced by NAME)")
    parser.add_argument("--split", default="test", help="CLIP_benchmark split (default test)")
    parser.add_argument("--templates", default=None,
                        help="generic (default), plant, none, openai (80), simple (7) or a file (one per line, "
                             "with {}); CLIP_benchmark datasets use their own unless this is given")
    parser.add_argument("--domain", default="unspecified",
                        help="domain tag of the datasets given by flags (default: unspecified)")
    parser.add_argument("--features", default="first", choices=("first", "second", "concat"),
                        help="image features for probes (default first)")
    parser.add_argument("--seed", type=int, default=0, help="probe hold-out and few-shot draws")
    parser.add_argument("--mode", default=None, choices=MODES, help="similarity mode (default: fused, or the suite's)")
    parser.add_argument("--out", required=True, help="output folder")
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
    datasets += [_clip_benchmark_entry(name, args) for name in args.clip_benchmark]
    for entry in datasets:
        entry["domain"] = args.domain
    return {"datasets": datasets, "templates": args.templates or "generic", "seed": args.seed}


def _clip_benchmark_entry(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from dalip.evaluation.clip_benchmark import PREFIX, describe_clip_benchmark

    if not name.startswith(PREFIX) or name == PREFIX:
        raise ValueError(f"--clip-benchmark {name!r}: expected wds/NAME (CLIP_benchmark's WebDataset datasets)")
    if not args.dataset_root:
        raise ValueError(f"--clip-benchmark {name}: give --dataset-root DIR (the folder holding {args.split}/)")
    if len(args.clip_benchmark) > 1 and "{name}" not in args.dataset_root:
        raise ValueError("--dataset-root: with several --clip-benchmark datasets, put {name} in it")
    short = name[len(PREFIX):]
    root = args.dataset_root.replace("{name}", short)
    if not Path(root).is_dir():
        raise FileNotFoundError(f"--dataset-root: {root} is not a folder (expected {name}'s {args.split}/ inside)")
    task = describe_clip_benchmark(name, root, args.split).task  # checks the layout before any model loads
    entry = dict(name=short.replace("/", "_"), task=task, path=root, clip_benchmark=name, split=args.split)
    if args.templates:
        entry["templates"] = args.templates
    return entry


def run_eval(args: argparse.Namespace) -> int:
    from dalip.model_specs import parse_model_arg
    from dalip.report import markdown_table
    from dalip.suite import run_suite

    flagged = args.zeroshot or args.retrieval or args.linear_probe or args.fewshot or args.clip_benchmark
    if bool(args.suite) == bool(flagged):
        raise ValueError("give either --suite FILE or dataset flags (--zeroshot, --retrieval, --linear-probe, "
                         "--fewshot, --clip-benchmark)")
    models = dict(parse_model_arg(spec) for spec in args.model)
    if len(models) != len(args.model):
        raise ValueError(f"--model: display names must be unique, got {args.model}")
    results = run_suite(
        models, args.suite or _flag_suite(args), args.out, device=args.device, precision=args.precision,
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
    parser.add_argument("--templates", default="none",
                        help="none (labels as given), generic, plant, openai, simple or a file")
    parser.add_argument("--mode", default="fused", choices=MODES[:3], help="similarity mode (default fused)")
    parser.add_argument("--top-k", type=int, default=5, help="labels shown per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_runtime(parser)
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from dalip.evaluate import check_labels, predict, read_label_file
    from dalip.model_specs import load_model

    labels = read_label_file(args.labels_file) if args.labels_file else check_labels(args.labels.split(","), "--labels")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    loaded = load_model(args.model)
    mode = args.mode if loaded.has_second_order else "first"
    predictions = predict(loaded.model, args.images, labels, loaded.tokenizer, loaded.preprocess,
                          templates=args.templates, mode=mode, top_k=args.top_k, **_runtime(args))
    if args.json:
        print(json.dumps({"model": loaded.spec, "mode": mode, "results": predictions}, indent=2))
        return 0
    for item in predictions:
        print(item["image"])
        for prediction in item["predictions"]:
            print(f"  {prediction['probability']:7.2%}  {prediction['label']}")
    return 0


def _add_embed(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed", help="image, text or class features to an .npz (first, second, fused, items)",
        description="Writes an .npz with arrays 'first' (N, D), 'second' (N, D2; absent for plain "
                    "open_clip models), 'items' (image paths, texts or labels, one per row) and 'kind'; "
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
    parser.add_argument("--templates", default=None,
                        help="with --labels: template set (none (default), generic, plant, openai, simple) or file")
    parser.add_argument("--fused", action="store_true",
                        help="also write 'fused' = [sqrt(alpha) first, sqrt(1 - alpha) second] and 'alpha'")
    parser.add_argument("--out", required=True, help="output .npz file")
    _add_runtime(parser)
    parser.set_defaults(handler=run_embed)


def _embed_arrays(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from dalip.evaluate import check_labels, embed, embed_classes, read_label_file
    from dalip.model_specs import load_model

    texts = args.texts
    if args.texts_file:
        if not Path(args.texts_file).is_file():
            raise FileNotFoundError(f"texts file not found: {args.texts_file}")
        texts = [line for line in Path(args.texts_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = args.labels or args.labels_file
    if args.templates and not labels:
        raise ValueError("--templates applies to class vectors only (--labels or --labels-file)")
    templates = args.templates or "none"
    loaded = load_model(args.model)
    if args.fused and not loaded.has_second_order:
        raise ValueError(f"--fused: {args.model} is a plain open_clip model with first-order features only")
    if labels:
        items = read_label_file(args.labels_file) if args.labels_file else check_labels(args.labels.split(","), "--labels")
        runtime = _runtime(args)
        features = embed_classes(loaded.model, loaded.tokenizer, items, templates, runtime["batch_size"],
                                 runtime["device"], runtime["precision"])
        kind = "class"
    else:
        features, items = embed(loaded.model, loaded.tokenizer, loaded.preprocess, images=args.images or (),
                                texts=texts or (), **_runtime(args))
        kind = "text" if texts else "image"
    arrays = {"first": features.first.numpy(), "items": np.array(items), "kind": np.array(kind)}
    if features.second is not None:
        arrays["second"] = features.second.numpy()
    if args.fused:
        arrays["fused"] = loaded.model.fused_embedding(features).numpy()
        arrays["alpha"] = np.array(loaded.model.alpha, dtype=np.float32)
    if kind == "class":
        from dalip.templates import load_templates

        arrays["templates"] = np.array(load_templates(templates))
    return arrays


def run_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from dalip.checkpoint import atomic_write

    arrays = _embed_arrays(args)

    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(args.out, write)
    shapes = ", ".join(f"{k} {arrays[k].shape}" for k in ("first", "second", "fused") if k in arrays)
    print(f"wrote {args.out}: {len(arrays['items'])} {arrays['kind']}s; {shapes}")
    return 0


EXPORT_FORMATS = ("open_clip", "open_clip-dir", "fused-dir", "onnx")


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="dalip checkpoint -> open_clip checkpoint or folder, fused folder, or ONNX",
        description="open_clip: one weights file of the first-order model, loaded with "
                    "open_clip.create_model_and_transforms(NAME, pretrained=OUT). open_clip-dir: a folder "
                    "(weights + open_clip_config.json) loaded with create_model_and_transforms('local-dir:OUT'). "
                    "fused-dir: the same folder plus the MBDC heads, loaded whole as the dalip model spec "
                    "local-dir:OUT. onnx: image and text encoders with outputs first, second and fused.",
    )
    parser.add_argument("checkpoint", help="dalip checkpoint (.safetensors or training step_*.pt)")
    parser.add_argument("out", help="output file (open_clip: .safetensors or .pt) or folder (other formats)")
    parser.add_argument("--format", default="open_clip", choices=EXPORT_FORMATS, help="default: open_clip")
    parser.add_argument("--force", action="store_true", help="overwrite OUT (folders: the files this export writes)")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from dalip.checkpoint import export_open_clip
    from dalip.factory import load_checkpoint

    if args.format == "open_clip":
        if Path(args.out).exists() and not args.force:
            raise FileExistsError(f"{args.out} exists; use --force to overwrite")
        model = load_checkpoint(args.checkpoint)
        export_open_clip(model, args.out)
        print(f"wrote {args.out}; load with open_clip.create_model_and_transforms({model.model_name!r}, "
              f"pretrained={args.out!r}) or evaluate as openclip:{model.model_name}:{args.out}")
        return 0
    from dalip.export.files import check_output_folder

    check_output_folder(args.out, [], args.force)  # a file in the way fails before loading
    model = load_checkpoint(args.checkpoint)
    if args.format == "onnx":
        from dalip.export.onnx import export_onnx

        written = export_onnx(model, args.out, force=args.force)
        hint = "run with onnxruntime; dalip_onnx.json gives inputs, preprocessing and alpha"
    else:
        from dalip.export.folder import export_folder

        written = export_folder(model, args.out, fused=args.format == "fused-dir", force=args.force)
        hint = (f"evaluate as local-dir:{args.out}" if args.format == "fused-dir" else
                f"load with open_clip.create_model_and_transforms('local-dir:{args.out}')")
    print(f"wrote {', '.join(path.name for path in written)} in {args.out}; {hint}")
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
    parser.add_argument("--out", required=True, help="output folder")
    _add_runtime(parser)
    parser.set_defaults(handler=run_interpolate)


def parse_weights(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(f"--weights: expected comma-separated numbers such as 0,0.5,1, got {text!r}") from error


def run_interpolate(args: argparse.Namespace) -> int:
    from dalip.report import interpolation_table
    from dalip.wiseft import interpolate

    results = interpolate(
        args.start, args.tuned, parse_weights(args.weights), args.suite, args.out, device=args.device,
        precision=args.precision, batch_size=args.batch_size, workers=args.workers,
        modes=[args.mode] if args.mode else None, progress=_progress(args), save_models=args.save_models,
    )
    print(interpolation_table(results), end="")
    print(f"results: {Path(args.out) / 'results.json'}; plot: {Path(args.out) / 'interpolation.png'}")
    return 0
