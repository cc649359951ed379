"""Suite and WiSE-FT reports: results.json, Markdown tables, PNG charts, from `run_suite` /
`interpolate` results.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dalip.atomic import write_json, write_text
from dalip.report.clip_benchmark import write_clip_benchmark_results
from dalip.report.figures import new_figure, save_figure
from dalip.report.text import printable


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def table_columns(results: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """([(dataset name, domain)] grouped by domain in suite order, [domains])."""
    datasets = [(d["name"], d["domain"]) for d in results["suite"]["datasets"]]
    domains = list(dict.fromkeys(domain for _, domain in datasets))
    return [d for domain in domains for d in datasets if d[1] == domain], domains


def mode_label(name: str, entry: dict[str, Any], mode: str) -> str:
    """ "model [mode]", with " *" when `mode` is the one the model answers with by default
    (when the model has more than one)."""
    marked = len(entry["modes"]) > 1 and entry.get("answer_mode") == mode
    return f"{name} [{mode}]" + (" *" if marked else "")


def table_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """[("model [mode]", {dataset: score, "domains": {...}, "overall": x})] in model order."""
    rows = []
    for name, entry in results["models"].items():
        for mode in entry["modes"]:
            scores = {dataset: result["scores"][mode] for dataset, result in entry["datasets"].items()}
            rows.append((mode_label(name, entry, mode), {**scores, **entry["summary"][mode]}))
    return rows


def markdown_table(results: dict[str, Any]) -> str:
    """One row per model and similarity mode; datasets grouped by domain, then domain means.
    Names (models, datasets, domains) are shown `printable`: the table is printed and written."""
    columns, domains = table_columns(results)
    header = ["model [mode]"] + [f"{name} ({domain})" for name, domain in columns] + _mean_labels(results)
    header = [printable(cell) for cell in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for label, row in table_rows(results):
        cells = [_percent(row.get(name)) for name, _ in columns]
        cells += [_percent(row["domains"].get(domain)) for domain in domains] + [_percent(row["overall"])]
        lines.append("| " + " | ".join([printable(label)] + cells) + " |")
    legend = (
        "Scores in %. zeroshot: top-1; retrieval: mean of image->text and text->image "
        "recall@1/5/10, a caption identical to one of an image's own counting as its match; "
        "linear_probe: top-1; fewshot: mean nearest-centroid accuracy at the "
        "largest k. Modes: fused = alpha*cos(first) + (1-alpha)*cos(second); first / second "
        "alone (plain open_clip models: first only); * the mode the model answers with when "
        "none is named (stored with it by `dalip train`, else dalip's default, first). Probes use "
        "image features only, so their score is the same in every mode of a model. overall = "
        "mean over datasets."
    )
    return "\n".join(lines) + "\n\n" + legend + _skipped_note(results) + "\n"


def _mean_labels(results: dict[str, Any]) -> list[str]:
    """The mean columns' headers: "mean DOMAIN" per domain, then "overall"; with "(n of m)",
    the datasets each averages of those the suite names, when some were skipped."""
    _, domains = table_columns(results)
    skipped = results["suite"].get("skipped") or []
    if not skipped:
        return [f"mean {domain}" for domain in domains] + ["overall"]
    ran = Counter(entry["domain"] for entry in results["suite"]["datasets"])
    left = Counter(entry["domain"] for entry in skipped)
    total = sum(ran.values())
    labels = [f"mean {domain} ({ran[domain]} of {ran[domain] + left[domain]})" for domain in domains]
    return labels + [f"overall ({total} of {total + len(skipped)})"]


def _skipped_note(results: dict[str, Any]) -> str:
    skipped = results["suite"].get("skipped") or []
    if not skipped:
        return ""
    named = ", ".join(printable(f"{entry['name']} ({entry['domain']})") for entry in skipped)
    return f" Skipped, not found (--skip-missing), so left out of every mean: {named}."


def rank_tables(results: dict[str, Any]) -> str:
    """For each dataset scored by rank: a row per rank (its taxa), a column per model and mode
    (flat / top-down top-1), and a last row with the ranks a wrong species answer still shares
    with the truth, on average (of how many wrong answers). "" when no dataset has ranks."""
    parts = []
    for dataset in (d["name"] for d in results["suite"]["datasets"]):
        columns = [
            (mode_label(name, entry, mode), mode, entry["datasets"][dataset])
            for name, entry in results["models"].items()
            for mode in entry["modes"]
            if "ranks" in entry["datasets"].get(dataset, {})
        ]
        if not columns:
            continue
        ranks = columns[0][2]["ranks"]
        header = ["rank", "taxa", *(printable(label) for label, _, _ in columns)]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        for rank, entry in ranks.items():
            cells = []
            for _, mode, result in columns:
                scores = result["ranks"][rank]["modes"][mode]
                cells.append(f"{_percent(scores['top1'])} / {_percent(scores['top_down_top1'])}")
            lines.append("| " + " | ".join([rank, str(entry["num_taxa"]), *cells]) + " |")
        if "species" in ranks:
            cells = []
            for _, mode, result in columns:
                wrong = result["wrong_species"][mode]
                depth = "–" if wrong["mean_depth"] is None else f"{wrong['mean_depth']:.2f}"
                cells.append(f"{depth} ({wrong['count']} wrong)")
            lines.append("| " + " | ".join(["wrong species: ranks shared", "", *cells]) + " |")
        title = f"**{printable(dataset)} by rank**: zero-shot top-1 (%), flat / top-down"
        parts.append(title + "\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def bar_chart(results: dict[str, Any], path: str | Path) -> None:
    """Grouped bars: per-domain means and the overall mean, one bar per model and mode."""
    _, domains = table_columns(results)
    groups = [f"mean {d}" for d in domains] + ["overall"]
    rows = table_rows(results)
    figure, (axes,) = new_figure(max(5.0, 1.2 * len(groups) * max(1, len(rows)) * 0.5 + 2), 4)
    width = 0.8 / max(1, len(rows))
    for number, (label, row) in enumerate(rows):
        values = [100 * row["domains"][d] for d in domains] + [100 * row["overall"]]
        positions = [g + (number - (len(rows) - 1) / 2) * width for g in range(len(groups))]
        axes.bar(positions, values, width=width, label=printable(label))
    axes.set_xticks(range(len(groups)), [printable(group) for group in groups])
    axes.set_ylabel("score (%)")
    axes.set_ylim(0, 100)
    axes.legend(fontsize="small")
    save_figure(figure, path)


def write_suite_report(results: dict[str, Any], out_dir: str | os.PathLike) -> None:
    """results.json, results.md (table) and results.png (bar chart) in `out_dir`; CLIP_benchmark
    datasets also in its JSON format, in `out_dir/clip_benchmark/`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "results.json", results)
    ranks = rank_tables(results)
    write_text(out_dir / "results.md", markdown_table(results) + (f"\n{ranks}" if ranks else ""))
    bar_chart(results, out_dir / "results.png")
    write_clip_benchmark_results(results, out_dir)


