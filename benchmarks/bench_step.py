"""One training step, DALIP against plain CLIP on the same open_clip model and batch.

Both variants run the step `dalip train` runs (`dalip.train.task.TrainingTask` built from a
TrainConfig, the loop's parameter groups, gradient clipping, grad scaler, schedule and
temperature clamp; see `training_step`). DALIP: `loss.kind: dalip` (first- and
second-order features, both loss terms). CLIP: `loss.kind: clip` (MBDC skipped, heads
frozen, first-order loss only). Random initialisation (no download), random images and
token ids, CPU, float32, train mode.

Time: both variants in one process, interleaved (CLIP DALIP CLIP DALIP ...), medians.
Peak memory: each variant in a fresh subprocess (the two run side by side; glibc
malloc set to return freed memory at once); the resident-set high-water mark (VmHWM) is reset after the model,
optimiser and batch are built, a few steps run, and the new high-water mark minus the
resident set before them is the step's peak memory
(gradients, AdamW states, activations). The peak over the resident set right after the
imports (parameters included) is reported too.

    python benchmarks/bench_step.py                       # dalip-tiny @ 64, ViT-B-16 @ 8
    python benchmarks/bench_step.py --models ViT-B-16:8 --shared-mbdc
    python benchmarks/bench_step.py --quick --json --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from dalip.config import LossConfig, ModelConfig, TrainConfig  # noqa: E402
from dalip.train.step import OptimizerStep  # noqa: E402
from dalip.train.task import TrainingTask  # noqa: E402

DEFAULT_MODELS = "dalip-tiny:64,ViT-B-16:8"
TIME_TARGETS = {"ViT-B-16": 1.05, "dalip-tiny": 1.15}
MEMORY_TARGET = 1.10
BYTES_PER_TRAINED_PARAMETER = 16  # float32 parameter + gradient + AdamW's two moments


def parse_models(text: str) -> list[tuple[str, int]]:
    """'dalip-tiny:64,ViT-B-16:8' -> [('dalip-tiny', 64), ('ViT-B-16', 8)]."""
    models = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, batch = item.partition(":")
        if not batch.isdigit() or int(batch) < 1:
            raise ValueError(f"--models entries must be NAME:BATCH with a positive batch, got {item!r}")
        models.append((name, int(batch)))
    return models


def parse_mbdc_options(items: list[str]) -> dict[str, Any]:
    """['reduced_dim=16', 'heads=2'] -> {'reduced_dim': 16, 'heads': 2}."""
    options = {}
    for item in items:
        key, _, value = item.partition("=")
        if not value:
            raise ValueError(f"--mbdc takes KEY=VALUE (e.g. reduced_dim=16), got {item!r}")
        options[key] = json.loads(value)
    return options


# ---------------------------------------------------------------- model and batch


def build_task(name: str, mbdc: dict[str, Any], shared: bool, seed: int, kind: str = "dalip") -> tuple[Any, Any]:
    """(TrainingTask, TrainConfig) as `dalip train` builds them for `loss.kind` = `kind`.

    kind "clip" is the plain CLIP baseline: the same open_clip model (same seed, so the
    same weights), MBDC skipped and its heads frozen, the first-order loss only.
    """
    config = TrainConfig(model=ModelConfig(name=name, **mbdc), loss=LossConfig(kind=kind))
    torch.manual_seed(seed)
    task = TrainingTask.from_config(config)
    task.model.train()
    if shared and kind == "dalip":
        task.model.text_mbdc = task.model.image_mbdc  # one MBDC for both towers (an option, not the default)
    return task, config


def random_batch(clip, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (B, 3, H, W) and token ids (B, L): start, random words, end, padding."""
    generator = torch.Generator().manual_seed(seed)
    size = clip.visual.image_size
    height, width = (size, size) if isinstance(size, int) else size
    images = torch.randn(batch, 3, height, width, generator=generator)
    context = clip.context_length
    vocab = clip.vocab_size
    texts = torch.zeros(batch, context, dtype=torch.long)
    lengths = torch.randint(3, context + 1, (batch,), generator=generator)
    for row, length in enumerate(lengths.tolist()):
        texts[row, 0] = vocab - 2  # start of text
        texts[row, 1:length - 1] = torch.randint(1, vocab - 2, (length - 2,), generator=generator)
        texts[row, length - 1] = vocab - 1  # end of text: the largest id (argmax pooling)
    return images, texts


