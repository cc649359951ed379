"""Whole training runs: `dalip train` against open_clip_train's own loop, same model and data.

What is compared: three commands, each in a fresh Python process, on the same generated
CSV (`make_dataset`'s plant training split, absolute image paths, rows repeated to exactly
steps x batch), the same architecture (`dalip-tiny`, registered with open_clip by
`open_clip.add_model_config`) from random initialisation, the same batch, step count,
AdamW settings (lr 5e-4, wd 0.2, betas 0.9/0.98, eps 1e-6, clip 1.0), warm-up, cosine
schedule, 1 loader worker, precision and device, no evaluation:

- open_clip: `open_clip_train.main.main([...])`, one epoch of the CSV (its step count is
  rows // batch), its log in `<logs>/<name>/out.log` and its final epoch checkpoint;
- dalip CLIP: `dalip train --config run.yaml --set loss.kind=clip` (`steps` = the same
  number; checkpoint_every beyond the run, so only the final checkpoint and model);
- dalip DALIP: the same with `loss.kind=dalip`: the DALIP loss's extra cost, beside.

Interleaved (open_clip, dalip CLIP, dalip DALIP, then again) over --repeats rounds; every
figure is a ratio dalip / open_clip within a round, reported as the median (min-max):
- whole run: wall-clock seconds of the process (start-up, imports, data, the final save);
- CPU time: user + system seconds of the process and its loader workers (RUSAGE_CHILDREN);
- peak memory: the process's resident-set high-water mark (CPU), or
  `torch.cuda.max_memory_allocated` at exit (CUDA), printed by the wrapper;
- per step: the steady-state mean seconds per step, from each tool's own log windows
  after the first --skip-steps steps (open_clip: `Batch (t)`, data time included; dalip:
  `batch_time` in metrics.jsonl, else batch / `images_per_second` of the window's last step).
Below 1 dalip is faster. Target: dalip CLIP / open_clip <= 1.05 whole run and per step.
--quick (5 steps of 8, one round, no DALIP-loss run) only shows that everything runs.
Such ratios swing widely on a loaded machine (the two tools compete with whatever else
runs): record them on a quiet one, and read the min-max before the median.

    python benchmarks/bench_vs_open_clip.py                    # 40 steps of 64, 3 rounds
    python benchmarks/bench_vs_open_clip.py --device cuda --precision bf16 --steps 200 --batch 256
    python benchmarks/bench_vs_open_clip.py --quick --json --no-record
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

# dalip, open_clip and torch are imported inside the functions that use them: a tool's
# process runs this file (`--tool-worker`), and must not pay for importing the other tool.
MODEL = "dalip-tiny"
TARGET = 1.05
VARIANTS = ("open_clip", "dalip_clip", "dalip_dalip")
OPTIM = {"lr": 5e-4, "weight_decay": 0.2, "beta1": 0.9, "beta2": 0.98, "eps": 1e-6, "grad_clip": 1.0}
OPEN_CLIP_PRECISION = {"fp32": "fp32", "bf16": "amp_bf16"}
OPEN_CLIP_LOG = re.compile(
    r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<samples>\d+)/(?P<total>\d+) \(\s*\d+%\)\]\s+"
    r"Data \(t\): (?P<data>[\d.]+)\s+Batch \(t\): (?P<batch>[\d.]+)"
)
METRICS = ("wall_seconds", "cpu_seconds", "peak_mib", "step_seconds")


# ---------------------------------------------------------------- logs and step counts


@dataclass(frozen=True)
class Window:
    """One log record: the mean seconds per step over the `steps` steps ending at `end_step`."""

    end_step: int
    steps: int
    batch_seconds: float
    data_seconds: float | None = None


def open_clip_windows(log_text: str, batch_size: int) -> list[Window]:
    """The `Train Epoch: E [N/T (P%)] Data (t): D Batch (t): B` lines of an open_clip_train log
    (means over the steps since the previous line of the epoch) as windows, steps counted
    over all epochs."""
    windows, last_end = [], 0
    for match in OPEN_CLIP_LOG.finditer(log_text):
        per_epoch = int(match["total"]) // batch_size
        end = int(match["epoch"]) * per_epoch + int(match["samples"]) // batch_size
        start = max(last_end, int(match["epoch"]) * per_epoch)  # the meters restart every epoch
        windows.append(Window(end, end - start, float(match["batch"]), float(match["data"])))
        last_end = end
    return windows


def dalip_windows(records: list[dict[str, Any]], batch_size: int) -> tuple[list[Window], str]:
    """Training records of a dalip metrics.jsonl as windows, and the field they came from:
    "batch_time" (mean over the steps since the previous record), or "images_per_second"
    (the record's own step only: batch / images_per_second, data loading excluded)."""
    training = [r for r in records if "batch_time" in r or "images_per_second" in r]
    basis = "batch_time" if training and all("batch_time" in r for r in training) else "images_per_second"
    windows, last_end = [], 0
    for record in training:
        end = int(record["step"])
        if basis == "batch_time":
            windows.append(Window(end, end - last_end, float(record["batch_time"]), record.get("data_time")))
        else:
            windows.append(Window(end, 1, batch_size / float(record["images_per_second"])))
        last_end = end
    return windows, basis


def steady_step_seconds(windows: list[Window], skip_steps: int) -> float | None:
    """Mean seconds per step over the windows that start after the first `skip_steps` steps
    (start-up, first steps), weighted by their length; None when no window is left."""
    kept = [w for w in windows if w.end_step - w.steps >= skip_steps and w.steps > 0]
    steps = sum(w.steps for w in kept)
    return sum(w.batch_seconds * w.steps for w in kept) / steps if steps else None


def csv_rows(steps: int, batch_size: int) -> int:
    """Rows the CSV needs for open_clip_train to take `steps` steps in its one epoch."""
    return steps * batch_size


def open_clip_steps(rows: int, batch_size: int, epochs: int = 1) -> int:
    """Steps open_clip_train takes on a CSV of `rows` (its loader drops the last partial batch)."""
    return rows // batch_size * epochs


# ---------------------------------------------------------------- setup


def write_training_csv(source: Path, target: Path, rows: int) -> None:
    """`make_dataset`'s CSV (filepath relative to it, caption, label) as `rows` rows of
    absolute filepath and caption, cycling its rows: open_clip_train opens the paths as
    given (relative to its working folder), dalip relative to the file."""
    with open(source, newline="", encoding="utf-8") as handle:
        entries = list(csv.DictReader(handle))
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["filepath", "caption"])
        for index in range(rows):
            entry = entries[index % len(entries)]
            writer.writerow([str((source.parent / entry["filepath"]).resolve()), entry["caption"]])


