"""Speed of the embedded dataset generator (`dalip make-dataset`), on one core.

Three figures, each a median over interleaved repeats:
- render plant: `render_leaf` only (pose sampling + drawing + lighting), images/s;
- render general: the general-domain pictures, images/s;
- make_dataset: the whole generator (render, JPEG encode, image folder + CSV + tar
  shards + manifest written to a temporary folder), images/s.
Rates are given per wall-clock second and per CPU second of this process (the machine
may be shared; CPU time is what one core spends). Target: >= 300 images/s at 64 px.

    python benchmarks/bench_generator.py              # default dataset (2520 images), 3 repeats
    python benchmarks/bench_generator.py --quick --json --no-record
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from dalip.data.synthetic import make_dataset  # noqa: E402
from dalip.data.synthetic.general import GENERAL_CLASSES, render_general  # noqa: E402
from dalip.data.synthetic.plants import make_species  # noqa: E402
from dalip.data.synthetic.render import render_leaf, sample_pose  # noqa: E402

TARGET_IMAGES_PER_SECOND = 300


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--image-size", type=int, default=64, help="image side in pixels (default %(default)s)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats per figure (default %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="a small dataset and one repeat (smoke test)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    return parser.parse_args(argv)


def timed(function: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, images) of one call that returns its image count."""
    wall, cpu = time.perf_counter(), time.process_time()
    images = function()
    return time.perf_counter() - wall, time.process_time() - cpu, images


def workloads(size: int, quick: bool) -> dict[str, Callable[[], int]]:
    """name -> a function doing the work once and returning how many images it made."""
    species = make_species(24, seed=0)
    count = 100 if quick else 600
    per_class = (4, 1, 2) if quick else (40, 10, 20)

    def plant() -> int:
        rng = np.random.default_rng(0)
        for i in range(count):
            render_leaf(species[i % len(species)].traits, sample_pose(rng), size)
        return count

    def general() -> int:
        rng = np.random.default_rng(0)
        for i in range(count):
            render_general(GENERAL_CLASSES[i % len(GENERAL_CLASSES)][0], sample_pose(rng), size)
        return count

    def dataset() -> int:
        with tempfile.TemporaryDirectory(prefix="dalip-bench-") as out:
            manifest = make_dataset(
                out,
                seed=0,
                image_size=size,
                train_per_class=per_class[0],
                val_per_class=per_class[1],
                test_per_class=per_class[2],
            )
        return sum(manifest["counts"].values())

    return {"render plant": plant, "render general": general, "make_dataset": dataset}


def measure(jobs: dict[str, Callable[[], int]], repeats: int) -> dict[str, dict[str, float]]:
    """Median images/s per wall and CPU second of each job, interleaved over repeats."""
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            runs[name].append(timed(job))
    return {
        name: {
            "images": results[0][2],
            "images_per_s_wall": statistics.median(n / wall for wall, _, n in results),
            "images_per_s_cpu": statistics.median(n / cpu for _, cpu, n in results),
        }
        for name, results in runs.items()
    }


def report(figures: dict[str, Any], size: int) -> str:
    rows = [
        [name, f["images"], f"{f['images_per_s_wall']:.0f}", f"{f['images_per_s_cpu']:.0f}"]
        for name, f in figures.items()
    ]
    table = _common.format_table(["workload", "images", "images/s (wall)", "images/s (CPU)"], rows)
    rate = figures["make_dataset"]["images_per_s_cpu"]
    verdict = "meets" if rate >= TARGET_IMAGES_PER_SECOND else "MISSES"
    return (
        f"{table}\n\nWhole generator at {size} px: {rate:.0f} images per CPU second, "
        f"{verdict} the target of {TARGET_IMAGES_PER_SECOND}."
    )


def summary(figures: dict[str, Any], size: int) -> _common.Summary:
    """RESULTS.md's row: the whole generator's images per CPU second."""
    rate = figures["make_dataset"]["images_per_s_cpu"]
    return _common.Summary(
        f"images the data generator writes per CPU second ({size} px)",
        f"{rate:.0f} images per CPU second (make_dataset)",
        f">= {TARGET_IMAGES_PER_SECOND}: {'met' if rate >= TARGET_IMAGES_PER_SECOND else 'MISSED'}",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    info = _common.machine()
    jobs = workloads(args.image_size, args.quick)
    figures = measure(jobs, 1 if args.quick else args.repeats)
    info["load_average_after"] = _common.load_average()
    text = report(figures, args.image_size)
    if args.json:
        _common.print_json({"image_size": args.image_size, "figures": figures, "machine": info})
    else:
        print(text)
    if not args.no_record:
        header = _common.run_header("bench_generator.py", argv, info)
        extra = (
            f"- platform: {platform.platform()}; one process (the generator is single-threaded)\n"
            f"- load average before / after: {info['load_average']} / {info['load_average_after']}"
        )
        _common.record_section(
            "Data generator", f"{header}\n{extra}\n\n{text}", summary(figures, args.image_size)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
