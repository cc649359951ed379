"""Helpers shared by the benchmark scripts: machine description, timing, RESULTS.md.

Timings on a shared machine are noisy, so the scripts time two variants interleaved
(A B A B ...) and report medians and the median of the per-pair ratios, together with
the load average before and after.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_HEADER = (
    "# Benchmark results\n\n"
    "Appended by the scripts in this folder (`--no-record` skips it). Each section names the\n"
    "exact command, the machine and the load average while it ran; timings come from\n"
    "interleaved repeats (A B A B ...) and are medians.\n"
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


def machine() -> dict[str, Any]:
    """JSON-able description of the machine and software the figures come from."""
    import open_clip
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "load_average": load_average(),
    }


def machine_line(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch "
        f"thread{'' if info['torch_threads'] == 1 else 's'}); "
        f"torch {info['torch']}, open_clip {info['open_clip']}, Python {info['python']}"
    )


def threads_label() -> str:
    import torch

    threads = torch.get_num_threads()
    return f"{threads} thread" + ("" if threads == 1 else "s")


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that reproduces a run, as typed from the repository root."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{script}", *map(shlex.quote, args)])


def time_call(function: Callable[[], Any]) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_interleaved(
    variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, dict[str, list[float]]]:
    """Seconds per call of each variant, calling them in turn (A B A B ...).

    Interleaving spreads load from other processes over all variants alike. Returns
    {"wall": {name: [seconds, ...]}, "cpu": {name: [...]}}; CPU time (all threads of this
    process) counts work rather than waiting, so it is less disturbed by other users of
    the cores, though it includes threads spinning at barriers.
    """
    for _ in range(warmup):
        for function in variants.values():
            function()
    times: dict[str, dict[str, list[float]]] = {"wall": {}, "cpu": {}}
    for name in variants:
        times["wall"][name], times["cpu"][name] = [], []
    for _ in range(repeats):
        for name, function in variants.items():
            wall, cpu = time_call(function)
            times["wall"][name].append(wall)
            times["cpu"][name].append(cpu)
    return times


def paired_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerator, denominator)]


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of a list of timings."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def record_section(title: str, body: str, path: Path = RESULTS_PATH) -> None:
    """Write `## title` + body into RESULTS.md.

    A section with the same title (an earlier run of the same benchmark) is replaced in
    place; every other section is kept byte for byte. The file is re-read under a lock
    right before writing, so sections that others appended meanwhile survive.
    """
    heading = f"## {title}"
    section = f"{heading}\n\n{body.strip()}\n"
    path.touch(exist_ok=True)
    with open(path, "r+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        text = handle.read() or RESULTS_HEADER
        lines = text.splitlines(keepends=True)
        start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
        if start is None:
            text = text.rstrip("\n") + "\n\n" + section
        else:
            end = next(
                (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
            )
            tail = "".join(lines[end:])
            text = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
        handle.seek(0)
        handle.write(text)
        handle.truncate()
        fcntl.flock(handle, fcntl.LOCK_UN)


def run_header(script: str, argv: list[str] | None, info: dict[str, Any]) -> str:
    """The lines every recorded section starts with: date, machine, command, load."""
    return "\n".join([
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {machine_line(info)}",
        f"- command: `{command_line(script, argv)}`",
    ])


def add_run_arguments(parser: Any, quick_help: str) -> None:
    """The flags every benchmark shares: --threads, --seed, --quick, --json, --no-record."""
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")


def publish(args: Any, argv: list[str] | None, script: str, title: str, figures: dict[str, Any],
            report: str, detail: str = "") -> None:
    """Print the figures (table, or JSON with --json) and, unless --no-record, write the
    RESULTS.md section `title (script, threads[; detail][, quick])`."""
    if args.json:
        print_json(figures)
    else:
        print(report)
    if not args.no_record:
        detail = f"; {detail}" if detail else ""
        heading = f"{title} ({script}, {threads_label()}{detail}{', quick' if args.quick else ''})"
        record_section(heading, run_header(script, argv, figures["machine"]) + "\n\n" + report)


def print_json(figures: dict[str, Any]) -> None:
    print(json.dumps(figures, indent=2, sort_keys=False))