def interpolation_table(results: dict[str, Any]) -> str:
    """One row per (mode, w): per-domain means and the overall mean."""
    _, domains = table_columns(results)
    header = [printable(cell) for cell in ["mode", "w"] + [f"mean {d}" for d in domains] + ["overall"]]
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
    figure, axes = new_figure(10 if pair else 5, 4, 2 if pair else 1)
    weights = [p["weight"] for p in results["interpolation"]]
    modes = list(results["interpolation"][0]["summary"])
    for mode in modes:
        summaries = [p["summary"][mode] for p in results["interpolation"]]
        if pair:
            xs = [100 * s["domains"][pair[0]] for s in summaries]
            ys = [100 * s["domains"][pair[1]] for s in summaries]
            axes[0].plot(xs, ys, marker="o", label=mode)
            for w, x, y in zip(weights, xs, ys):
                axes[0].annotate(
                    f"{w:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small"
                )
        for domain in domains:
            axes[-1].plot(
                weights,
                [100 * s["domains"][domain] for s in summaries],
                marker="o",
                label=printable(f"{domain} [{mode}]"),
            )
    if pair:
        axes[0].set(
            xlabel=printable(f"{pair[0]} mean (%)"),
            ylabel=printable(f"{pair[1]} mean (%)"),
            title="WiSE-FT trade-off (labels: w)",
        )
        axes[0].legend(fontsize="small")
    axes[-1].set(xlabel="w (0 = start, 1 = tuned)", ylabel="domain mean (%)", title="per-domain mean vs w")
    axes[-1].legend(fontsize="small")
    save_figure(figure, path)


def write_interpolation_report(results: dict[str, Any], out_dir: str | os.PathLike) -> None:
    """The suite report (one row per w) plus interpolation.md and interpolation.png."""
    out_dir = Path(out_dir)
    write_suite_report(results, out_dir)
    write_text(out_dir / "interpolation.md", interpolation_table(results))
    interpolation_plot(results, out_dir / "interpolation.png")
