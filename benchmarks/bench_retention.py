"""What each retention option of `dalip train` costs per step: LoRA (`lora.rank`), L2-SP
(`l2sp.coefficient`) and distillation to the start model (`distill.coefficient`), each against
the same step without it, on the same model, batch and start weights.

Every variant runs the step `dalip train` runs (`dalip.train.step.OptimizerStep` over the
TrainingTask a TrainConfig builds), with the DALIP loss, from one start model written to a
temporary folder (random weights, seeded: no download). Times: all variants in one process,
interleaved (none lora l2sp distill all none ...), medians of per-round ratios to "none";
trained parameters are counted too (LoRA trains the adapters, heads and temperatures only).

    python benchmarks/bench_retention.py                     # dalip-tiny @ 64 and ViT-B-16 @ 8
    python benchmarks/bench_retention.py --models dalip-tiny:64 --quick --no-record
    python benchmarks/bench_retention.py --device cuda --precision bf16 --models ViT-B-16:256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from bench_step import bound_step, parse_models, random_batch  # noqa: E402

import dalip  # noqa: E402
from dalip.config import DistillConfig, L2SPConfig, LoRAConfig, ModelConfig, TrainConfig  # noqa: E402
from dalip.train.task import TrainingTask  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "none": {},
    "lora": {"lora": LoRAConfig(rank=2)},
    "l2sp": {"l2sp": L2SPConfig(coefficient=0.1)},
    "distill": {"distill": DistillConfig(coefficient=1.0)},
    "all": {
        "lora": LoRAConfig(rank=2),
        "l2sp": L2SPConfig(coefficient=0.1),
        "distill": DistillConfig(coefficient=1.0),
    },
}


def build(
    name: str, start: str, variant: str, precision: str, device: str
) -> tuple[TrainingTask, TrainConfig]:
    config = TrainConfig(
        model=ModelConfig(name=name, pretrained=start),
        precision=precision,
        device=device,
        **VARIANTS[variant],
    )
    torch.manual_seed(0)
    task = TrainingTask.from_config(config, device)
    task.model.train()
    return task, config


def measure(name: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dalip-bench-retention-") as folder:
        torch.manual_seed(args.seed)
        start = str(Path(folder) / "start.safetensors")
        dalip.create_model(name)[0].save(start)
        steps, trained = {}, {}
        for variant in VARIANTS:
            task, config = build(name, start, variant, args.precision, args.device)
            images, texts = random_batch(task.model.clip, batch, args.seed, args.device)
            steps[variant] = bound_step(task, config, images, texts)
            trained[variant] = sum(p.numel() for p in task.model.parameters() if p.requires_grad)
        repeats = 3 if args.quick else 12
        times = _common.time_interleaved(steps, repeats, warmup=2, device=args.device)["wall"]
    ratios = {v: statistics.median(_common.paired_ratios(times[v], times["none"])) for v in VARIANTS}
    return {
        "model": name,
        "batch": batch,
        "seconds": {v: statistics.median(times[v]) for v in VARIANTS},
        "ratio_to_none": ratios,
        "trained_parameters": trained,
        "repeats": repeats,
    }


def report(results: list[dict[str, Any]], figures: dict[str, Any]) -> str:
    rows = [
        [
            f"{r['model']} @ {r['batch']}",
            variant,
            f"{r['seconds'][variant] * 1000:.1f}",
            f"{r['ratio_to_none'][variant]:.2f}",
            f"{r['trained_parameters'][variant]:,}",
        ]
        for r in results
        for variant in VARIANTS
    ]
    header = ["model @ batch", "retention", "ms / step", "x none", "trained parameters"]
    text = _common.format_table(header, rows)
    return f"Per-step cost of each retention option ({_common.conditions(figures)}):\n\n{text}"


def summary(results: list[dict[str, Any]]) -> _common.Summary:
    """RESULTS.md's row: each option's step time over the step without one, per model."""
    ratios = "; ".join(
        f"{r['model']} @ {r['batch']}: "
        + ", ".join(
            f"{variant} {r['ratio_to_none'][variant]:.2f}" for variant in VARIANTS if variant != "none"
        )
        for r in results
    )
    return _common.Summary("per-step cost of each retention option, x the step without one", ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="dalip-tiny:64,ViT-B-16:8", help="NAME:BATCH,... (default %(default)s)"
    )
    _common.add_run_arguments(parser, "3 rounds instead of 12")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = _common.machine(args.device)
    results = [measure(name, batch, args) for name, batch in parse_models(args.models)]
    figures = {"machine": info, "device": args.device, "precision": args.precision, "results": results}
    _common.publish(
        args,
        argv,
        "bench_retention.py",
        "Retention options per step",
        figures,
        report(results, figures),
        summary(results),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