def training_step(task, config) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """One optimiser step exactly as the training loop takes it on one micro-batch
    (`dalip.train.step.OptimizerStep`: the task's forward under its autocast, backward through
    the grad scaler, unscale, clipping, AdamW over the run's parameter groups or a skip, the
    schedule, the temperature clamp); returns the loss."""
    stepper = OptimizerStep(task, config, total_steps=1_000_000)
    calls = iter(range(1_000_000_000))

    def step(images: torch.Tensor, texts: torch.Tensor) -> float:
        return stepper([(images, texts)], next(calls)).losses["loss"].item()

    return step


def bound_step(task, config, images: torch.Tensor, texts: torch.Tensor) -> Callable[[], float]:
    step_on = training_step(task, config)
    return lambda: step_on(images, texts)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- memory (subprocess)


def resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak() -> bool:
    """Reset the resident-set high-water mark (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: build one variant, run steps, report peak memory (KiB)."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    import open_clip  # noqa: F401  (imports are part of the baseline)

    import dalip  # noqa: F401

    after_imports = resident_kib()
    task, config = build_task(spec["model"], spec["mbdc"], spec["shared"], spec["seed"], spec["variant"])
    images, texts = random_batch(task.model.clip, spec["batch"], spec["seed"])
    step = bound_step(task, config, images, texts)
    after_build = resident_kib()
    peak_was_reset = reset_peak()
    for _ in range(spec["steps"]):
        step()
    peak = peak_kib()
    return {
        "after_imports_kib": after_imports,
        "after_build_kib": after_build,
        "peak_kib": peak,
        "step_peak_mib": (peak - after_build) / 1024,
        "total_peak_mib": (peak - after_imports) / 1024,
        "peak_was_reset": peak_was_reset,
    }


def worker_environment() -> dict[str, str]:
    """glibc malloc serves blocks >= 64 KiB by mmap and returns freed memory at once, so the
    resident set follows live tensors instead of what the heap happened to keep."""
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0",
            "MALLOC_TOP_PAD_": "0"}


def measure_memory(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one memory worker per spec, side by side (each its own process, so each
    process's resident set is its own), and return their results in order."""
    script = str(Path(__file__).resolve())
    workers = [
        subprocess.Popen([sys.executable, script, "--memory-worker", json.dumps(spec)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=worker_environment())
        for spec in specs
    ]
    results = []
    for spec, worker in zip(specs, workers):
        stdout, stderr = worker.communicate()
        if worker.returncode != 0:
            raise RuntimeError(f"memory worker failed for {spec}:\n{stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


# ---------------------------------------------------------------- one model


def bench_model(name: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    tasks = {kind: build_task(name, args.mbdc, args.shared_mbdc, args.seed, kind) for kind in ("clip", "dalip")}
    images, texts = random_batch(tasks["dalip"][0].model.clip, batch, args.seed)
    steps = {kind: bound_step(task, config, images, texts) for kind, (task, config) in tasks.items()}
    times = _common.time_interleaved(steps, repeats=args.repeats, warmup=args.warmup)
    model = tasks["dalip"][0].model
    base = count_parameters(model.clip)
    extra = count_parameters(model) - base
    del model, tasks, steps

    memory: dict[str, list[dict[str, Any]]] = {"clip": [], "dalip": []}
    for _ in range(args.memory_repeats):
        specs = [{"variant": variant, "model": name, "batch": batch, "mbdc": args.mbdc,
                  "shared": args.shared_mbdc, "steps": args.memory_steps, "seed": args.seed,
                  "threads": args.threads} for variant in memory]
        for spec, result in zip(specs, measure_memory(specs)):  # a fresh process each
            memory[spec["variant"]].append(result)

    def median_of(variant: str, key: str) -> float:
        return _common.summary([m[key] for m in memory[variant]])["median"]

    wall, cpu = times["wall"], times["cpu"]
    clip_time, dalip_time = _common.summary(wall["clip"]), _common.summary(wall["dalip"])
    cpu_ratio = _common.summary(cpu["dalip"])["median"] / _common.summary(cpu["clip"])["median"]
    step_mib = {v: median_of(v, "step_peak_mib") for v in memory}
    total_mib = {v: median_of(v, "total_peak_mib") for v in memory}
    time_ratio = dalip_time["median"] / clip_time["median"]
    memory_ratio = step_mib["dalip"] / step_mib["clip"]
    memory_ratio_total = total_mib["dalip"] / total_mib["clip"]
    time_target = TIME_TARGETS.get(name)
    return {
        "batch": batch,
        "time_ratio": round(time_ratio, 4),
        "time_ratio_paired_median": round(
            _common.summary(_common.paired_ratios(wall["dalip"], wall["clip"]))["median"], 4),
        "time_ratio_cpu": round(cpu_ratio, 4),
        "memory_ratio": round(memory_ratio, 4),
        "memory_ratio_total": round(memory_ratio_total, 4),
        "clip_seconds": {k: round(v, 4) for k, v in clip_time.items()},
        "dalip_seconds": {k: round(v, 4) for k, v in dalip_time.items()},
        "clip_step_peak_mib": round(step_mib["clip"], 1),
        "dalip_step_peak_mib": round(step_mib["dalip"], 1),
        "clip_total_peak_mib": round(total_mib["clip"], 1),
        "dalip_total_peak_mib": round(total_mib["dalip"], 1),
        "peak_was_reset": all(m["peak_was_reset"] for runs in memory.values() for m in runs),
        "base_parameters": base,
        "extra_parameters": extra,
        "extra_parameters_percent": round(100.0 * extra / base, 2),
        "static_training_state_mib": {
            "base": round(base * BYTES_PER_TRAINED_PARAMETER / 2**20, 1),
            "extra": round(extra * BYTES_PER_TRAINED_PARAMETER / 2**20, 1),
        },
        "time_target": time_target,
        "time_target_met": None if time_target is None else time_ratio <= time_target,
        "memory_target": MEMORY_TARGET,
        "memory_target_met": memory_ratio <= MEMORY_TARGET,
        "memory_total_target_met": memory_ratio_total <= MEMORY_TARGET,
    }


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated NAME:BATCH (default {DEFAULT_MODELS})")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps of each variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each variant first")
    parser.add_argument("--memory-steps", type=int, default=2,
                        help="steps per memory subprocess (>= 2: AdamW's states are created in the "
                             "first step, so only later steps hold them together with activations)")
    parser.add_argument("--memory-repeats", type=int, default=1, help="memory subprocesses per variant")
    parser.add_argument("--mbdc", action="append", default=[], metavar="KEY=VALUE",
                        help="MBDC option for create_model, e.g. reduced_dim=16 (repeatable)")
    parser.add_argument("--shared-mbdc", action="store_true",
                        help="measure the option of one MBDC shared by both towers")
    _common.add_run_arguments(parser, "dalip-tiny at batch 32 only, 3 repeats, 1 warm-up: under a minute")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.repeats, args.warmup = "dalip-tiny:32", 3, 1
    if args.memory_steps < 2:
        parser.error("--memory-steps must be >= 2 (the first step creates AdamW's states)")
    args.model_list = parse_models(args.models)
    args.mbdc = parse_mbdc_options(args.mbdc)
    return args


def variant_label(args: argparse.Namespace) -> str:
    parts = [f"{k}={v}" for k, v in args.mbdc.items()] + (["shared MBDC"] if args.shared_mbdc else [])
    return ", ".join(parts) or "design defaults"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = _common.load_average()
    models = {name: bench_model(name, batch, args) for name, batch in args.model_list}
    return {
        "models": models,
        "dalip_options": variant_label(args),
        "repeats": args.repeats,
        "memory_steps": args.memory_steps,
        "machine": {**_common.machine(), "load_average_before": load_before},
    }


def report(figures: dict[str, Any]) -> str:
    rows = []
    for name, m in figures["models"].items():
        rows.append([
            name, m["batch"], f"{m['clip_seconds']['median']:.3f}", f"{m['dalip_seconds']['median']:.3f}",
            f"**{m['time_ratio']:.3f}**", m["time_target"] or "-",
            f"{m['clip_step_peak_mib']:.0f}", f"{m['dalip_step_peak_mib']:.0f}",
            f"**{m['memory_ratio']:.3f}**", f"{m['clip_total_peak_mib']:.0f}",
            f"{m['dalip_total_peak_mib']:.0f}", f"{m['memory_ratio_total']:.3f}",
        ])
    header = ["model", "batch", "CLIP s", "DALIP s", "time ratio", "target",
              "CLIP step MiB", "DALIP step MiB", "memory ratio",
              "CLIP total MiB", "DALIP total MiB", "total ratio"]
    params = []
    for name, m in figures["models"].items():
        state = m["static_training_state_mib"]
        params.append([
            name, f"{m['base_parameters']:,}", f"{m['extra_parameters']:,}",
            f"{m['extra_parameters_percent']:.1f}%", f"{state['base']:.0f}", f"{state['extra']:.0f}",
        ])
    verdicts = []
    for name, m in figures["models"].items():
        time_verdict = "-" if m["time_target_met"] is None else ("met" if m["time_target_met"] else "MISSED")
        verdicts.append(
            f"- {name}: time ratio {m['time_ratio']:.3f} (target <= {m['time_target']}: {time_verdict}; "
            f"paired median {m['time_ratio_paired_median']:.3f}, CPU-time ratio {m['time_ratio_cpu']:.3f}); "
            f"memory ratio {m['memory_ratio']:.3f} "
            f"(target <= {m['memory_target']}: {'met' if m['memory_target_met'] else 'MISSED'}), "
            f"with parameters {m['memory_ratio_total']:.3f} "
            f"({'met' if m['memory_total_target_met'] else 'MISSED'})."
        )
    return "\n".join([
        f"DALIP options: {figures['dalip_options']}. One step = TrainingTask forward and loss, backward, "
        f"clipping and AdamW over the run's parameter groups, schedule, temperature clamp; "
        f"float32, train mode, random init and data; {figures['repeats']} interleaved timed steps "
        f"per variant (medians). Memory: fresh subprocess per variant, {figures['memory_steps']} steps; "
        "\"step\" = peak resident set (VmHWM, reset after building model, optimiser and batch) minus "
        "the resident set at that point, i.e. gradients + AdamW states + activations; \"total\" = the "
        "same peak minus the resident set after imports, i.e. parameters included.",
        "",
        _common.format_table(header, rows),
        "",
        _common.format_table(
            ["model", "base parameters", "DALIP extra", "extra %", "base param+grad+AdamW MiB",
             "extra param+grad+AdamW MiB"], params),
        "",
        *verdicts,
        f"- Load average before / after: {figures['machine']['load_average_before']} / "
        f"{figures['machine']['load_average']}.",
    ])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.memory_worker is not None:
        result = memory_worker(json.loads(args.memory_worker))
        print(json.dumps(result))
        return result
    figures = run(args)
    _common.publish(args, argv, "bench_step.py", "Training step, DALIP vs CLIP", figures, report(figures),
                    detail=figures["dalip_options"])
    return figures


if __name__ == "__main__":
    main()
