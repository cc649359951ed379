"""Data pipeline speed against the training step: can the loader keep a CPU run busy?

Figures, from one run:
- generator: `make_dataset` (render, JPEG encode, image folder + CSV + tar shards),
  images per wall-clock and per CPU second;
- loader: samples/s of `build_train_dataset` + `build_loader` (2 workers, persistent, as
  `dalip train` builds them: the model's training transform and tokenizer) from the
  image-folder, CSV and WebDataset forms of the generated plant training split, per
  epoch after a first warm-up epoch (worker start-up is reported apart);
- step: samples/s of one `dalip-tiny` training step (`bench_step.training_step`: the
  TrainingTask forward and DALIP loss, backward, clipping, AdamW) on a fixed batch of the same size;
- fed: samples/s of training steps fed by each loader, i.e. with the loader's workers
  competing with the step for the same cores;
- per worker: samples/s of the WebDataset form with 1 and 2 workers, with the training
  transform of a model whose input is --image-size px (`open_clip.image_transform(size,
  is_train=True)`: at 224, ViT-B-16's) and ViT-B-16's tokenizer, divided by the worker
  count. On a GPU the step leaves the cores to the loader, so the GPU needs
  workers = ceil(target images/s per GPU / images/s per worker) (`--target-images-per-s`).

Loader epochs and steps are interleaved (steps, folder, csv, webdataset, webdataset with
1 and 2 workers, steps, ...); medians. Target: each loader's rate >= 2x the step rate.
With --device cuda the step runs on the GPU (timed by CUDA events; batches pinned and
copied), with --precision bf16 under bfloat16 autocast; the step's FLOPs (FlopCounterMode)
give its MFU on a GPU with a known peak.

    python benchmarks/bench_data.py                    # batch 64, 1920 training images
    python benchmarks/bench_data.py --image-size 224 --device cuda   # workers per GPU, ViT-B-16 size
    python benchmarks/bench_data.py --quick --json --no-record
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import bench_step  # noqa: E402

TARGET_RATIO = 2.0
MODEL = "dalip-tiny"
SOURCE_KINDS = ("folder", "csv", "webdataset")
PER_WORKER_COUNTS = (1, 2)


def generate(out_dir: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, float]]:
    """Write the synthetic dataset; (manifest, generator figures)."""
    from dalip.data.synthetic import make_dataset

    wall, cpu = time.perf_counter(), time.process_time()
    manifest = make_dataset(
        out_dir,
        seed=args.seed,
        image_size=args.image_size,
        train_per_class=args.train_per_class,
        val_per_class=1,
        test_per_class=1,
        general_classes=0,
        force=True,
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = sum(manifest["counts"].values())
    return manifest, {"images": images, "images_per_s_wall": images / wall, "images_per_s_cpu": images / cpu}


def source_configs(root: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The plant training split as each kind of source."""
    from dalip.config import SourceConfig

    split = os.path.join(root, "plant", "train")
    entry = manifest["splits"]["plant/train"]
    return {
        "folder": SourceConfig(kind="folder", path=split),
        "csv": SourceConfig(kind="csv", path=os.path.join(split, entry["csv"])),
        "webdataset": SourceConfig(kind="webdataset", path=os.path.join(split, entry["shards"])),
    }


def build_loaders(
    configs: dict[str, Any], transform, tokenizer, args: argparse.Namespace, workers: int | None = None
) -> dict[str, Any]:
    """One persistent-worker training loader per source config, as `dalip train` builds them."""
    from dalip.data import build_loader, build_train_dataset

    loaders = {}
    for kind, config in configs.items():
        dataset = build_train_dataset([config], transform, tokenizer, seed=args.seed)
        loaders[kind] = build_loader(
            dataset,
            args.batch,
            args.workers if workers is None else workers,
            seed=args.seed,
            persistent_workers=True,
            pin_memory=args.device == "cuda",
        )
    return loaders


def per_worker_loaders(root: str, manifest: dict[str, Any], args: argparse.Namespace) -> dict[int, Any]:
    """The WebDataset form with 1 and 2 workers, each with the training transform of a model
    whose input is --image-size px (`open_clip.image_transform(size, is_train=True)`, e.g.
    ViT-B-16's at 224) and ViT-B-16's tokenizer (context 77)."""
    import open_clip

    transform = open_clip.image_transform(args.image_size, is_train=True)
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    config = {"webdataset": source_configs(root, manifest)["webdataset"]}
    return {
        workers: build_loaders(config, transform, tokenizer, args, workers)["webdataset"]
        for workers in PER_WORKER_COUNTS
    }