def prepare_data(root: Path, args: argparse.Namespace) -> Path:
    from dalip.data.synthetic import make_dataset

    manifest = make_dataset(
        str(root / "data"),
        seed=args.seed,
        train_per_class=args.train_per_class,
        val_per_class=1,
        test_per_class=1,
        general_classes=0,
        force=True,
    )
    split = manifest["splits"]["plant/train"]
    target = root / "train.csv"
    write_training_csv(
        root / "data" / "plant" / "train" / split["csv"], target, csv_rows(args.steps, args.batch)
    )
    return target


def open_clip_argv(args: argparse.Namespace, data: Path, logs: Path, name: str) -> list[str]:
    return [
        "--model",
        MODEL,
        "--train-data",
        str(data),
        "--dataset-type",
        "csv",
        "--csv-separator",
        ",",
        "--csv-img-key",
        "filepath",
        "--csv-caption-key",
        "caption",
        "--batch-size",
        str(args.batch),
        "--epochs",
        "1",
        "--workers",
        "1",
        "--lr",
        str(OPTIM["lr"]),
        "--wd",
        str(OPTIM["weight_decay"]),
        "--beta1",
        str(OPTIM["beta1"]),
        "--beta2",
        str(OPTIM["beta2"]),
        "--eps",
        str(OPTIM["eps"]),
        "--grad-clip-norm",
        str(OPTIM["grad_clip"]),
        "--warmup",
        str(args.warmup),
        "--precision",
        OPEN_CLIP_PRECISION[args.precision],
        "--device",
        args.device,
        "--seed",
        str(args.seed),
        "--log-every-n-steps",
        str(args.log_every),
        "--save-frequency",
        str(10**6),
        "--logs",
        str(logs),
        "--name",
        name,
    ]


