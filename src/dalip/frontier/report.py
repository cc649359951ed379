"""The frontier report (`dalip frontier`, the quickstart): a table of general accuracy at
matched domain gain per recipe and seed, paired differences to the baseline with 95%
intervals, and a figure of the curves (`dalip.frontier.curves`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dalip.atomic import write_json, write_text
from dalip.frontier.curves import Curve, model_label
from dalip.report.figures import new_figure, save_figure
from dalip.report.text import printable


def _percent(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" if sign else f"{100 * value:.1f}"


def _interval(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    text = _percent(summary["mean"], sign=True)
    if summary["low"] is not None:
        text += f" [{_percent(summary['low'], sign=True)}, {_percent(summary['high'], sign=True)}]"
    return text


def frontier_table(report: dict[str, Any], domain: str, general: str) -> str:
    """Markdown: one row per curve, then the paired differences to the baseline."""
    levels = [f"{level:g}" for level in report["levels"]]
    at = " | ".join(f"{general} at {100 * float(level):g}% gain" for level in levels)
    lines = [
        f"Frontier: {general} top-1 (%) at matched {domain} gain, as a share of the baseline "
        f"({printable(report['baseline'])}) recipe's full gain on the same seed; area: dominated "
        f"(gain x {general}) area, x 10^4. Start model: {general} {_percent(report['start']['general'])}.",
        "",
        f"| recipe | seed | {domain} gain | {general} (tuned) | {at} | area |",
        "|" + " --- |" * (5 + len(levels)),
    ]
    for row in report["curves"]:
        cells = [_percent(row["general_at_level"][level]) for level in levels]
        lines.append(
            f"| {printable(row['recipe'])} | {printable(row['seed'])} | {_percent(row['gain'], sign=True)} | "
            f"{_percent(row['general'])} | {' | '.join(cells)} | {1e4 * row['area']:.1f} |"
        )
    if report["paired"]:
        lines += [
            "",
            f"Paired differences to {printable(report['baseline'])} (mean [95% t interval] over the seeds "
            f"both have; points):",
            "",
            f"| recipe | seeds | {domain} gain | {general} (tuned) | {at} | area x 10^4 |",
            "|" + " --- |" * (5 + len(levels)),
        ]
        for recipe, paired in report["paired"].items():
            cells = [_interval(paired["general_at_level"][level]) for level in levels]
            area = paired["area"]
            area_text = "-" if area is None else f"{1e4 * area['mean']:+.1f}"
            lines.append(
                f"| {printable(recipe)} | {len(paired['seeds'])} | {_interval(paired['gain'])} | "
                f"{_interval(paired['general'])} | {' | '.join(cells)} | {area_text} |"
            )
        lines += ["", _paired_seeds(report)]
    modes = _modes(report)
    return "\n".join(lines + ([""] if modes else []) + modes) + "\n"


def _modes(report: dict[str, Any]) -> list[str]:
    """ "Similarity modes read: clip first; dalip fused (seed 0), first (seeds 1, 2)." ([] when
    no curve records its mode)."""
    by_recipe: dict[str, dict[str, list[str]]] = {}
    for row in report["curves"]:
        if row.get("mode"):
            by_recipe.setdefault(row["recipe"], {}).setdefault(row["mode"], []).append(str(row["seed"]))
    if not by_recipe:
        return []
    parts = []
    for recipe, modes in by_recipe.items():
        if len(modes) == 1:
            parts.append(f"{printable(recipe)} {next(iter(modes))}")
            continue
        named = [
            f"{mode} (seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"
            for mode, seeds in modes.items()
        ]
        parts.append(f"{printable(recipe)} {', '.join(printable(n) for n in named)}")
    return [
        "Similarity mode each curve is read in (the tuned model's own unless --mode names one): "
        + "; ".join(parts)
        + "."
    ]


def _paired_seeds(report: dict[str, Any]) -> str:
    """Which seeds of each recipe were paired with the baseline's, and from which start model
    (reports written before dalip recorded it say nothing of the start)."""
    baseline, start = printable(report["baseline"]), report["start"]
    parts = []
    for recipe, paired in report["paired"].items():
        part = f"{printable(recipe)} {', '.join(printable(seed) for seed in paired['seeds'])}"
        unpaired = paired.get("unpaired") or []
        if unpaired:
            which = "that seed" if len(unpaired) == 1 else "those seeds"
            part += f" (not {', '.join(printable(s) for s in unpaired)}: {baseline} has no sweep of {which})"
        parts.append(part)
    origin = ""
    if start.get("model") is not None:
        origin = f", all tuned from the start model {printable(model_label(start['model']))}"
    line = f"Paired seeds (each with the same seed of {baseline}{origin}): {'; '.join(parts)}."
    unrecorded = start.get("unrecorded") or []
    if unrecorded:
        names = ", ".join(printable(name) for name in unrecorded)
        one = len(unrecorded) == 1
        line += (
            f" The {'sweep' if one else 'sweeps'} of {names} {'records' if one else 'record'} no start "
            f"model: {'its' if one else 'their'} pairing is unchecked."
        )
    return line


def frontier_plot(
    curves: Sequence[Curve], report: dict[str, Any], domain: str, general: str, path: Path
) -> None:
    """The curves, one colour per recipe (one line per seed), and the matched-gain levels."""
    figure, (axes,) = new_figure(6, 4.5)
    colours: dict[str, Any] = {}
    for curve in curves:
        xs, ys = [100 * g for g in curve.gains], [100 * a for a in curve.general]
        first = curve.recipe not in colours
        (line,) = axes.plot(
            xs,
            ys,
            marker="o",
            color=colours.get(curve.recipe),
            alpha=0.8,
            label=printable(curve.recipe) if first else None,
        )
        colours.setdefault(curve.recipe, line.get_color())
    baseline_gains = [row["gain"] for row in report["curves"] if row["recipe"] == report["baseline"]]
    if baseline_gains:
        mean_gain = sum(baseline_gains) / len(baseline_gains)
        for level in report["levels"]:
            axes.axvline(100 * level * mean_gain, color="grey", linestyle=":", linewidth=1)
    axes.set(
        xlabel=printable(f"{domain} gain over the start model (points)"),
        ylabel=printable(f"{general} top-1 (%)"),
        title="Gain-retention frontier (WiSE-FT, w from 0 to 1)",
    )
    axes.legend(fontsize="small")
    save_figure(figure, path)


def write_frontier_report(
    curves: Sequence[Curve], report: dict[str, Any], out_dir: str | os.PathLike, domain: str, general: str
) -> None:
    """frontier.json, frontier.md and frontier.png in `out_dir`."""
    out_dir = Path(out_dir)
    sweeps = [vars(curve) for curve in curves]  # the points each reading comes from
    write_json(out_dir / "frontier.json", {"domain": domain, "general": general, **report, "sweeps": sweeps})
    write_text(out_dir / "frontier.md", frontier_table(report, domain, general))
    frontier_plot(curves, report, domain, general, out_dir / "frontier.png")
