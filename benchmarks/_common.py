"""Helpers shared by the benchmark scripts: machine description, timing, memory, FLOPs,
RESULTS.md through `_results` (one section per benchmark, its newest run, under a generated
summary table).

Timings on a shared machine are noisy, so the scripts time two variants interleaved
(A B A B ...) and report medians and the median of the per-pair ratios, together with
the load average before and after.

Measurements take a device: "cpu" (perf_counter, process_time, the resident set) or
"cuda" (CUDA events, synchronised; `max_memory_allocated`). torch is imported where used,
so a process that must start fast can import this module.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _results import (  # noqa: F401 (the scripts' one import for RESULTS.md)
    RESULTS_PATH,
    Summary,
    record_section,
    section_fields,
    split_results,
    summary_table,
    with_current_summary,
)

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
MIB = 2**20
# Dense bf16 tensor-core peaks (NVIDIA data sheets print the 2:4-sparse figure, twice this),
# matched on whole words of the device name ("A10" is not "A10G" or "A100", "L4" not "L40S"),
# first match wins; None: a variant whose peak we have not checked (NVL boards clock lower).
PEAK_BF16_FLOPS: tuple[tuple[tuple[str, ...], float | None], ...] = (
    (("H100", "PCIe"), 756e12),
    (("H100", "NVL"), None),
    (("H100",), 989e12),  # SXM5: "NVIDIA H100 80GB HBM3"
    (("H200", "NVL"), None),
    (("H200",), 989e12),
    (("A100",), 312e12),
    (("L40S",), 362e12),
    (("L4",), 121e12),
    (("A10",), 125e12),
)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages, rounded."""
    return [round(value, 2) for value in os.getloadavg()]