def dalip_config(args: argparse.Namespace, data: Path, out_dir: Path) -> dict[str, Any]:
    return {
        "model": {"name": MODEL},
        "data": {"sources": [{"kind": "csv", "path": str(data)}], "workers": 1},
        "optim": {**OPTIM, "warmup_steps": args.warmup},
        "batch_size": args.batch,
        "steps": args.steps,
        "precision": args.precision,
        "device": args.device,
        "seed": args.seed,
        "checkpoint_every": args.steps + 1,
        "log_every": args.log_every,
        "eval_every": 0,
        "out_dir": str(out_dir),
        "tensorboard": False,
        "progress": False,
    }


# ---------------------------------------------------------------- one run


def tool_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: run one tool's training, then report its exit status and peaks."""
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    if spec["tool"] == "open_clip":
        import open_clip
        from open_clip_train.main import main as open_clip_main

        open_clip.add_model_config(spec["model_config"])
        status = open_clip_main(spec["argv"]) or 0  # None when it finished
    else:
        from dalip.cli.main import main as dalip_main

        status = dalip_main(spec["argv"])
    return {
        "status": status,
        "rss_peak_mib": _common.process_peak_mib("cpu"),
        "cuda_peak_mib": _common.process_peak_mib("cuda") if spec["device"] == "cuda" else None,
    }


def run_tool(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run `tool_worker(spec)` in a fresh process (working folder `workdir`): its wall-clock and
    CPU seconds (loader workers included), peak memory on the run's device and resident peak."""

    def cpu_of_children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    cpu, start = cpu_of_children(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--tool-worker", json.dumps(spec)],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    wall, cpu = time.perf_counter() - start, cpu_of_children() - cpu
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if done.returncode == 0 and lines else {"status": done.returncode}
    if result["status"] != 0:
        raise RuntimeError(
            f"{spec['tool']} failed (status {result['status']}):\n"
            f"{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
        )
    peak = result["cuda_peak_mib"] if spec["device"] == "cuda" else result["rss_peak_mib"]
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "peak_mib": peak,
        "rss_peak_mib": result["rss_peak_mib"],
    }


def run_round(index: int, args: argparse.Namespace, root: Path, data: Path) -> dict[str, dict[str, Any]]:
    """One run of each variant, in VARIANTS order, with its steady step time from its log."""
    from dalip.model.registry import MODEL_CONFIG_DIR
    from dalip.train.run_log import read_metrics

    base = {
        "threads": args.threads,
        "device": args.device,
        "model_config": str(MODEL_CONFIG_DIR / f"{MODEL}.json"),
    }
    results = {}
    for variant in args.variants:
        if variant == "open_clip":
            name = f"round-{index}"
            run = run_tool(
                {**base, "tool": "open_clip", "argv": open_clip_argv(args, data, root / "open_clip", name)},
                root,
            )
            windows = open_clip_windows((root / "open_clip" / name / "out.log").read_text(), args.batch)
            basis = "Batch (t)"
        else:
            out_dir = root / f"{variant}-{index}"
            config = root / f"{variant}-{index}.yaml"
            config.write_text(yaml.safe_dump(dalip_config(args, data, out_dir)))
            kind = variant.removeprefix("dalip_")
            argv = ["train", "--config", str(config), "--set", f"loss.kind={kind}"]
            run = run_tool({**base, "tool": "dalip", "argv": argv}, root)
            windows, basis = dalip_windows(read_metrics(out_dir / "metrics.jsonl"), args.batch)
        if not windows or windows[-1].end_step != args.steps:
            raise RuntimeError(
                f"{variant} logged {windows[-1].end_step if windows else 0} steps, expected {args.steps}"
            )
        results[variant] = {
            **run,
            "step_seconds": steady_step_seconds(windows, args.skip_steps),
            "step_basis": basis,
        }
    return results


# ---------------------------------------------------------------- figures


def ratio_summary(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, float] | None]]:
    """Per dalip variant and metric: median, min and max over rounds of dalip / open_clip
    (None where a figure is missing in every round)."""
    ratios: dict[str, dict[str, dict[str, float] | None]] = {}
    for variant in [v for v in VARIANTS[1:] if v in rounds[0]]:
        ratios[variant] = {}
        for metric in METRICS:
            values = [
                r[variant][metric] / r["open_clip"][metric]
                for r in rounds
                if r[variant][metric] is not None and r["open_clip"][metric]
            ]
            ratios[variant][metric] = _common.summary(values) if values else None
    return ratios