def epoch_runner(loader) -> Callable[[], tuple[int, float]]:
    """A function running the loader's next epoch: (samples, wall seconds)."""
    state = {"epoch": 0}

    def run() -> tuple[int, float]:
        loader.dataset.set_epoch(state["epoch"])
        state["epoch"] += 1
        samples, start = 0, time.perf_counter()
        for images, _texts in loader:
            samples += images.shape[0]
        return samples, time.perf_counter() - start

    return run


def device_step(
    step_on: Callable[[torch.Tensor, torch.Tensor], float], args: argparse.Namespace
) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """`bench_step.training_step`'s step (the task was built in --precision on --device) with
    its batch moved to --device, as the training loop moves it."""

    def step(images: torch.Tensor, texts: torch.Tensor) -> float:
        return step_on(images.to(args.device, non_blocking=True), texts.to(args.device, non_blocking=True))

    return step


def fed_steps(loader, step: Callable[[torch.Tensor, torch.Tensor], float], steps: int, device: str) -> float:
    """Samples/s of `steps` training steps on batches from `loader` (after one warm batch)."""
    done, samples, start = -1, 0, 0.0
    while done < steps:
        loader.dataset.set_epoch(1000 + done)
        for images, texts in loader:
            if done == -1:
                _common.synchronize(device)
                start = time.perf_counter()  # the first batch paid for waking the workers
            else:
                samples += images.shape[0]
            step(images, texts)
            done += 1
            if done >= steps:
                break
    _common.synchronize(device)
    return samples / (time.perf_counter() - start)


def interleaved_rounds(
    runners: dict[Any, Callable[[], tuple[int, float]]],
    time_step: Callable[[], float],
    args: argparse.Namespace,
) -> tuple[list[float], dict[Any, list[float]]]:
    """Rounds of (--step-repeats timed steps, one epoch of each loader): (step seconds, rates)."""
    step_seconds: list[float] = []
    rates: dict[Any, list[float]] = {key: [] for key in runners}
    for _ in range(args.repeats):
        for _ in range(args.step_repeats):
            step_seconds.append(time_step())
        for key, run in runners.items():
            samples, seconds = run()
            rates[key].append(samples / seconds)
    return step_seconds, rates


def measure(args: argparse.Namespace, root: str) -> dict[str, Any]:
    manifest, generator = generate(root, args)
    task, config = bench_step.build_task(
        MODEL, {}, False, args.seed, precision=args.precision, device=args.device
    )
    transform, tokenizer = task.preprocess_train, task.tokenizer  # as `dalip train` (augment on)
    images, texts = (
        t.to(args.device) for t in bench_step.random_batch(task.model.clip, args.batch, args.seed)
    )
    step = device_step(bench_step.training_step(task, config), args)
    loaders = build_loaders(source_configs(root, manifest), transform, tokenizer, args)
    workers = per_worker_loaders(root, manifest, args)
    runners = {
        **{kind: epoch_runner(loader) for kind, loader in loaders.items()},
        **{("per_worker", count): epoch_runner(loader) for count, loader in workers.items()},
    }

    first_epoch = {key: run() for key, run in runners.items()}  # workers start here
    for _ in range(args.warmup):
        step(images, texts)
    step_seconds, rates = interleaved_rounds(
        runners, lambda: _common.time_call(lambda: step(images, texts), args.device)[0], args
    )
    fed = (
        {kind: fed_steps(loader, step, args.fed_steps, args.device) for kind, loader in loaders.items()}
        if args.fed_steps > 0
        else {}
    )
    flops = _common.count_flops(lambda: step(images, texts))  # untimed: the counter slows the step

    step_median = _common.summary(step_seconds)["median"]
    sources = source_figures(rates, first_epoch, fed, args.batch / step_median)
    return {
        "generator": {k: round(v, 1) for k, v in generator.items()},
        "step_samples_per_s": round(args.batch / step_median, 1),
        "step_seconds_median": round(step_median, 4),
        "step_flops": flops,
        "sources": sources,
        "per_worker": per_worker_figures(rates, first_epoch, args.image_size),
        "target_ratio": TARGET_RATIO,
        "target_met": all(source["target_met"] for source in sources.values()),
    }