def gpu_peak_flops(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU from its name (`torch.cuda.get_device_name`), or None."""
    words = {word.lower() for word in name.replace("-", " ").replace("_", " ").split()}
    for keys, flops in PEAK_BF16_FLOPS:
        if all(key.lower() in words for key in keys):
            return flops
    return None


def machine(device: str = "cpu") -> dict[str, Any]:
    """JSON-able description of the machine and software the figures come from; with
    device "cuda" also the GPU (name, count, CUDA version, dense bf16 peak FLOP/s or None)."""
    import open_clip
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "load_average": load_average(),
    }
    if device == "cuda":
        name = torch.cuda.get_device_name(torch.cuda.current_device())
        info.update(
            gpu=name,
            gpu_count=torch.cuda.device_count(),
            cuda=torch.version.cuda,
            gpu_peak_bf16_flops=gpu_peak_flops(name),
        )
    return info


def machine_line(info: dict[str, Any]) -> str:
    line = (
        f"{info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch "
        f"thread{'' if info['torch_threads'] == 1 else 's'}); "
        f"torch {info['torch']}, open_clip {info['open_clip']}, Python {info['python']}"
    )
    if "gpu" not in info:
        return line
    peak = (
        "unknown"
        if info["gpu_peak_bf16_flops"] is None
        else f"{info['gpu_peak_bf16_flops'] / 1e12:.0f} TFLOP/s"
    )
    return line + f"; GPU: {info['gpu']} (x{info['gpu_count']}, CUDA {info['cuda']}, dense bf16 peak {peak})"


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that reproduces a run, as typed from the repository root."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{script}", *map(shlex.quote, args)])


# ---------------------------------------------------------------- device, timing


def device_argument(text: str) -> str:
    """argparse type of --device: "cpu", or "cuda" where torch sees a GPU."""
    import torch

    if text not in DEVICES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DEVICES)}, got {text!r}")
    if text == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("cuda requested but torch.cuda.is_available() is false; use cpu")
    return text


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU, whose calls are synchronous."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def under_precision(function: Callable[[], Any], precision: str, device: str) -> Callable[[], Any]:
    """`function` run under the run's autocast: fp32 none, bf16 `torch.autocast(device, bfloat16)`
    (`dalip.model.devices.autocast`, the context training and evaluation use)."""
    from dalip.model.devices import autocast

    def run() -> Any:
        with autocast(precision, device):
            return function()

    return run


def timed_calls(
    calls: list[tuple[str, Callable[[], Any]]], device: str = "cpu"
) -> list[tuple[str, float, float]]:
    """Call each (name, function) in order; [(name, seconds, CPU seconds of this process)].

    CPU: wall-clock seconds per call. CUDA: seconds between CUDA events recorded right
    before and after each call; the device is synchronised before the first call (earlier
    work is not counted) and after the last, before the events are read. CPU seconds on
    CUDA are the host's time issuing the call (or waiting in it, where it synchronises)."""
    if device != "cuda":
        results = []
        for name, function in calls:
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            results.append((name, time.perf_counter() - wall, time.process_time() - cpu))
        return results
    import torch

    marks = []
    torch.cuda.synchronize()
    for name, function in calls:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        cpu = time.process_time()
        start.record()
        function()
        end.record()
        marks.append((name, start, end, time.process_time() - cpu))
    torch.cuda.synchronize()
    return [(name, start.elapsed_time(end) / 1000, cpu) for name, start, end, cpu in marks]  # ms -> s


def time_call(function: Callable[[], Any], device: str = "cpu") -> tuple[float, float]:
    """(seconds, CPU seconds of this process) of one call (see `timed_calls`)."""
    return timed_calls([("call", function)], device)[0][1:]


def time_interleaved(
    variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, device: str = "cpu"
) -> dict[str, dict[str, list[float]]]:
    """Seconds per call of each variant, calling them in turn (A B A B ...) after `warmup`
    untimed rounds; on CUDA timed by events (`timed_calls`).

    Interleaving spreads load from other processes over all variants alike. Returns
    {"wall": {name: [seconds, ...]}, "cpu": {name: [...]}}; CPU time (all threads of this
    process) counts work rather than waiting, so it is less disturbed by other users of
    the cores, though it includes threads spinning at barriers.
    """
    for _ in range(warmup):
        for function in variants.values():
            function()
    times: dict[str, dict[str, list[float]]] = {
        "wall": {n: [] for n in variants},
        "cpu": {n: [] for n in variants},
    }
    for name, seconds, cpu in timed_calls(
        [item for _ in range(repeats) for item in variants.items()], device
    ):
        times["wall"][name].append(seconds)
        times["cpu"][name].append(cpu)
    return times


# ---------------------------------------------------------------- memory


def resident_kib() -> int:
    """This process's resident set (VmRSS), KiB."""
    return _status_kib("VmRSS:")


def reset_peak() -> bool:
    """Reset the resident-set high-water mark (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_kib() -> int:
    """This process's resident-set high-water mark (VmHWM) since start or `reset_peak`, KiB."""
    return _status_kib("VmHWM:")


def _status_kib(field: str) -> int:
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith(field):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: the peak, not the current


def peak_memory(function: Callable[[], Any], device: str = "cpu") -> dict[str, Any]:
    """Run `function` once; MiB "before" it (in use), "peak", "region_peak" (peak - before: what
    the call needed at most), and "peak_was_reset" (False: the CPU peak is since start).
    CPU: this process's VmRSS before, VmHWM after resetting it (Linux). CUDA: tensors only:
    `memory_allocated()` before, `reset_peak_memory_stats()`, `max_memory_allocated()` after."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        function()
        torch.cuda.synchronize()
        peak, was_reset = torch.cuda.max_memory_allocated(), True
    else:
        gc.collect()  # garbage freed after `before` was read would hide part of the call's peak
        before = resident_kib() * 1024
        was_reset = reset_peak()
        function()
        peak = peak_kib() * 1024
    return {
        "before_mib": before / MIB,
        "peak_mib": peak / MIB,
        "region_peak_mib": (peak - before) / MIB,
        "peak_was_reset": was_reset,
    }


def process_peak_mib(device: str = "cpu") -> float:
    """The process's peak so far, MiB: resident-set high-water mark (CPU) or
    `max_memory_allocated` (CUDA, since start or the last reset)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / MIB
    return peak_kib() / 1024


# ---------------------------------------------------------------- FLOPs


def count_flops(function: Callable[[], Any]) -> int:
    """FLOPs of one call of `function`, counted by `torch.utils.flop_counter.FlopCounterMode`
    (shape formulas for matmuls, convolutions and attention; other ops count zero); a call
    that runs backward counts its backward too. The call runs for real (an optimiser
    step in it updates the weights)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return counter.get_total_flops()


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s (`flops` in `seconds`) over the peak;
    None where the peak is unknown (CPU, an unlisted GPU)."""
    if peak is None or seconds <= 0:
        return None
    return flops / seconds / peak


def paired_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerator, denominator)]


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of a list of timings."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def run_header(script: str, argv: list[str] | None, info: dict[str, Any]) -> str:
    """The lines every recorded section starts with: date, machine, command, load."""
    return "\n".join(
        [
            f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- machine: {machine_line(info)}",
            f"- command: `{command_line(script, argv)}`",
        ]
    )


