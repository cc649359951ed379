"""One training step, DALIP against plain CLIP on the same open_clip model and batch.

Both variants run the step `dalip train` runs: `dalip.train.step.OptimizerStep` (the
TrainingTask built from a TrainConfig, its forward under the run's autocast, backward through
the grad scaler, unscale, clipping, AdamW over the run's parameter groups or a skip on the
device, the schedule, the temperature clamp), the very function the training loop calls.
DALIP: `loss.kind: dalip` (first- and second-order features, both loss terms). CLIP:
`loss.kind: clip` (MBDC skipped, heads frozen, first-order loss only). Random initialisation
(no download), random images and token ids, train mode, `--precision` fp32 or bf16,
`--device` cpu or cuda.

Time: both variants in one process, interleaved (CLIP DALIP CLIP DALIP ...), medians; on
CUDA timed with CUDA events after warm-up, the steps queued back to back as the training
loop queues them (nothing reads a value between steps). MFU: the step's FLOPs (forward and
backward, counted by torch's FlopCounterMode) per second over the GPU's dense bf16 peak.
Host syncs: what one step makes the host wait for (dalip.train.host_syncs; 0 expected).
Peak memory: each variant in a fresh subprocess (the two run side by side on CPU, one after
the other on CUDA). CPU: glibc malloc set to return freed memory at once; the resident-set
high-water mark (VmHWM) is reset after the model, optimiser and batch are built, a few steps
run, and the new high-water mark minus the resident set before them is the step's peak
(gradients, AdamW states, activations); the peak over the resident set right after the
imports (parameters included) is reported too. CUDA: the same with `memory_allocated` /
`reset_peak_memory_stats` / `max_memory_allocated` (tensors only; "total" counts from an
empty device).

    python benchmarks/bench_step.py                       # dalip-tiny @ 64, ViT-B-16 @ 8
    python benchmarks/bench_step.py --models ViT-B-16:8 --shared-mbdc
    python benchmarks/bench_step.py --device cuda --precision bf16 --models ViT-B-16:256
    python benchmarks/bench_step.py --quick --json --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from dalip.config import LossConfig, ModelConfig, TrainConfig  # noqa: E402
from dalip.model.factory import TINY_ARCHITECTURES  # noqa: E402
from dalip.train.host_syncs import HostSyncCounter  # noqa: E402
from dalip.train.step import OptimizerStep  # noqa: E402
from dalip.train.task import TrainingTask  # noqa: E402

DEFAULT_MODELS = "dalip-tiny:64,ViT-B-16:8"
# One tiny member of each tower family (dalip.model.tiny_towers), at one batch size.
FAMILY_MODELS = ",".join(f"{name}:32" for name in TINY_ARCHITECTURES)
TIME_TARGETS = {"ViT-B-16": 1.05, "dalip-tiny": 1.15}
MEMORY_TARGET = 1.10
# On a GPU (the GPU-ready issue): ViT-B-16, 224 px, bf16.
GPU_TIME_TARGET, GPU_MEMORY_TARGET, GPU_MFU_TARGET = 1.10, 1.15, 0.40
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


def build_task(
    name: str,
    mbdc: dict[str, Any],
    shared: bool,
    seed: int,
    kind: str = "dalip",
    precision: str = "fp32",
    device: str = "cpu",
) -> tuple[Any, Any]:
    """(TrainingTask, TrainConfig) as `dalip train` builds them for `loss.kind` = `kind`, on
    `device`, in `precision`.

    kind "clip" is the plain CLIP baseline: the same open_clip model (same seed, so the
    same weights), MBDC skipped and its heads frozen, the first-order loss only.
    """
    model = ModelConfig(name=name, mbdc=replace(ModelConfig().mbdc, **mbdc))
    config = TrainConfig(model=model, loss=LossConfig(kind=kind), precision=precision, device=device)
    torch.manual_seed(seed)
    task = TrainingTask.from_config(config, device)
    task.model.train()
    if shared and kind == "dalip":
        task.model.text_mbdc = task.model.image_mbdc  # one MBDC for both towers (an option, not the default)
    return task, config


def random_batch(clip, batch: int, seed: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (B, 3, H, W) and token ids (B, L): start, random words, end, padding."""
    generator = torch.Generator().manual_seed(seed)
    size = clip.visual.image_size
    height, width = (size, size) if isinstance(size, int) else size
    images = torch.randn(batch, 3, height, width, generator=generator)
    text = getattr(clip, "text", clip)  # CustomTextCLIP and CoCa keep the text tower apart
    context = text.context_length
    vocab = text.token_embedding.num_embeddings
    texts = torch.zeros(batch, context, dtype=torch.long)
    lengths = torch.randint(3, context + 1, (batch,), generator=generator)
    for row, length in enumerate(lengths.tolist()):
        texts[row, 0] = vocab - 2  # start of text
        texts[row, 1 : length - 1] = torch.randint(1, vocab - 2, (length - 2,), generator=generator)
        texts[row, length - 1] = vocab - 1  # end of text: the largest id (argmax pooling)
    return images.to(device), texts.to(device)


