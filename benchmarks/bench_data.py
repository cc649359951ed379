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
  competing with the step for the same cores.

Loader epochs and steps are interleaved (steps, folder, csv, webdataset, steps, ...);
medians. Target: each loader's rate >= 2x the step rate.

    python benchmarks/bench_data.py                    # batch 64, 1920 training images
    python benchmarks/bench_data.py --quick --json --no-record
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import bench_step  # noqa: E402

TARGET_RATIO = 2.0
MODEL = "dalip-tiny"
SOURCE_KINDS = ("folder", "csv", "webdataset")


def generate(out_dir: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, float]]:
    """Write the synthetic dataset; (manifest, generator figures)."""
    from dalip.data.synthetic import make_dataset

    wall, cpu = time.perf_counter(), time.process_time()
    manifest = make_dataset(out_dir, seed=args.seed, image_size=args.image_size,
                            train_per_class=args.train_per_class, val_per_class=1, test_per_class=1,
                            general_classes=0, force=True)
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


def build_loaders(configs: dict[str, Any], transform, tokenizer, args: argparse.Namespace) -> dict[str, Any]:
    from dalip.data import build_loader, build_train_dataset

    loaders = {}
    for kind, config in configs.items():
        dataset = build_train_dataset([config], transform, tokenizer, seed=args.seed)
        loaders[kind] = build_loader(dataset, args.batch, args.workers, seed=args.seed,
                                     persistent_workers=True)
    return loaders


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


def fed_steps(loader, step_on: Callable[[torch.Tensor, torch.Tensor], float], steps: int) -> float:
    """Samples/s of `steps` training steps on batches from `loader` (after one warm batch)."""
    done, samples, start = -1, 0, 0.0
    while done < steps:
        loader.dataset.set_epoch(1000 + done)
        for images, texts in loader:
            if done == -1:
                start = time.perf_counter()  # the first batch paid for waking the workers
            else:
                samples += images.shape[0]
            step_on(images, texts)
            done += 1
            if done >= steps:
                break
    return samples / (time.perf_counter() - start)


def measure(args: argparse.Namespace, root: str) -> dict[str, Any]:
    manifest, generator = generate(root, args)
    task, config = bench_step.build_task(MODEL, {}, False, args.seed)
    transform, tokenizer = task.preprocess_train, task.tokenizer  # as `dalip train` (augment on)
    images, texts = bench_step.random_batch(task.model.clip, args.batch, args.seed)
    step_on = bench_step.training_step(task, config)
    loaders = build_loaders(source_configs(root, manifest), transform, tokenizer, args)
    runners = {kind: epoch_runner(loader) for kind, loader in loaders.items()}

    first_epoch = {kind: run() for kind, run in runners.items()}  # workers start here
    for _ in range(args.warmup):
        step_on(images, texts)
    step_seconds: list[float] = []
    rates: dict[str, list[float]] = {kind: [] for kind in runners}
    for _ in range(args.repeats):
        for _ in range(args.step_repeats):
            step_seconds.append(_common.time_call(lambda: step_on(images, texts))[0])
        for kind, run in runners.items():
            samples, seconds = run()
            rates[kind].append(samples / seconds)
    fed = {kind: fed_steps(loader, step_on, args.fed_steps) for kind, loader in loaders.items()} \
        if args.fed_steps > 0 else {}

    step_rate = args.batch / _common.summary(step_seconds)["median"]
    sources = {}
    for kind in runners:
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
    return {
        "generator": {k: round(v, 1) for k, v in generator.items()},
        "step_samples_per_s": round(step_rate, 1),
        "step_seconds_median": round(_common.summary(step_seconds)["median"], 4),
        "sources": sources,
        "target_ratio": TARGET_RATIO,
        "target_met": all(s["target_met"] for s in sources.values()),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--train-per-class", type=int, default=80,
                        help="plant training images per species (24 species)")
    parser.add_argument("--image-size", type=int, default=64, help="generated image side (px)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (steps, one epoch per source)")
    parser.add_argument("--step-repeats", type=int, default=3, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--fed-steps", type=int, default=8,
                        help="steps fed by each loader (0 skips the fed figure)")
    parser.add_argument("--data-dir", default=None,
                        help="where to write the dataset (default: a temporary folder, removed)")
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
    figures.update({
        "batch": args.batch, "workers": args.workers, "repeats": args.repeats,
        "machine": {**_common.machine(), "load_average_before": load_before},
    })
    return figures


def report(figures: dict[str, Any]) -> str:
    step = figures["step_samples_per_s"]
    rows = [["training step (fixed batch)", f"{step:.0f}", "1.00", "-", "-", "-"]]
    for kind, s in figures["sources"].items():
        rows.append([
            f"loader: {kind}", f"{s['samples_per_s']:.0f}", f"**{s['ratio_to_step']:.2f}**",
            "met" if s["target_met"] else "MISSED", f"{s['first_epoch_samples_per_s']:.0f}",
            f"{s['fed_step_samples_per_s']:.0f}" if "fed_step_samples_per_s" in s else "-",
        ])
    generator = figures["generator"]
    return "\n".join([
        f"Batch {figures['batch']}, {figures['workers']} loader workers (persistent), {MODEL} "
        f"training transform and tokenizer; {figures['repeats']} interleaved rounds, medians. "
        f"Loader epochs: {next(iter(figures['sources'].values()))['epoch_samples']} samples.",
        "",
        _common.format_table(
            ["what", "samples/s", "x step rate", f"target >= {figures['target_ratio']:g}x",
             "first epoch samples/s", "steps fed by it, samples/s"], rows),
        "",
        f"- Generator (`make_dataset`, {generator['images']} images): "
        f"{generator['images_per_s_wall']:.0f} images/s wall-clock, "
        f"{generator['images_per_s_cpu']:.0f} per CPU second.",
        f"- Training step: {figures['step_seconds_median']:.3f} s per step of {figures['batch']}.",
        f"- Load average before / after: {figures['machine']['load_average_before']} / "
        f"{figures['machine']['load_average']}.",
    ])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    figures = run(args)
    _common.publish(args, argv, "bench_data.py", "Data pipeline vs training step", figures, report(figures))
    return figures


if __name__ == "__main__":
    main()