def add_run_arguments(parser: Any, quick_help: str) -> None:
    """The flags every benchmark shares: --device, --precision, --threads, --seed, --quick,
    --json, --no-record. --device cuda is refused (one-line usage error) without a GPU."""
    parser.add_argument(
        "--device",
        type=device_argument,
        default="cpu",
        metavar="{cpu,cuda}",
        help="where the measured code runs (default cpu)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32, or bf16: the timed region under bfloat16 autocast (default fp32)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")


def device_label(args: Any, info: dict[str, Any]) -> str:
    """ ", cuda NVIDIA H200, bf16"-style part of a section title; "" for CPU float32 (CPU
    sections keep their titles)."""
    cuda = f", cuda {info.get('gpu', '')}".rstrip() if getattr(args, "device", "cpu") == "cuda" else ""
    return cuda + (f", {args.precision}" if getattr(args, "precision", "fp32") != "fp32" else "")


def conditions(figures: dict[str, Any]) -> str:
    """How a report names its setting: "float32" or "bfloat16 autocast", "on <GPU>" on CUDA."""
    precision = "float32" if figures.get("precision", "fp32") == "fp32" else "bfloat16 autocast"
    return precision + (
        f" on {figures['machine'].get('gpu', 'cuda')}" if figures.get("device") == "cuda" else ""
    )


def section_title(args: Any, script: str, title: str, info: dict[str, Any], detail: str = "") -> str:
    """`title (script[, N threads][, device][, precision][; detail][, quick])`: named by the
    command's flags, so that a rerun of the same command replaces its own section; the thread
    count only where --threads pinned it (torch's default follows the machine's cores)."""
    threads = getattr(args, "threads", None)
    pinned = f", {threads} thread{'' if threads == 1 else 's'}" if threads else ""
    detail = f"; {detail}" if detail else ""
    quick = ", quick" if getattr(args, "quick", False) else ""
    return f"{title} ({script}{pinned}{device_label(args, info)}{detail}{quick})"


def publish(
    args: Any,
    argv: list[str] | None,
    script: str,
    title: str,
    figures: dict[str, Any],
    report: str,
    summary: Summary,
    detail: str = "",
) -> None:
    """Print the figures (table, or JSON with --json) and, unless --no-record, write the
    RESULTS.md section `section_title(...)` with `summary` as its row of the table."""
    if args.json:
        print_json(figures)
    else:
        print(report)
    if not args.no_record:
        heading = section_title(args, script, title, figures["machine"], detail)
        record_section(heading, run_header(script, argv, figures["machine"]) + "\n\n" + report, summary)


def print_json(figures: dict[str, Any]) -> None:
    print(json.dumps(figures, indent=2, sort_keys=False))