def absolute_summary(
    rounds: list[dict[str, dict[str, Any]]],
) -> dict[str, dict[str, dict[str, float] | None]]:
    """Per variant and metric: median, min and max over rounds (None where missing)."""
    figures: dict[str, dict[str, dict[str, float] | None]] = {}
    for variant in [v for v in VARIANTS if v in rounds[0]]:
        figures[variant] = {}
        for metric in METRICS:
            values = [r[variant][metric] for r in rounds if r[variant][metric] is not None]
            figures[variant][metric] = _common.summary(values) if values else None
    return figures


def target_verdict(ratios: dict[str, dict[str, Any]]) -> dict[str, bool | None]:
    clip = ratios["dalip_clip"]
    return {
        "whole_run": clip["wall_seconds"]["median"] <= TARGET,
        "per_step": None if clip["step_seconds"] is None else clip["step_seconds"]["median"] <= TARGET,
    }


def report(figures: dict[str, Any]) -> str:
    setup, absolute, ratios = figures["setup"], figures["absolute"], figures["ratios"]
    labels = {
        "open_clip": "open_clip_train",
        "dalip_clip": "dalip, loss.kind=clip",
        "dalip_dalip": "dalip, loss.kind=dalip",
    }

    def cell(value: dict[str, float] | None, digits: int, bold: bool = False) -> str:
        if value is None:
            return "-"
        text = f"{value['median']:.{digits}f}"
        text = f"**{text}**" if bold else text
        return (
            text
            if value["min"] == value["max"]
            else f"{text} ({value['min']:.{digits}f}-{value['max']:.{digits}f})"
        )

    rows = [[labels[v], *(cell(absolute[v][m], d) for m, d in zip(METRICS, (1, 1, 0, 3)))] for v in absolute]
    ratio_rows = [[labels[v], *(cell(ratios[v][m], 3, v == "dalip_clip") for m in METRICS)] for v in ratios]
    verdict = figures["target_met"]
    text = {True: "met", False: "MISSED", None: "-"}
    basis = ", ".join(sorted({r["dalip_clip"]["step_basis"] for r in figures["rounds"]}))
    return "\n".join(
        [
            f"{MODEL} from random init, batch {setup['batch']}, {setup['steps']} steps, {_common.conditions(figures)}, "
            f"1 loader worker each, warm-up {setup['warmup']}, log every {setup['log_every']} steps; "
            f"{setup['repeats']} interleaved rounds ({', '.join(labels[v] for v in absolute)}), "
            "each run a fresh process. "
            f"Per step: steady-state mean after the first {setup['skip_steps']} steps (dalip from `{basis}`).",
            "",
            _common.format_table(["run", "whole run s", "CPU s", "peak MiB", "s per step"], rows),
            "",
            _common.format_table(
                ["dalip / open_clip", "whole run", "CPU time", "peak memory", "per step"], ratio_rows
            ),
            "",
            f"- Target dalip (CLIP loss) / open_clip_train <= {TARGET}: whole run {text[verdict['whole_run']]}, "
            f"per step {text[verdict['per_step']]}."
            + (
                " The DALIP loss row is its extra cost, not part of the target."
                if "dalip_dalip" in ratios
                else ""
            ),
            "- Peak memory: "
            f"{'CUDA max_memory_allocated' if setup['device'] == 'cuda' else 'resident-set high-water mark'}"
            " of the training process (loader workers not included).",
            f"- Load average before / after: {figures['machine']['load_average_before']} / "
            f"{figures['machine']['load_average']}; ratios on a loaded machine swing widely.",
        ]
    )


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps of every run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (one run of each tool)")
    parser.add_argument("--warmup", type=int, default=10, help="learning-rate warm-up steps of both tools")
    parser.add_argument("--log-every", type=int, default=5, help="steps per log record of both tools")
    parser.add_argument(
        "--skip-steps",
        type=int,
        default=10,
        help="first steps left out of the per-step figure (start-up, first steps)",
    )
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=20,
        help="generated plant images per species (24 species; rows repeat to steps x batch)",
    )
    _common.add_run_arguments(
        parser,
        "5 steps of 8, 1 round of open_clip and dalip CLIP only (no DALIP "
        "loss run), log every step: a smoke test, about a minute",
    )
    parser.add_argument("--tool-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.variants = VARIANTS[:2] if args.quick else VARIANTS
    if args.quick:
        args.batch, args.steps, args.repeats = min(args.batch, 8), 5, 1
        args.warmup, args.log_every, args.skip_steps, args.train_per_class = 2, 1, 2, 1
    if args.tool_worker is None and args.steps <= args.skip_steps:
        parser.error(f"--steps ({args.steps}) must exceed --skip-steps ({args.skip_steps})")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = _common.load_average()
    with tempfile.TemporaryDirectory(prefix="dalip-bench-vs-open-clip-") as folder:
        root = Path(folder)
        data = prepare_data(root, args)
        rounds = [run_round(index, args, root, data) for index in range(args.repeats)]
    ratios = ratio_summary(rounds)
    setup = {
        key: getattr(args, key)
        for key in (
            "batch",
            "steps",
            "repeats",
            "warmup",
            "log_every",
            "skip_steps",
            "device",
            "precision",
            "threads",
            "variants",
        )
    }
    return {
        "setup": setup,
        "rounds": rounds,
        "absolute": absolute_summary(rounds),
        "ratios": ratios,
        "target": TARGET,
        "target_met": target_verdict(ratios),
        "device": args.device,
        "precision": args.precision,
        "machine": {**_common.machine(args.device), "load_average_before": load_before},
    }


def summary(figures: dict[str, Any]) -> _common.Summary:
    """RESULTS.md's row: dalip (CLIP loss) over open_clip_train, medians, and the verdicts."""
    ratios, verdict = figures["ratios"]["dalip_clip"], figures["target_met"]
    text = {True: "met", False: "MISSED", None: "-"}

    def median(metric: str) -> str:
        return "-" if ratios[metric] is None else f"{ratios[metric]['median']:.3f}"

    return _common.Summary(
        f"whole training runs, dalip train (CLIP loss) / open_clip_train, {MODEL}",
        f"whole run {median('wall_seconds')}, per step {median('step_seconds')}, "
        f"peak memory {median('peak_mib')}",
        f"<= {TARGET}: whole run {text[verdict['whole_run']]}, per step {text[verdict['per_step']]}",
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.tool_worker is not None:
        result = tool_worker(json.loads(args.tool_worker))
        print(json.dumps(result))
        return result
    figures = run(args)
    _common.publish(
        args,
        argv,
        "bench_vs_open_clip.py",
        "Training runs, dalip train vs open_clip_train",
        figures,
        report(figures),
        summary(figures),
    )
    return figures


if __name__ == "__main__":
    main()