def source_figures(
    rates: dict[Any, list[float]],
    first_epoch: dict[Any, tuple[int, float]],
    fed: dict[str, float],
    step_rate: float,
) -> dict[str, dict[str, Any]]:
    """Per source kind: samples/s (median, min), its ratio to the step rate and the target."""
    sources = {}
    for kind in SOURCE_KINDS:
        rate = _common.summary(rates[kind])["median"]
        samples, seconds = first_epoch[kind]
        sources[kind] = {
            "samples_per_s": round(rate, 1),
            "samples_per_s_min": round(min(rates[kind]), 1),
            "ratio_to_step": round(rate / step_rate, 3),
            "target_met": rate / step_rate >= TARGET_RATIO,
            "first_epoch_samples_per_s": round(samples / seconds, 1),
            "epoch_samples": samples,
        }
        if kind in fed:
            sources[kind]["fed_step_samples_per_s"] = round(fed[kind], 1)
    return sources


def per_worker_figures(
    rates: dict[Any, list[float]], first_epoch: dict[Any, tuple[int, float]], image_size: int
) -> dict[str, Any]:
    """Samples/s of the WebDataset loader per worker count, and per worker: the figure the
    rule "workers per GPU = ceil(target images/s per GPU / images/s per worker)" needs."""
    counts = {}
    for workers in PER_WORKER_COUNTS:
        rate = _common.summary(rates[("per_worker", workers)])
        samples, seconds = first_epoch[("per_worker", workers)]
        counts[str(workers)] = {
            "samples_per_s": round(rate["median"], 1),
            "samples_per_s_min": round(rate["min"], 1),
            "samples_per_s_per_worker": round(rate["median"] / workers, 1),
            "first_epoch_samples_per_s": round(samples / seconds, 1),
        }
    return {
        "image_size": image_size,
        "transform": f"open_clip.image_transform({image_size}, is_train=True)",
        "tokenizer": "ViT-B-16",
        "source": "webdataset",
        "workers": counts,
        "samples_per_s_per_worker": counts[str(PER_WORKER_COUNTS[0])]["samples_per_s_per_worker"],
    }