def device_step(task, config) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One optimiser step exactly as the training loop takes it on one micro-batch
    (`dalip.train.step.OptimizerStep`); returns the loss as a device tensor (nothing waits)."""
    stepper = OptimizerStep(task, config, total_steps=1_000_000)
    calls = iter(range(1_000_000_000))

    def step(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        return stepper([(images, texts)], next(calls)).losses["loss"]

    return step


def training_step(task, config) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """`device_step`, with the loss read on the host (the call ends when the device is done)."""
    step_on = device_step(task, config)
    return lambda images, texts: step_on(images, texts).item()


def bound_step(task, config, images: torch.Tensor, texts: torch.Tensor) -> Callable[[], torch.Tensor]:
    step_on = device_step(task, config)
    return lambda: step_on(images, texts)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- memory (subprocess)


def memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: build one variant, run steps, report peak memory (KiB)."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    import open_clip  # noqa: F401  (imports are part of the baseline)

    import dalip  # noqa: F401

    device = spec.get("device", "cpu")
    after_imports = _in_use_kib(device)
    task, config = build_task(
        spec["model"],
        spec["mbdc"],
        spec["shared"],
        spec["seed"],
        spec["variant"],
        spec.get("precision", "fp32"),
        device,
    )
    images, texts = random_batch(task.model.clip, spec["batch"], spec["seed"], device)
    step = bound_step(task, config, images, texts)

    def steps() -> None:
        for _ in range(spec["steps"]):
            step()

    measured = _common.peak_memory(steps, device)
    after_build, peak = measured["before_mib"] * 1024, measured["peak_mib"] * 1024
    return {
        "after_imports_kib": after_imports,
        "after_build_kib": after_build,
        "peak_kib": peak,
        "step_peak_mib": (peak - after_build) / 1024,
        "total_peak_mib": (peak - after_imports) / 1024,
        "peak_was_reset": measured["peak_was_reset"],
    }


def _in_use_kib(device: str) -> float:
    return torch.cuda.memory_allocated() / 1024 if device == "cuda" else _common.resident_kib()


def worker_environment() -> dict[str, str]:
    """glibc malloc serves blocks >= 64 KiB by mmap and returns freed memory at once, so the
    resident set follows live tensors instead of what the heap happened to keep."""
    return {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "MALLOC_TRIM_THRESHOLD_": "0",
        "MALLOC_TOP_PAD_": "0",
    }


def measure_memory(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one memory worker per spec, each its own process (so each process's resident set, or
    CUDA allocator, is its own): side by side on CPU, one at a time on a GPU (they would share
    it); their results in order."""
    script = str(Path(__file__).resolve())

    def start(spec: dict[str, Any]) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, script, "--memory-worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=worker_environment(),
        )

    side_by_side = all(spec.get("device", "cpu") == "cpu" for spec in specs)
    workers = [start(spec) for spec in specs] if side_by_side else []
    results = []
    for index, spec in enumerate(specs):
        worker = workers[index] if side_by_side else start(spec)
        stdout, stderr = worker.communicate()
        if worker.returncode != 0:
            raise RuntimeError(f"memory worker failed for {spec}:\n{stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


# ---------------------------------------------------------------- one model


def bench_model(name: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    device, precision = args.device, args.precision
    tasks = {
        kind: build_task(name, args.mbdc, args.shared_mbdc, args.seed, kind, precision, device)
        for kind in ("clip", "dalip")
    }
    images, texts = random_batch(tasks["dalip"][0].model.clip, batch, args.seed, device)
    for task, _ in tasks.values() if args.compile else ():
        task.compile()
    steps = {kind: bound_step(task, config, images, texts) for kind, (task, config) in tasks.items()}
    first_step = {
        kind: _common.time_call(step, device)[0] for kind, step in steps.items()
    }  # compiles, if asked
    times = _common.time_interleaved(steps, repeats=args.repeats, warmup=args.warmup, device=device)
    flops = {kind: _common.count_flops(step) for kind, step in steps.items()}
    syncs = {kind: host_syncs(step, device) for kind, step in steps.items()}
    model = tasks["dalip"][0].model
    base = count_parameters(model.clip)
    extra = count_parameters(model) - base
    del model, tasks, steps
    if device == "cuda":
        torch.cuda.empty_cache()

    memory: dict[str, list[dict[str, Any]]] = {"clip": [], "dalip": []}
    for _ in range(args.memory_repeats):
        specs = [
            {
                "variant": variant,
                "model": name,
                "batch": batch,
                "mbdc": args.mbdc,
                "shared": args.shared_mbdc,
                "steps": args.memory_steps,
                "seed": args.seed,
                "threads": args.threads,
                "device": device,
                "precision": precision,
            }
            for variant in memory
        ]
        for spec, result in zip(specs, measure_memory(specs)):  # a fresh process each
            memory[spec["variant"]].append(result)
    return {
        **summarise(name, batch, times, memory, flops, syncs, base, extra, args),
        "first_step_seconds": {kind: round(seconds, 3) for kind, seconds in first_step.items()},
    }


def host_syncs(step: Callable[[], Any], device: str) -> int:
    """Host syncs one (warm) step makes (dalip.train.host_syncs), the device caught up first."""
    _common.synchronize(device)
    with HostSyncCounter() as counter:
        step()
    _common.synchronize(device)
    return counter.total


def summarise(
    name: str,
    batch: int,
    times: dict[str, Any],
    memory: dict[str, list[dict[str, Any]]],
    flops: dict[str, int],
    syncs: dict[str, int],
    base: int,
    extra: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
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
    on_gpu = args.device == "cuda"
    time_target = GPU_TIME_TARGET if on_gpu else TIME_TARGETS.get(name)
    memory_target = GPU_MEMORY_TARGET if on_gpu else MEMORY_TARGET
    peak = args.machine.get("peak_bf16_flops")
    seconds = {"clip": clip_time["median"], "dalip": dalip_time["median"]}
    mfu = {v: _common.mfu(flops[v], seconds[v], peak) for v in seconds}
    return {
        "batch": batch,
        "time_ratio": round(time_ratio, 4),
        "time_ratio_paired_median": round(
            _common.summary(_common.paired_ratios(wall["dalip"], wall["clip"]))["median"], 4
        ),
        "time_ratio_cpu": round(cpu_ratio, 4),
        "memory_ratio": round(memory_ratio, 4),
        "memory_ratio_total": round(memory_ratio_total, 4),
        "clip_seconds": {k: round(v, 4) for k, v in clip_time.items()},
        "dalip_seconds": {k: round(v, 4) for k, v in dalip_time.items()},
        "images_per_second": {v: round(batch / seconds[v], 1) for v in seconds},
        "flops_per_step": flops,
        "mfu": {v: None if m is None else round(m, 4) for v, m in mfu.items()},
        "host_syncs_per_step": syncs,
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
        "memory_target": memory_target,
        "memory_target_met": memory_ratio <= memory_target,
        "memory_total_target_met": memory_ratio_total <= memory_target,
        "mfu_target": GPU_MFU_TARGET if on_gpu else None,
        "mfu_target_met": None if not on_gpu or mfu["clip"] is None else mfu["clip"] >= GPU_MFU_TARGET,
    }


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default=DEFAULT_MODELS, help=f"comma-separated NAME:BATCH (default {DEFAULT_MODELS})"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed steps of each variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each variant first")
    parser.add_argument(
        "--memory-steps",
        type=int,
        default=2,
        help="steps per memory subprocess (>= 2: AdamW's states are created in the "
        "first step, so only later steps hold them together with activations)",
    )
    parser.add_argument("--memory-repeats", type=int, default=1, help="memory subprocesses per variant")
    parser.add_argument(
        "--mbdc",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="MBDC option for create_model, e.g. reduced_dim=16 (repeatable)",
    )
    parser.add_argument(
        "--shared-mbdc", action="store_true", help="measure the option of one MBDC shared by both towers"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="time the steps with the forward compiled (`compile: true`); the first step, "
        "reported apart, compiles; memory is measured eager",
    )
    parser.add_argument(
        "--families",
        action="store_true",
        help=f"time one tiny model of each tower family instead ({FAMILY_MODELS})",
    )
    _common.add_run_arguments(parser, "dalip-tiny at batch 32 only, 3 repeats, 1 warm-up: under a minute")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.families:
        args.models = FAMILY_MODELS
    if args.quick:
        args.models, args.repeats, args.warmup = "dalip-tiny:32", 3, 1
    if args.memory_steps < 2:
        parser.error("--memory-steps must be >= 2 (the first step creates AdamW's states)")
    args.model_list = parse_models(args.models)
    args.mbdc = parse_mbdc_options(args.mbdc)
    return args


def variant_label(args: argparse.Namespace) -> str:
    if args.models == DEFAULT_MODELS or args.quick:
        models = []
    else:
        models = ["tower families" if args.models == FAMILY_MODELS else f"models {args.models}"]
    parts = (
        models
        + [f"{k}={v}" for k, v in args.mbdc.items()]
        + (["shared MBDC"] if args.shared_mbdc else [])
        + (["compiled"] if getattr(args, "compile", False) else [])
    )
    return ", ".join(parts) or "design defaults"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = _common.load_average()
    args.machine = _common.machine(args.device)
    if args.device == "cuda":
        from dalip.model.devices import configure_cuda

        configure_cuda(tf32=True)  # as `dalip train` starts on a GPU
    models = {name: bench_model(name, batch, args) for name, batch in args.model_list}
    return {
        "models": models,
        "dalip_options": variant_label(args),
        "repeats": args.repeats,
        "memory_steps": args.memory_steps,
        "device": args.device,
        "precision": args.precision,
        "machine": {**_common.machine(args.device), "load_average_before": load_before},
    }


def report(figures: dict[str, Any]) -> str:
    rows = []
    for name, m in figures["models"].items():
        rows.append(
            [
                name,
                m["batch"],
                f"{m['clip_seconds']['median']:.3f}",
                f"{m['dalip_seconds']['median']:.3f}",
                f"**{m['time_ratio']:.3f}**",
                m["time_target"] or "-",
                f"{m['clip_step_peak_mib']:.0f}",
                f"{m['dalip_step_peak_mib']:.0f}",
                f"**{m['memory_ratio']:.3f}**",
                f"{m['clip_total_peak_mib']:.0f}",
                f"{m['dalip_total_peak_mib']:.0f}",
                f"{m['memory_ratio_total']:.3f}",
            ]
        )
    header = [
        "model",
        "batch",
        "CLIP s",
        "DALIP s",
        "time ratio",
        "target",
        "CLIP step MiB",
        "DALIP step MiB",
        "memory ratio",
        "CLIP total MiB",
        "DALIP total MiB",
        "total ratio",
    ]
    params = []
    for name, m in figures["models"].items():
        state = m["static_training_state_mib"]
        params.append(
            [
                name,
                f"{m['base_parameters']:,}",
                f"{m['extra_parameters']:,}",
                f"{m['extra_parameters_percent']:.1f}%",
                f"{state['base']:.0f}",
                f"{state['extra']:.0f}",
            ]
        )
    throughput = []
    for name, m in figures["models"].items():
        mfu = {v: "-" if m["mfu"][v] is None else f"{100 * m['mfu'][v]:.1f}%" for v in ("clip", "dalip")}
        throughput.append(
            [
                name,
                f"{m['first_step_seconds']['clip']:.2f}",
                f"{m['first_step_seconds']['dalip']:.2f}",
                f"{m['images_per_second']['clip']:.1f}",
                f"{m['images_per_second']['dalip']:.1f}",
                f"{m['flops_per_step']['clip'] / 1e9:.1f}",
                f"{m['flops_per_step']['dalip'] / 1e9:.1f}",
                mfu["clip"],
                mfu["dalip"],
                m["host_syncs_per_step"]["clip"],
                m["host_syncs_per_step"]["dalip"],
            ]
        )
    verdicts = []
    for name, m in figures["models"].items():
        time_verdict = "-" if m["time_target_met"] is None else ("met" if m["time_target_met"] else "MISSED")
        mfu_verdict = (
            ""
            if m["mfu_target"] is None
            else (f"; CLIP MFU target >= {m['mfu_target']:.0%}: {'met' if m['mfu_target_met'] else 'MISSED'}")
        )
        verdicts.append(
            f"- {name}: time ratio {m['time_ratio']:.3f} (target <= {m['time_target']}: {time_verdict}; "
            f"paired median {m['time_ratio_paired_median']:.3f}, CPU-time ratio {m['time_ratio_cpu']:.3f}); "
            f"memory ratio {m['memory_ratio']:.3f} "
            f"(target <= {m['memory_target']}: {'met' if m['memory_target_met'] else 'MISSED'}), "
            f"with parameters {m['memory_ratio_total']:.3f} "
            f"({'met' if m['memory_total_target_met'] else 'MISSED'}){mfu_verdict}."
        )
    on_gpu = figures.get("device") == "cuda"
    memory = (
        '"step" = peak of `max_memory_allocated` (reset after building model, optimiser and batch) '
        "minus `memory_allocated` at that point, i.e. gradients + AdamW states + activations; "
        '"total" = the same peak, parameters included'
        if on_gpu
        else '"step" = peak resident set (VmHWM, reset after building model, optimiser and batch) minus '
        'the resident set at that point, i.e. gradients + AdamW states + activations; "total" = the '
        "same peak minus the resident set after imports, i.e. parameters included"
    )
    return "\n".join(
        [
            f"DALIP options: {figures['dalip_options']}. One step = `dalip.train.step.OptimizerStep`, the "
            f"loop's own: TrainingTask forward and loss, backward, unscale, clipping and fused AdamW over the "
            f"run's parameter groups (skipped on the device when not finite), schedule, temperature clamp; "
            f"{_common.conditions(figures)}, train mode, random init and data; {figures['repeats']} interleaved "
            f"timed steps per variant (medians{', CUDA events' if on_gpu else ''}). Memory: fresh subprocess "
            f"per variant, {figures['memory_steps']} steps; {memory}.",
            "",
            _common.format_table(header, rows),
            "",
            _common.format_table(
                [
                    "model",
                    "CLIP first step s",
                    "DALIP first step s",
                    "CLIP img/s",
                    "DALIP img/s",
                    "CLIP GFLOP/step",
                    "DALIP GFLOP/step",
                    "CLIP MFU",
                    "DALIP MFU",
                    "CLIP host syncs",
                    "DALIP host syncs",
                ],
                throughput,
            ),
            "",
            _common.format_table(
                [
                    "model",
                    "base parameters",
                    "DALIP extra",
                    "extra %",
                    "base param+grad+AdamW MiB",
                    "extra param+grad+AdamW MiB",
                ],
                params,
            ),
            "",
            *verdicts,
            f"- Load average before / after: {figures['machine']['load_average_before']} / "
            f"{figures['machine']['load_average']}.",
        ]
    )


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "MISSED")


def _model_verdicts(name: str, m: dict[str, Any]) -> str:
    verdicts = (
        [] if m["time_target"] is None else [f"time <= {m['time_target']}: {_verdict(m['time_target_met'])}"]
    )
    verdicts.append(f"memory <= {m['memory_target']}: {_verdict(m['memory_target_met'])}")
    if m.get("mfu_target") is not None:
        verdicts.append(f"CLIP MFU >= {m['mfu_target']:.0%}: {_verdict(m['mfu_target_met'])}")
    return f"{name}: " + ", ".join(verdicts)


def summary(figures: dict[str, Any]) -> _common.Summary:
    """RESULTS.md's row: each model's time and memory ratio and verdicts; ranges beyond 3 models."""
    models = figures["models"]
    timed = [(name, m) for name, m in models.items() if m["time_target"] is not None]
    time_verdicts = [
        f"{name}: time <= {m['time_target']}: {_verdict(m['time_target_met'])}" for name, m in timed
    ]
    if len(models) <= 3:
        headline = "; ".join(
            f"{name}: time {m['time_ratio']:.3f}, memory {m['memory_ratio']:.3f}"
            for name, m in models.items()
        )
        target = "; ".join(_model_verdicts(name, m) for name, m in models.items())
    else:
        times = [m["time_ratio"] for m in models.values()]
        memory = [m["memory_ratio"] for m in models.values()]
        headline = (
            f"{len(models)} models: time {min(times):.3f}-{max(times):.3f}, "
            f"memory {min(memory):.3f}-{max(memory):.3f}"
        )
        met = sum(bool(m["memory_target_met"]) for m in models.values())
        limits = sorted({m["memory_target"] for m in models.values()})
        target = "; ".join(
            [f"memory <= {'/'.join(map(str, limits))}: met in {met} of {len(models)}", *time_verdicts]
        )
    return _common.Summary(
        f"training step time and memory, DALIP / CLIP ({figures['dalip_options']})", headline, target
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.memory_worker is not None:
        result = memory_worker(json.loads(args.memory_worker))
        print(json.dumps(result))
        return result
    figures = run(args)
    _common.publish(
        args,
        argv,
        "bench_step.py",
        "Training step, DALIP vs CLIP",
        figures,
        report(figures),
        summary(figures),
        detail=figures["dalip_options"],
    )
    return figures


if __name__ == "__main__":
    main()
