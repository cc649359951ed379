"""Evaluation throughput: `dalip.evaluation.zero_shot.zero_shot` against the model's bare image forward.

- eval: `zero_shot` on an image folder written by `dalip.data.synthetic.make_dataset`
  (the plant test split, JPEG, 64 px); the figure is the `images_per_second` it
  reports, i.e. its DataLoader loop: reading, JPEG decoding, the model's validation
  transform, collation and `encode_image` (first- and second-order features in fused
  mode, first only in first mode). Class embeddings and listing the folder are outside
  that loop; the whole call's wall time is reported apart. With workers=2 and workers=0.
- bare: `model.encode_image` (eval mode, `torch.inference_mode()`) over the same images
  already decoded and transformed into one in-memory tensor, same batch size, same
  mode: what the model alone can do.
- loading: the same folder read, decoded, transformed and collated in this process
  (DataLoader, workers=0) with no model. loading / (loading + bare) is the best ratio
  possible when loading and the model must take turns on busy cores (no spare core).

Ratio = eval images/s / bare images/s per mode and worker count (target >= 0.9 for
fused at workers=2: the loader should keep the model fed). Variants are interleaved
(bare, eval w=2, eval w=0 per mode, then again ...); medians, and the median of the
ratios paired within a repeat. CPU seconds per image count this process and its
finished children (the loader workers), so they measure work rather than waiting.
After the timed repeats, one more fused zero_shot call per worker count runs under
cProfile to tell time in `encode_image` from time waiting for the DataLoader, and one more
bare pass per mode under torch's FlopCounterMode gives FLOPs per image (MFU on a GPU).

--device cuda puts the model (and the bare pass's tensor) on the GPU: zero_shot then runs
as `dalip eval` does there (pinned loader memory, features copied back per batch) and the
bare pass is timed between `torch.cuda.synchronize()` calls; --precision bf16 runs both
under bfloat16 autocast.

    python benchmarks/bench_eval.py               # dalip-tiny, 1200 images, batch 64, 5 repeats
    python benchmarks/bench_eval.py --device cuda --precision bf16 --images 4800 --batch 256
    python benchmarks/bench_eval.py --quick --json --no-record
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

TARGET_RATIO = 0.9
MODES = ("fused", "first")


def generate(out_dir: str, args: argparse.Namespace) -> tuple[str, int]:
    """Write the synthetic dataset; (plant test folder, number of images in it)."""
    from dalip.data.synthetic import make_dataset

    per_class = max(1, math.ceil(args.images / args.species))
    manifest = make_dataset(
        out_dir,
        seed=args.seed,
        species=args.species,
        image_size=args.image_size,
        train_per_class=1,
        val_per_class=1,
        test_per_class=per_class,
        general_classes=0,
        force=True,
    )
    return os.path.join(out_dir, "plant", "test"), manifest["counts"]["plant/test"]


def preprocessed_images(folder: str, preprocess: Callable) -> torch.Tensor:
    """Every image of the folder decoded and transformed: (N, 3, H, W)."""
    from dalip.evaluation.datasets import load_classification_dataset

    dataset, _, _ = load_classification_dataset(folder, preprocess)
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def loading_only(folder: str, preprocess: Callable, batch: int) -> Callable[[], float]:
    """A function reading, decoding, transforming and collating the folder in this process
    (DataLoader, workers=0), no model; returns images/s."""
    from dalip.evaluation.datasets import load_classification_dataset

    dataset, _, _ = load_classification_dataset(folder, preprocess)

    def run() -> float:
        start, count = time.perf_counter(), 0
        for images, _labels in torch.utils.data.DataLoader(dataset, batch_size=batch):
            count += len(images)
        return count / (time.perf_counter() - start)

    return run


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have finished (loader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def bare_forward(
    model: Any, images: torch.Tensor, args: argparse.Namespace, mode: str
) -> Callable[[], float]:
    """A function encoding `images` (N, 3, H, W, on the model's device) in batches under
    --precision; returns images/s (the device synchronised before and after)."""
    from dalip.model.devices import autocast

    def run() -> float:
        with torch.inference_mode(), autocast(args.precision, args.device):
            _common.synchronize(args.device)
            start = time.perf_counter()
            for first in range(0, len(images), args.batch):
                model.encode_image(images[first : first + args.batch], second_order=mode != "first")
            _common.synchronize(args.device)
            return len(images) / (time.perf_counter() - start)

    return run


def evaluation(
    model: Any,
    folder: str,
    tokenizer: Any,
    preprocess: Callable,
    args: argparse.Namespace,
    mode: str,
    workers: int,
) -> Callable[[], float]:
    """A function running `zero_shot` on the folder; returns the images/s it reports."""
    from dalip.evaluation.zero_shot import zero_shot
    from dalip.inference.runtime import Runtime

    def run() -> float:
        result = zero_shot(
            model,
            folder,
            tokenizer,
            preprocess,
            templates=args.templates,
            modes=(mode,),
            runtime=Runtime(args.batch, workers, device=args.device, precision=args.precision),
        )
        return result["images_per_second"]

    return run


def variants(
    model: Any,
    folder: str,
    tokenizer: Any,
    preprocess: Callable,
    images: torch.Tensor,
    args: argparse.Namespace,
) -> dict[tuple[str, str], Callable[[], float]]:
    """(mode, "bare" | "workers=W"), and ("any", "loading"), -> function returning images/s,
    in interleaving order."""
    table: dict[tuple[str, str], Callable[[], float]] = {
        ("any", "loading"): loading_only(folder, preprocess, args.batch),
    }
    for mode in MODES:
        table[(mode, "bare")] = bare_forward(model, images, args, mode)
        for workers in args.workers:
            table[(mode, f"workers={workers}")] = evaluation(
                model, folder, tokenizer, preprocess, args, mode, workers
            )
    return table


def measure(
    table: dict[tuple[str, str], Callable[[], float]], repeats: int, warmup: int, count: int
) -> dict[tuple[str, str], dict[str, list[float]]]:
    """Per variant: images/s, whole-call wall seconds and CPU seconds per image, interleaved."""
    for _ in range(warmup):
        for function in table.values():
            function()
    runs = {key: {"rate": [], "call_seconds": [], "cpu_per_image": [], "load": []} for key in table}
    for _ in range(repeats):
        for key, function in table.items():
            wall, cpu = time.perf_counter(), cpu_seconds()
            rate = function()
            runs[key]["rate"].append(rate)
            runs[key]["call_seconds"].append(time.perf_counter() - wall)
            runs[key]["cpu_per_image"].append((cpu_seconds() - cpu) / count)
            runs[key]["load"].append(os.getloadavg()[0])
    return runs


def profile_call(function: Callable[[], float]) -> dict[str, Any]:
    """Where one zero_shot call's time goes (cProfile of the main process).

    Returns seconds in its encode loop (`encode_dataset`), in `encode_image` and waiting
    for the DataLoader (`__next__`), and the top functions by cumulative time.
    """
    profiler = cProfile.Profile()
    profiler.runcall(function)
    stats = pstats.Stats(profiler)
    wanted = {
        "loop": ("inference/runtime.py", "encode_dataset"),
        "encode_image": ("model/dalip_model.py", "encode_image"),
        "loader_wait": ("dataloader.py", "__next__"),
    }
    seconds = dict.fromkeys(wanted, 0.0)
    for (filename, _, function_name), (_, _, _, cumulative, _) in stats.stats.items():
        for name, (file_end, wanted_name) in wanted.items():
            if function_name == wanted_name and filename.endswith(file_end):
                seconds[name] += cumulative
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats("cumulative").print_stats(15)
    loop = max(seconds["loop"], 1e-9)
    return {
        "loop_seconds": round(seconds["loop"], 3),
        "encode_image_share": round(seconds["encode_image"] / loop, 3),
        "loader_wait_share": round(seconds["loader_wait"] / loop, 3),
        "top": out.getvalue(),
    }


def summarize(
    runs: dict[tuple[str, str], dict[str, list[float]]], workers: list[int]
) -> dict[str, dict[str, Any]]:
    """Figures per mode, and "loading": images/s of loading alone and the eval/bare ratio it
    allows when loading and the model take turns on the same cores (no spare core):
    loading rate / (loading rate + bare rate)."""
    loading = runs[("any", "loading")]
    loading_rate = _common.summary(loading["rate"])["median"]
    results: dict[str, dict[str, Any]] = {
        "loading": {
            "images_per_s": {k: round(v, 1) for k, v in _common.summary(loading["rate"]).items()},
            "cpu_ms_per_image": round(1000 * _common.summary(loading["cpu_per_image"])["median"], 3),
        }
    }
    for mode in MODES:
        bare = runs[(mode, "bare")]
        bare_rate = _common.summary(bare["rate"])["median"]
        entry: dict[str, Any] = {
            "bare": {
                "images_per_s": {k: round(v, 1) for k, v in _common.summary(bare["rate"]).items()},
                "cpu_ms_per_image": round(1000 * _common.summary(bare["cpu_per_image"])["median"], 3),
                "ratio_without_spare_core": round(loading_rate / (loading_rate + bare_rate), 3),
            }
        }
        for count in workers:
            run = runs[(mode, f"workers={count}")]
            rate = _common.summary(run["rate"])
            entry[f"workers={count}"] = {
                "images_per_s": {k: round(v, 1) for k, v in rate.items()},
                "ratio": round(rate["median"] / entry["bare"]["images_per_s"]["median"], 3),
                "ratio_paired_median": round(
                    _common.summary(_common.paired_ratios(run["rate"], bare["rate"]))["median"], 3
                ),
                "call_seconds_median": round(_common.summary(run["call_seconds"])["median"], 3),
                "cpu_ms_per_image": round(1000 * _common.summary(run["cpu_per_image"])["median"], 3),
            }
        results[mode] = entry
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dalip-tiny", help="model name (default %(default)s)")
    parser.add_argument(
        "--images",
        type=int,
        default=1200,
        help="images to evaluate, rounded up to a multiple of --species (default %(default)s)",
    )
    parser.add_argument("--species", type=int, default=24, help="classes of the generated test split")
    parser.add_argument("--image-size", type=int, default=64, help="generated image side in pixels")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--workers",
        default="2,0",
        help="comma-separated DataLoader worker counts for zero_shot (default %(default)s)",
    )
    parser.add_argument(
        "--templates",
        default="none",
        help="zero_shot template set; class embeddings are outside the timed loop (default %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each variant first")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="write the dataset here, replacing one written before (default: a temporary folder)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print (and keep in the JSON) the top functions of the profiled zero_shot calls",
    )
    _common.add_run_arguments(
        parser,
        "96 images, 2 repeats, 1 warm-up: under a minute (a smoke test: "
        "worker start-up weighs heavily on so few images)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.warmup = (
            min(args.images, 96),
            min(args.repeats, 2),
            min(args.warmup, 1),
        )
    try:
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error(f"--workers: expected comma-separated integers, got {args.workers!r}")
    if not args.workers or min(args.workers) < 0:
        parser.error("--workers: give at least one worker count, each >= 0")
    return args


def run(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    from dalip.model.factory import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = _common.load_average()
    folder, count = generate(data_dir, args)
    torch.manual_seed(args.seed)
    model, _, preprocess, tokenizer = create_model(
        args.model
    )  # random weights: speed does not depend on them
    model.to(args.device).eval()
    images = preprocessed_images(folder, preprocess).to(args.device)  # (N, 3, H, W)
    info = {**_common.machine(args.device), "load_average_before": load_before}
    table = variants(model, folder, tokenizer, preprocess, images, args)
    runs = measure(table, args.repeats, args.warmup, count)
    results = summarize(runs, args.workers)
    headline = results["fused"].get("workers=2")
    figures = {
        "model": args.model,
        "images": count,
        "image_size": args.image_size,
        "input_shape": list(images.shape[1:]),
        "batch": args.batch,
        "workers": args.workers,
        "templates": args.templates,
        "results": results,
        "target_ratio": TARGET_RATIO,
        "target_met": None if headline is None else headline["ratio"] >= TARGET_RATIO,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "precision": args.precision,
        "load_average_during": {
            k: round(v, 2) for k, v in _common.summary([x for r in runs.values() for x in r["load"]]).items()
        },
        "machine": info,
    }
    for mode in MODES:  # untimed: the counter's dispatch overhead would distort the rates
        bare = results[mode]["bare"]
        bare["flops_per_image"] = _common.count_flops(table[(mode, "bare")]) / len(images)
        bare["mfu"] = _common.mfu(
            bare["flops_per_image"], 1 / bare["images_per_s"]["median"], info.get("gpu_peak_bf16_flops")
        )
    # after the timed repeats, untimed: cProfile's overhead would distort the rates
    profiles = {f"workers={w}": profile_call(table[("fused", f"workers={w}")]) for w in args.workers}
    for name, profile in profiles.items():
        top = profile.pop("top")
        results["fused"][name]["profile"] = {**profile, **({"top": top} if args.profile else {})}
    return figures


def report(figures: dict[str, Any]) -> str:
    loading = figures["results"]["loading"]
    rows = [
        [
            "-",
            "loading only (workers=0, no model)",
            f"{loading['images_per_s']['median']:.0f}",
            f"{loading['images_per_s']['min']:.0f}-{loading['images_per_s']['max']:.0f}",
            "-",
            "-",
            f"{loading['cpu_ms_per_image']:.2f}",
            "-",
        ]
    ]
    for mode in MODES:
        entry = figures["results"][mode]
        bare = entry["bare"]
        rows.append(
            [
                mode,
                "bare forward",
                f"{bare['images_per_s']['median']:.0f}",
                f"{bare['images_per_s']['min']:.0f}-{bare['images_per_s']['max']:.0f}",
                "-",
                "-",
                f"{bare['cpu_ms_per_image']:.2f}",
                "-",
            ]
        )
        for workers in figures["workers"]:
            e = entry[f"workers={workers}"]
            rows.append(
                [
                    mode,
                    f"zero_shot, workers={workers}",
                    f"{e['images_per_s']['median']:.0f}",
                    f"{e['images_per_s']['min']:.0f}-{e['images_per_s']['max']:.0f}",
                    f"**{e['ratio']:.3f}**",
                    f"{e['ratio_paired_median']:.3f}",
                    f"{e['cpu_ms_per_image']:.2f}",
                    f"{e['call_seconds_median']:.2f}",
                ]
            )
    header = [
        "mode",
        "variant",
        "images/s",
        "min-max",
        "eval/bare",
        "paired median",
        "CPU ms/image",
        "whole call s",
    ]
    machine = figures["machine"]
    lines = [
        f"{figures['model']}, {figures['images']} JPEG images ({figures['image_size']} px, plant test split of "
        f"`make_dataset`), input {'x'.join(map(str, figures['input_shape']))}, batch {figures['batch']}, "
        f"{_common.conditions(figures)}, {figures['threads']} torch thread{'s' if figures['threads'] != 1 else ''}, "
        f"templates `{figures['templates']}`; "
        f"{figures['repeats']} interleaved repeats after {figures['warmup']} warm-up (medians). "
        "zero_shot images/s is its own figure (its DataLoader loop: read, decode, transform, encode); "
        '"whole call" adds listing the folder and the class embeddings. CPU ms/image counts this '
        "process and its finished loader workers (for zero_shot: the whole call).",
        "",
        _common.format_table(header, rows),
        "",
    ]
    headline = figures["results"]["fused"].get("workers=2")
    if headline is not None:
        verdict = "met" if figures["target_met"] else "MISSED"
        lines.append(
            f"- Fused, workers=2: eval/bare **{headline['ratio']:.3f}** (paired median "
            f"{headline['ratio_paired_median']:.3f}); target >= {figures['target_ratio']}: {verdict}."
        )
    ceilings = ", ".join(
        f"{mode} {figures['results'][mode]['bare']['ratio_without_spare_core']:.3f}" for mode in MODES
    )
    lines.append(
        f"- Ceiling when loading and the model must share busy cores (loading rate / (loading rate "
        f"+ bare rate)): {ceilings}."
    )
    shares = []
    for workers in figures["workers"]:
        profile = figures["results"]["fused"][f"workers={workers}"]["profile"]
        shares.append(
            f"workers={workers}: encode_image {100 * profile['encode_image_share']:.1f}%, "
            f"waiting for the DataLoader {100 * profile['loader_wait_share']:.1f}% "
            f"(loop {profile['loop_seconds']:.2f} s)"
        )
    lines.append(
        "- Where a fused zero_shot loop's time goes (cProfile, one extra untimed call): "
        + "; ".join(shares)
        + "."
    )
    lines.append(flops_line(figures))
    lines.append(
        f"- Load average before / during (1-min: median, min-max) / after: "
        f"{machine['load_average_before']} / {figures['load_average_during']['median']} "
        f"({figures['load_average_during']['min']}-{figures['load_average_during']['max']}) / "
        f"{machine['load_average']}."
    )
    return "\n".join(lines)


def flops_line(figures: dict[str, Any]) -> str:
    """FLOPs per image of the bare forward per mode, and its MFU where the GPU's peak is known."""
    parts = []
    for mode in MODES:
        bare = figures["results"][mode]["bare"]
        mfu = "" if bare["mfu"] is None else f", MFU {100 * bare['mfu']:.2f}% of the dense bf16 peak"
        parts.append(f"{mode} {bare['flops_per_image'] / 1e9:.4g} GFLOP per image{mfu}")
    return "- Bare forward (FlopCounterMode): " + "; ".join(parts) + "."


def summary(figures: dict[str, Any]) -> _common.Summary:
    """RESULTS.md's row: the fused zero_shot rate over the bare forward's with 2 loader workers."""
    best = figures["results"]["fused"].get("workers=2")
    headline = (
        "-"
        if best is None
        else f"eval/bare {best['ratio']:.3f} (fused, workers=2; paired median {best['ratio_paired_median']:.3f})"
    )
    return _common.Summary(
        f"zero_shot images/s over a bare forward, {figures['model']}, {figures['images']} images",
        headline,
        f">= {figures['target_ratio']}: {'met' if figures['target_met'] else 'MISSED'}",
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.data_dir:
        figures = run(args, args.data_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="dalip-bench-eval-") as data_dir:
            figures = run(args, data_dir)
    if args.json:
        _common.print_json(figures)
    else:
        print(report(figures))
        for workers in figures["workers"]:
            top = figures["results"]["fused"][f"workers={workers}"]["profile"].get("top")
            if top:
                print(f"\ncProfile, fused zero_shot, workers={workers}:\n{top}")
    if not args.no_record:
        body = _common.run_header("bench_eval.py", argv, figures["machine"]) + "\n\n" + report(figures)
        title = "Evaluation throughput, zero_shot vs bare forward"
        title = _common.section_title(args, "bench_eval.py", title, figures["machine"])
        _common.record_section(title, body, summary(figures))
    return figures


if __name__ == "__main__":
    main()