def workers_per_gpu(target_images_per_s: float, images_per_s_per_worker: float) -> int:
    """The loader workers one GPU needs to be fed `target_images_per_s`."""
    return math.ceil(target_images_per_s / images_per_s_per_worker)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument(
        "--train-per-class", type=int, default=80, help="plant training images per species (24 species)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=64,
        help="generated image side and the per-worker figure's model input (px)",
    )
    parser.add_argument(
        "--target-images-per-s",
        type=float,
        default=None,
        help="images/s one GPU should be fed: report the workers per GPU it needs",
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (steps, one epoch per source)")
    parser.add_argument("--step-repeats", type=int, default=3, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--fed-steps", type=int, default=8, help="steps fed by each loader (0 skips the fed figure)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="where to write the dataset (default: a temporary folder, removed)"
    )
    _common.add_run_arguments(parser, "288 training images, 2 rounds, no fed steps: under a minute")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_per_class, args.repeats, args.step_repeats = min(args.train_per_class, 12), 2, 2
        args.warmup, args.fed_steps = 1, 0
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = _common.load_average()
    if args.data_dir:
        figures = measure(args, args.data_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="dalip-bench-data-") as root:
            figures = measure(args, root)
    info = {**_common.machine(args.device), "load_average_before": load_before}
    per_worker = figures["per_worker"]
    if args.target_images_per_s:
        per_worker["target_images_per_s"] = args.target_images_per_s
        per_worker["workers_per_gpu"] = workers_per_gpu(
            args.target_images_per_s, per_worker["samples_per_s_per_worker"]
        )
    figures.update(
        {
            "step_mfu": _common.mfu(
                figures["step_flops"], figures["step_seconds_median"], info.get("gpu_peak_bf16_flops")
            ),
            "batch": args.batch,
            "workers": args.workers,
            "repeats": args.repeats,
            "device": args.device,
            "precision": args.precision,
            "machine": info,
        }
    )
    return figures


def report(figures: dict[str, Any]) -> str:
    step = figures["step_samples_per_s"]
    rows = [["training step (fixed batch)", f"{step:.0f}", "1.00", "-", "-", "-"]]
    for kind, s in figures["sources"].items():
        rows.append(
            [
                f"loader: {kind}",
                f"{s['samples_per_s']:.0f}",
                f"**{s['ratio_to_step']:.2f}**",
                "met" if s["target_met"] else "MISSED",
                f"{s['first_epoch_samples_per_s']:.0f}",
                f"{s['fed_step_samples_per_s']:.0f}" if "fed_step_samples_per_s" in s else "-",
            ]
        )
    generator = figures["generator"]
    mfu = "- (no known peak)" if figures["step_mfu"] is None else f"{100 * figures['step_mfu']:.2f}%"
    return "\n".join(
        [
            f"Batch {figures['batch']}, {figures['workers']} loader workers (persistent), {MODEL} "
            f"training transform and tokenizer; {figures['repeats']} interleaved rounds, medians. "
            f"Loader epochs: {next(iter(figures['sources'].values()))['epoch_samples']} samples.",
            "",
            _common.format_table(
                [
                    "what",
                    "samples/s",
                    "x step rate",
                    f"target >= {figures['target_ratio']:g}x",
                    "first epoch samples/s",
                    "steps fed by it, samples/s",
                ],
                rows,
            ),
            "",
            f"- Generator (`make_dataset`, {generator['images']} images): "
            f"{generator['images_per_s_wall']:.0f} images/s wall-clock, "
            f"{generator['images_per_s_cpu']:.0f} per CPU second.",
            f"- Training step ({_common.conditions(figures)}): {figures['step_seconds_median']:.3f} s per step "
            f"of {figures['batch']}; {figures['step_flops'] / 1e9:.4g} GFLOP (FlopCounterMode), MFU {mfu}.",
            "",
            per_worker_report(figures["per_worker"]),
            "",
            f"- Load average before / after: {figures['machine']['load_average_before']} / "
            f"{figures['machine']['load_average']}.",
        ]
    )


def per_worker_report(per_worker: dict[str, Any]) -> str:
    rows = [
        [
            workers,
            f"{w['samples_per_s']:.0f}",
            f"{w['samples_per_s_min']:.0f}",
            f"**{w['samples_per_s_per_worker']:.0f}**",
            f"{w['first_epoch_samples_per_s']:.0f}",
        ]
        for workers, w in per_worker["workers"].items()
    ]
    lines = [
        f"Per worker: WebDataset shards, `{per_worker['transform']}`, {per_worker['tokenizer']} tokenizer, "
        "loader alone (no step competing for the cores).",
        "",
        _common.format_table(
            ["workers", "samples/s", "min", "samples/s per worker", "first epoch samples/s"], rows
        ),
        "",
        f"- Workers per GPU = ceil(target images/s per GPU / {per_worker['samples_per_s_per_worker']:.0f} "
        f"images/s per worker) at {per_worker['image_size']} px on this CPU.",
    ]
    if "workers_per_gpu" in per_worker:
        lines.append(
            f"- For {per_worker['target_images_per_s']:.0f} images/s per GPU: "
            f"**{per_worker['workers_per_gpu']}** workers per GPU."
        )
    return "\n".join(lines)


def summary(figures: dict[str, Any]) -> _common.Summary:
    """RESULTS.md's row: each loader's rate over the step's, and what one worker delivers."""
    per_worker = figures["per_worker"]
    ratios = ", ".join(f"{kind} {s['ratio_to_step']:.2f}x" for kind, s in figures["sources"].items())
    headline = (
        f"loader / step rate: {ratios}; {per_worker['samples_per_s_per_worker']:.0f} images/s per worker"
    )
    if "workers_per_gpu" in per_worker:
        headline += (
            f", {per_worker['workers_per_gpu']} workers per GPU for "
            f"{per_worker['target_images_per_s']:.0f} images/s"
        )
    return _common.Summary(
        f"loaders (batch {figures['batch']}, {figures['workers']} workers, {per_worker['image_size']} px) "
        f"against the {MODEL} training step",
        headline,
        f">= {figures['target_ratio']:g}x the step rate: {'met' if figures['target_met'] else 'MISSED'}",
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    figures = run(args)
    detail = "" if args.image_size == 64 else f"{args.image_size} px"  # its own section beside the 64 px one
    _common.publish(
        args,
        argv,
        "bench_data.py",
        "Data pipeline vs training step",
        figures,
        report(figures),
        summary(figures),
        detail=detail,
    )
    return figures


if __name__ == "__main__":
    main()
