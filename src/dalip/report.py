"""Evaluation outputs: results.json (with a reproducibility record), Markdown tables, PNG charts.

Charts are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global
backend switch), so they work headless and do not disturb a notebook's backend.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from dalip.checkpoint import atomic_write

RESULT_FILES = ("results.json", "results.md", "results.png")
_SIZE_KEYS = ("num_images", "num_texts", "num_classes", "skipped", "train_size", "test_size")
_PATH_KEYS = ("dataset", "train", "test", "splits_file")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def reproducibility_record(results: dict[str, Any], suite: Any) -> dict[str, Any]:
    """Versions, checkpoint hashes, seeds, modes, templates, class names, data paths and sizes."""
    from dalip import __version__
    from dalip.model_specs import file_sha256

    datasets: dict[str, Any] = {}
    for entry in results["models"].values():
        for name, result in entry["datasets"].items():
            described = datasets.setdefault(name, {"task": result["task"], "domain": result["domain"]})
            described.update({k: result[k] for k in _PATH_KEYS + _SIZE_KEYS if k in result})
            for key in ("template_set", "templates", "class_names", "features", "chosen_C", "shots", "folds"):
                if key in result:
                    described[key] = result[key]
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "dalip": __version__, "open_clip_torch": _version("open_clip_torch"), "torch": _version("torch"),
            "numpy": _version("numpy"), "scikit-learn": _version("scikit-learn"),
            "python": sys.version.split()[0],
        },
        "platform": platform.platform(),
        "command": sys.argv,
        "suite_file": suite.source,
        "suite_sha256": file_sha256(suite.source) if suite.source else None,
        "seed": suite.seed,
        "similarity_modes": {name: entry["modes"] for name, entry in results["models"].items()},
        "checkpoints": {name: {"spec": e["spec"], "sha256": e["sha256"]} for name, e in results["models"].items()},
        "datasets": datasets,
    }


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def table_columns(results: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """([(dataset name, domain)] grouped by domain in suite order, [domains])."""
    datasets = [(d["name"], d["domain"]) for d in results["suite"]["datasets"]]
    domains = list(dict.fromkeys(domain for _, domain in datasets))
    return [d for domain in domains for d in datasets if d[1] == domain], domains


def table_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """[("model [mode]", {dataset: score, "domains": {...}, "overall": x})] in model order."""
    rows = []
    for name, entry in results["models"].items():
        for mode in entry["modes"]:
            scores = {dataset: result["scores"][mode] for dataset, result in entry["datasets"].items()}
            rows.append((f"{name} [{mode}]", {**scores, **entry["summary"][mode]}))
    return rows


def markdown_table(results: dict[str, Any]) -> str:
    """One row per model and similarity mode; datasets grouped by domain, then domain means."""
    columns, domains = table_columns(results)
    header = ["model [mode]"] + [f"{name} ({domain})" for name, domain in columns]
    header += [f"mean {domain}" for domain in domains] + ["overall"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for label, row in table_rows(results):
        cells = [_percent(row.get(name)) for name, _ in columns]
        cells += [_percent(row["domains"].get(domain)) for domain in domains] + [_percent(row["overall"])]
        lines.append("| " + " | ".join([label] + cells) + " |")
    legend = (
        "Scores in %. zeroshot: top-1; retrieval: mean of image->text and text->image "
        "recall@1/5/10, a caption identical to one of an image's own counting as its match; linear_probe: top-1; fewshot: mean nearest-centroid accuracy at the "
        "largest k. Modes: fused = alpha*cos(first) + (1-alpha)*cos(second); first / second "
        "alone (plain open_clip models: first only). Probes use image features only, so "
        "their score is the same in every mode of a model. overall = mean over datasets."
    )
    return "\n".join(lines) + "\n\n" + legend + "\n"


def _figure(width: float, height: float, columns: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def bar_chart(results: dict[str, Any], path: str | Path) -> None:
    """Grouped bars: per-domain means and the overall mean, one bar per model and mode."""
    _, domains = table_columns(results)
    groups = [f"mean {d}" for d in domains] + ["overall"]
    rows = table_rows(results)
    figure, (axes,) = _figure(max(5.0, 1.2 * len(groups) * max(1, len(rows)) * 0.5 + 2), 4)
    width = 0.8 / max(1, len(rows))
    for number, (label, row) in enumerate(rows):
        values = [100 * row["domains"][d] for d in domains] + [100 * row["overall"]]
        positions = [g + (number - (len(rows) - 1) / 2) * width for g in range(len(groups))]
        axes.bar(positions, values, width=width, label=label)
    axes.set_xticks(range(len(groups)), groups)
    axes.set_ylabel("score (%)")
    axes.set_ylim(0, 100)
    axes.legend(fontsize="small")
    _save(figure, path)


def _save(figure: Any, path: str | Path) -> None:
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))


def write_suite_report(results: dict[str, Any], out_dir: Path) -> None:
    """results.json, results.md (table) and results.png (bar chart) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "results.json", results)
    write_text(out_dir / "results.md", markdown_table(results))
    bar_chart(results, out_dir / "results.png")


def interpolation_table(results: dict[str, Any]) -> str:
    """One row per (mode, w): per-domain means and the overall mean."""
    _, domains = table_columns(results)
    header = ["mode", "w"] + [f"mean {d}" for d in domains] + ["overall"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for point in results["interpolation"]:
        for mode, summary in point["summary"].items():
            cells = [_percent(summary["domains"].get(d)) for d in domains] + [_percent(summary["overall"])]
            lines.append("| " + " | ".join([mode, f"{point['weight']:g}"] + cells) + " |")
    return "\n".join(lines) + "\n"


def _domain_pair(domains: Sequence[str]) -> tuple[str, str] | None:
    """(x, y) for the trade-off plot: general on x, the first other domain on y."""
    others = [d for d in domains if d != "general"]
    return ("general", others[0]) if "general" in domains and others else None


def interpolation_plot(results: dict[str, Any], path: str | Path) -> None:
    """Left: general vs domain mean along w (when both exist); right: per-domain mean vs w."""
    _, domains = table_columns(results)
    pair = _domain_pair(domains)
    figure, axes = _figure(10 if pair else 5, 4, 2 if pair else 1)
    weights = [p["weight"] for p in results["interpolation"]]
    modes = list(results["interpolation"][0]["summary"])
    for mode in modes:
        summaries = [p["summary"][mode] for p in results["interpolation"]]
        if pair:
            xs = [100 * s["domains"][pair[0]] for s in summaries]
            ys = [100 * s["domains"][pair[1]] for s in summaries]
            axes[0].plot(xs, ys, marker="o", label=mode)
            for w, x, y in zip(weights, xs, ys):
                axes[0].annotate(f"{w:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
        for domain in domains:
            axes[-1].plot(weights, [100 * s["domains"][domain] for s in summaries], marker="o", label=f"{domain} [{mode}]")
    if pair:
        axes[0].set(xlabel=f"{pair[0]} mean (%)", ylabel=f"{pair[1]} mean (%)", title="WiSE-FT trade-off (labels: w)")
        axes[0].legend(fontsize="small")
    axes[-1].set(xlabel="w (0 = start, 1 = tuned)", ylabel="domain mean (%)", title="per-domain mean vs w")
    axes[-1].legend(fontsize="small")
    _save(figure, path)


def write_interpolation_report(results: dict[str, Any], out_dir: Path) -> None:
    """The suite report (one row per w) plus interpolation.md and interpolation.png."""
    write_suite_report(results, out_dir)
    write_text(out_dir / "interpolation.md", interpolation_table(results))
    interpolation_plot(results, out_dir / "interpolation.png")
