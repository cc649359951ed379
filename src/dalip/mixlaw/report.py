"""`dalip mixlaw`'s report: report.md (pilots, laws, errors, recommendation) and mixlaw.png
(each domain's loss against the first domain's share: pilots, fitted law, 95% band, the
recommended share), from the results that mixlaw.json holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dalip.atomic import write_text
from dalip.report.figures import new_figure, save_figure
from dalip.report.text import printable


def _mixture(domains: list[str], mixture: list[float]) -> str:
    return " : ".join(f"{share:.3f}" for share in mixture) if len(domains) > 2 else f"{mixture[0]:.3f}"


def pilot_table(results: dict[str, Any]) -> str:
    """One row per pilot: mixture, seed, steps, each domain's loss (and zero-shot top-1)."""
    domains = results["domains"]
    zero = sorted({d for row in results["pilots"] for d in row["zero_shot"]})
    head = ["mixture" if len(domains) > 2 else f"{domains[0]} share", "seed", "steps", "held out"]
    head += [f"loss {d}" for d in domains] + [f"top-1 {d}" for d in zero]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in results["pilots"]:
        cells = [
            _mixture(domains, row["mixture"]),
            str(row["seed"]),
            str(row["steps"]),
            "yes" if row["held_out"] else "",
        ]
        cells += [f"{row['loss'][d]:.4f}" for d in domains]
        cells += [
            f"{100 * row['zero_shot'][d][results['mode']]:.1f}" if d in row["zero_shot"] else "" for d in zero
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def error_table(errors: list[dict[str, Any]], domains: list[str]) -> str:
    lines = [
        "| mixture | domain | predicted | observed | abs error | rel error |",
        "|---|---|---|---|---|---|",
    ]
    for row in errors:
        lines.append(
            f"| {_mixture(domains, row['mixture'])} | {row['domain']} | {row['predicted']:.4f} | "
            f"{row['observed']:.4f} | {row['abs_error']:.4f} | {100 * row['rel_error']:.2f}% |"
        )
    return "\n".join(lines)


def error_summary(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "none"
    absolute = [row["abs_error"] for row in errors]
    relative = [row["rel_error"] for row in errors]
    mean, largest = np.mean(absolute), np.max(absolute)
    return f"mean abs error {mean:.4f} (max {largest:.4f}), mean rel error {100 * np.mean(relative):.2f}%"


def recommended_shares(results: dict[str, Any]) -> str:
    """ "plant 0.810 [0.790, 0.855], general 0.190 [...]": each share with its bootstrap interval."""
    interval = results.get("recommended_interval")
    shares = []
    for index, (domain, share) in enumerate(zip(results["domains"], results["recommended"])):
        band = f" [{interval[index][0]:.3f}, {interval[index][1]:.3f}]" if interval else ""
        shares.append(f"{domain} {share:.3f}{band}")
    return ", ".join(shares)


def _shares(domains: list[str], mixture: list[float]) -> str:
    shown = domains[:1] if len(domains) == 2 else domains
    return ", ".join(f"{domain} {share:.3f}" for domain, share in zip(shown, mixture))


def range_note(results: dict[str, Any]) -> str | None:
    """A sentence when the recommendation, or the laws' optimum, lies outside the fitted
    pilots' range of shares (where the laws extrapolate); None when neither does."""
    band = results.get("pilot_range")
    if band is None:
        return None
    domains = results["domains"]
    shown = domains[:1] if len(domains) == 2 else domains
    where = ", ".join(f"{d} {band['low'][i]:.3f}-{band['high'][i]:.3f}" for i, d in enumerate(shown))
    if results.get("extrapolated"):
        return (
            f"Extrapolated: the recommended mixture lies outside the pilots' range ({where}), where "
            "the laws were not fitted; train pilots near it (or --confirm it) before relying on it."
        )
    optimum = results.get("optimum_outside_range")
    if optimum is None:
        return None
    found = (
        "the recommendation is the best mixture within it"
        if results["recommended"] is not None
        else "no mixture within it meets the objective"
    )
    return (
        f"The laws' optimum, {_shares(domains, optimum)}, lies outside the pilots' range ({where}): "
        f"{found}. Add pilots toward it, or pass --extrapolate to accept a mixture out there."
    )


INTERVALS = (
    "Intervals: the 2.5th to 97.5th percentiles of the same quantity over the bootstrap refits "
    "(pilots drawn with replacement), widened to include the estimate itself. They show how much "
    "the answer depends on which pilots were run; the error of the law's form is in the held-out "
    "and leave-one-out errors below."
)


def recommendation_text(results: dict[str, Any]) -> str:
    note = range_note(results)
    if results["recommended"] is None:
        text = f"No mixture on the grid meets the objective ({results['objective']})."
        return text + (f"\n\n{note}" if note else "")
    lines = [
        f"Objective: {results['objective']}.",
        "",
        "Recommended mixture (95% bootstrap interval): " + recommended_shares(results) + ".",
    ]
    if note:
        lines += ["", note]
    boot = results["bootstrap"]
    if boot["infeasible"]:
        lines.append(
            f"{boot['infeasible']} of {boot['resamples']} bootstrap fits found no mixture meeting it."
        )
    lines += [
        "",
        "Predicted losses there: "
        + ", ".join(
            f"{d} {p['loss']:.4f} [{p['interval'][0]:.4f}, {p['interval'][1]:.4f}]"
            for d, p in results["predicted"].items()
        )
        + ".",
        "",
        INTERVALS,
    ]
    lines += ["", "The `weight:` of each source, in the config's order:", "", "```yaml"]
    for source, weight in zip(results["base_sources"], results["recommended_weights"]):
        lines.append(
            f"- {{path: {printable(source['path'])}, domain: {source['domain']}, weight: {weight:.4f}}}"
        )
    lines.append("```")
    return "\n".join(lines)


def markdown_report(results: dict[str, Any]) -> str:
    domains = results["domains"]
    laws = [
        f"| {d} | {law['c']:.4f} | {law['k']:.4g} | {', '.join(f'{t:.3f}' for t in law['t'])} | {law['rms']:.4f} |"
        for d, law in results["laws"].items()
    ]
    parts = [
        "# dalip mixlaw",
        f"Pilot losses: held-out image-text contrastive loss per domain ({results['mode']} similarity); "
        f"budgets {results['budgets']}, seeds {results['seeds']}.",
        "## Pilots\n\n" + pilot_table(results),
        "## Fitted laws  L(r) = c + k exp(t . r)\n\n| domain | c | k | t | rms |\n|---|---|---|---|---|\n"
        + "\n".join(laws),
        "## Recommendation\n\n" + recommendation_text(results),
        "## Held-out mixtures\n\n"
        + error_summary(results["held_out"])
        + ("\n\n" + error_table(results["held_out"], domains) if results["held_out"] else ""),
        "## Leave-one-out\n\nEach fitted mixture predicted by the law fitted without it. Inside the other "
        "pilots' range: "
        + error_summary([e for e in results["leave_one_out"] if not e["extrapolated"]])
        + ". At the ends (extrapolated): "
        + error_summary([e for e in results["leave_one_out"] if e["extrapolated"]])
        + ".",
    ]
    if results["start"] is not None:
        parts.insert(
            2,
            "Start model: "
            + ", ".join(f"{d} {results['start']['loss'][d][results['mode']]:.4f}" for d in domains)
            + ".",
        )
    if "confirm" in results:
        confirm = results["confirm"]
        parts.append(
            f"## Confirmation ({confirm['steps']} steps, {len(confirm['runs'])} seed(s))\n\n"
            + "\n".join(
                f"- {d}: predicted {confirm['predicted'][d]:.4f}, measured {confirm['observed'][d]:.4f}"
                for d in domains
            )
        )
    return "\n\n".join(parts) + "\n"


def mixlaw_plot(results: dict[str, Any], path: Path) -> None:
    """Two domains: loss vs the first domain's share; more: predicted vs observed per domain."""
    domains = results["domains"]
    figure, axes = new_figure(4.2 * len(domains), 3.4, len(domains))
    for index, (axis, domain) in enumerate(zip(axes, domains)):
        if results["bands"] is not None:
            _share_panel(axis, results, index, domain)
        else:
            fit = {
                tuple(e["mixture"]): e["predicted"] for e in results["fit_errors"] if e["domain"] == domain
            }
            shown = [p for p in results["points"] if tuple(p["mixture"]) in fit]
            axis.scatter([p["loss"][domain] for p in shown], [fit[tuple(p["mixture"])] for p in shown])
            axis.set_xlabel("observed loss")
            axis.set_ylabel("predicted loss")
        axis.set_title(f"{domain} loss")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    save_figure(figure, path)


def _share_panel(axis: Any, results: dict[str, Any], index: int, domain: str) -> None:
    """One domain's loss against the first domain's share, from a little below the pilots on
    (further out the law is an extrapolation and its band fills the panel)."""
    points, bands = results["points"], results["bands"]
    share = np.array(bands["share"])
    shown = share >= min(p["mixture"][0] for p in points) - 0.1
    curve = {key: np.array(values)[shown] for key, values in bands["curves"][index].items()}
    axis.fill_between(share[shown], curve["low"], curve["high"], alpha=0.25, label="95% band")
    axis.plot(share[shown], curve["fit"], label="fitted law")
    for held in (False, True):
        chosen = [p for p in points if p["held_out"] == held]
        if chosen:
            axis.scatter(
                [p["mixture"][0] for p in chosen],
                [p["loss"][domain] for p in chosen],
                marker="x" if held else "o",
                label="held-out pilots" if held else "pilots",
                zorder=3,
            )
    limit = results.get("limit")
    if limit is not None and limit["domain"] == domain:
        axis.axhline(limit["value"], color="tab:red", linewidth=1, label="limit (start + eps)")
    if results["recommended"] is not None:
        label = "recommended (extrapolated)" if results.get("extrapolated") else "recommended"
        axis.axvline(results["recommended"][0], linestyle="--", color="k", label=label)
    axis.set_xlabel(f"{results['domains'][0]} share")


def write_report(results: dict[str, Any], out: Path) -> None:
    write_text(out / "report.md", markdown_report(results))
    mixlaw_plot(results, out / "mixlaw.png")
