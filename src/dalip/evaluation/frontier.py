"""The gain-retention frontier: which tuning recipe keeps more general accuracy for the
domain accuracy it gains, read from WiSE-FT sweeps (`dalip.evaluation.wiseft.interpolate`).

Each sweep is a curve from the start model (w = 0) to a tuned model (w = 1) in the plane of
domain gain (domain top-1 minus the start's) and general accuracy. Two readings of a curve:
- general accuracy at matched gain: the curve's general accuracy where its gain equals a
  level (a fraction of the baseline recipe's full gain, that is of its w = 1 model), linear
  between sweep points; the best such point when the curve crosses the level more than
  once; None when the curve never gains that much;
- the dominated area: the area of the (gain, general) region the curve's points dominate,
  from gain 0 and a common floor of general accuracy, so that a curve further up and to the
  right has more.
With several seeds per recipe (paired: the same seed for each recipe), the differences to
the baseline recipe are summarised by their mean and a 95% t interval over the seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

DEFAULT_LEVELS = (0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Curve:
    """One WiSE-FT sweep: a recipe's tuned model (of one seed) interpolated with the start."""

    recipe: str
    seed: str
    weights: list[float]
    domain: list[float]
    general: list[float]

    @property
    def gains(self) -> list[float]:
        """Domain accuracy gained over the start model (the w = 0 point), per weight."""
        start = self.domain[self.weights.index(0.0)]
        return [value - start for value in self.domain]

    def at(self, weight: float) -> tuple[float, float]:
        """(gain, general) at a swept weight."""
        index = self.weights.index(weight)
        return self.gains[index], self.general[index]


def curve_from_sweep(
    results: Mapping[str, Any], recipe: str, seed: str, domain: str, general: str, mode: str = "auto"
) -> Curve:
    """The curve of an `interpolate` result; `mode` "auto" reads "fused" where the sweep has
    it (a DALIP model) and "first" otherwise (a CLIP-tuned one). ValueError naming what is
    missing (a domain, w = 0 or w = 1)."""
    points = sorted(results["interpolation"], key=lambda point: point["weight"])
    weights = [float(point["weight"]) for point in points]
    if 0.0 not in weights or 1.0 not in weights:
        raise ValueError(f"{recipe}@{seed}: a frontier needs the weights 0 and 1 in its sweep, got {weights}")
    domains, generals = [], []
    for point in points:
        summary = point["summary"]
        chosen = ("fused" if "fused" in summary else "first") if mode == "auto" else mode
        if chosen not in summary:
            raise ValueError(
                f"{recipe}@{seed}: its sweep has no mode {chosen!r} (it has {', '.join(summary)})"
            )
        scores = summary[chosen]["domains"]
        for name in (domain, general):
            if name not in scores:
                raise ValueError(
                    f"{recipe}@{seed}: its suite has no domain {name!r} (it has {', '.join(scores)})"
                )
        domains.append(float(scores[domain]))
        generals.append(float(scores[general]))
    return Curve(recipe, seed, weights, domains, generals)


def general_at_gain(curve: Curve, gain: float) -> float | None:
    """The curve's general accuracy where its gain is `gain` (linear between sweep points,
    the best crossing when there are several); None when it never gains that much."""
    gains, generals = curve.gains, curve.general
    found = [generals[i] for i, g in enumerate(gains) if g == gain]
    for i in range(len(gains) - 1):
        low, high = gains[i], gains[i + 1]
        if min(low, high) < gain < max(low, high):
            share = (gain - low) / (high - low)
            found.append(generals[i] + share * (generals[i + 1] - generals[i]))
    return max(found) if found else None


def dominated_area(curve: Curve, floor: float, ceiling_gain: float) -> float:
    """Area of the (gain, general) region dominated by the curve's points (more of both is
    better), within gain [0, ceiling_gain] and general above `floor`."""
    points = sorted(
        ((min(max(g, 0.0), ceiling_gain), max(a, floor)) for g, a in zip(curve.gains, curve.general)),
        key=lambda point: -point[0],
    )
    area, best = 0.0, floor
    for index, (gain, general) in enumerate(points):  # sweep from the largest gain down
        best = max(best, general)
        next_gain = points[index + 1][0] if index + 1 < len(points) else 0.0
        area += (gain - next_gain) * (best - floor)
    return area


def paired_interval(differences: Sequence[float]) -> dict[str, Any]:
    """Mean and 95% t interval of paired differences (None bounds with one pair)."""
    n = len(differences)
    mean = sum(differences) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    spread = stats.tstd(differences) / math.sqrt(n) * stats.t.ppf(0.975, n - 1)
    return {"mean": mean, "low": mean - spread, "high": mean + spread, "n": n}


def frontier(
    curves: Sequence[Curve], baseline: str, levels: Sequence[float] = DEFAULT_LEVELS
) -> dict[str, Any]:
    """The frontier report's figures (module docstring): per curve, its full gain, general
    accuracy at each level of the baseline's gain of the same seed, and dominated area; per
    recipe other than the baseline, the paired differences to it over the seeds both have."""
    recipes = sorted({c.recipe for c in curves})
    if baseline not in recipes:
        raise ValueError(f"--baseline {baseline!r}: not one of the recipes {', '.join(recipes)}")
    by_key = {(c.recipe, c.seed): c for c in curves}
    if len(by_key) < len(curves):
        raise ValueError("each recipe may have one sweep per seed")
    floor = min(min(c.general) for c in curves)
    ceiling = max(max(c.gains) for c in curves)
    rows = []
    for curve in curves:
        reference = by_key.get((baseline, curve.seed))
        full = reference.at(1.0)[0] if reference is not None else None
        at_levels = {
            f"{level:g}": None if full is None or full <= 0 else general_at_gain(curve, level * full)
            for level in levels
        }
        row = {
            "recipe": curve.recipe,
            "seed": curve.seed,
            "gain": curve.at(1.0)[0],
            "general": curve.at(1.0)[1],
        }
        rows.append({**row, "general_at_level": at_levels, "area": dominated_area(curve, floor, ceiling)})
    return {
        "baseline": baseline,
        "levels": [float(level) for level in levels],
        "start": {"general": curves[0].general[curves[0].weights.index(0.0)]},
        "curves": rows,
        "paired": {r: _paired(rows, r, baseline, levels) for r in recipes if r != baseline},
        "area_floor": floor,
        "area_ceiling_gain": ceiling,
    }


def _paired(
    rows: list[dict[str, Any]], recipe: str, baseline: str, levels: Sequence[float]
) -> dict[str, Any]:
    ours = {row["seed"]: row for row in rows if row["recipe"] == recipe}
    theirs = {row["seed"]: row for row in rows if row["recipe"] == baseline}
    seeds = sorted(set(ours) & set(theirs))
    result: dict[str, Any] = {"seeds": seeds, "general_at_level": {}}
    for level in (f"{value:g}" for value in levels):
        pairs = [
            ours[s]["general_at_level"][level] - theirs[s]["general_at_level"][level]
            for s in seeds
            if ours[s]["general_at_level"][level] is not None
            and theirs[s]["general_at_level"][level] is not None
        ]
        reached = sum(ours[s]["general_at_level"][level] is not None for s in seeds)
        result["general_at_level"][level] = {**paired_interval(pairs), "reached": reached} if pairs else None
    for key in ("gain", "general", "area"):
        result[key] = paired_interval([ours[s][key] - theirs[s][key] for s in seeds]) if seeds else None
    return result
