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
the baseline recipe are summarised by their mean and a 95% t interval over the seeds. Pairs
compare models tuned from one start model: every sweep that records its start model (its
sha256) must record the same one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

from dalip.readers import quoted

DEFAULT_LEVELS = (0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Curve:
    """One WiSE-FT sweep: a recipe's tuned model (of one seed) interpolated with the start.
    `start_model`: the start model's sha256 (its spec where it has none, an open_clip
    pretrained tag), None when the sweep does not record it."""

    recipe: str
    seed: str
    weights: list[float]
    domain: list[float]
    general: list[float]
    start_model: str | None = None
    mode: str | None = None  # the similarity mode the sweep was read in

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
    results: Mapping[str, Any],
    recipe: str,
    seed: str,
    domain: str,
    general: str,
    mode: str = "auto",
    source: str | None = None,
) -> Curve:
    """The curve of an `interpolate` result; `mode` "auto" reads the mode the tuned model answers
    with (the sweep's `answer_mode`; a sweep that names none: first, else fused). ValueError naming the sweep
    (`source`, default RECIPE@SEED) and what is wrong: a missing domain, mode, w = 0 or w = 1,
    a repeated weight, an accuracy that is not a number in [0, 1]."""
    source = source or f"{recipe}@{seed}"
    if mode == "auto":
        mode = results.get("answer_mode") if isinstance(results.get("answer_mode"), str) else "auto"
    if mode == "auto":  # a sweep that names none: what its tuned model answers with today
        points = results.get("interpolation")
        first_point = points[0] if isinstance(points, list) and points else {}
        summary = first_point.get("summary", {}) if isinstance(first_point, Mapping) else {}
        mode = "first" if "first" in summary or "fused" not in summary else "fused"
    read = [
        _read_point(point, source, index, mode, (domain, general))
        for index, point in enumerate(results["interpolation"])
    ]
    weights = [weight for weight, _, _ in read]
    repeated = sorted({weight for weight in weights if weights.count(weight) > 1})
    if repeated:
        raise ValueError(
            f"{source}: the weight w={repeated[0]:g} is repeated (a sweep has one point per weight)"
        )
    read.sort(key=lambda point: point[0])
    weights = [weight for weight, _, _ in read]
    if 0.0 not in weights or 1.0 not in weights:
        raise ValueError(f"{source}: a frontier needs the weights 0 and 1 in its sweep, got {weights}")
    domains, generals = [d for _, d, _ in read], [g for _, _, g in read]
    return Curve(recipe, seed, weights, domains, generals, _start_model(results), mode)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_point(
    point: Any, source: str, index: int, mode: str, names: tuple[str, str]
) -> tuple[float, float, float]:
    """(weight, domain accuracy, general accuracy) of the sweep's point `index`, the accuracies
    of the two domains `names` in `mode` (`curve_from_sweep`)."""
    where = f"{source}: interpolation[{index}]"
    if not isinstance(point, Mapping) or not isinstance(point.get("summary"), Mapping):
        raise ValueError(
            f"{where}: expected a point {{'weight': W, 'summary': {{...}}}}, got {quoted(point)}"
        )
    weight, summary = point.get("weight"), point["summary"]
    if not _is_number(weight) or not math.isfinite(weight):
        raise ValueError(f"{where}.weight is {quoted(weight)}, expected a finite number")
    chosen = mode
    if chosen not in summary:
        raise ValueError(f"{source}: its sweep has no mode {chosen!r} (it has {', '.join(summary)})")
    scores = summary[chosen].get("domains") if isinstance(summary[chosen], Mapping) else None
    if not isinstance(scores, Mapping):
        raise ValueError(f"{where}.summary.{chosen}.domains: missing (expected accuracies by domain)")
    accuracies = []
    for name in names:
        if name not in scores:
            raise ValueError(f"{source}: its suite has no domain {name!r} (it has {', '.join(scores)})")
        value = scores[name]
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise ValueError(
                f"{where}.summary.{chosen}.domains.{name} (w={weight:g}) is {quoted(value)}, "
                "expected an accuracy in [0, 1]"
            )
        accuracies.append(float(value))
    return float(weight), accuracies[0], accuracies[1]


def _start_model(results: Mapping[str, Any]) -> str | None:
    """The start model a sweep records: its sha256, else its spec; None when it records none."""
    start = results.get("start")
    model = (start.get("sha256") or start.get("spec")) if isinstance(start, Mapping) else None
    return model if isinstance(model, str) and model else None


def model_label(model: str) -> str:
    """A start model as the report shows it: a sha256's first 12 digits, a spec as it is."""
    is_sha256 = len(model) == 64 and all(c in "0123456789abcdef" for c in model)
    return model[:12] if is_sha256 else model


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
    recipe other than the baseline, the paired differences to it over the seeds both have.
    ValueError when the sweeps record different start models or a recipe shares no seed
    with the baseline (`_check_pairs`)."""
    recipes = sorted({c.recipe for c in curves})
    if baseline not in recipes:
        raise ValueError(f"--baseline {baseline!r}: not one of the recipes {', '.join(recipes)}")
    by_key = {(c.recipe, c.seed): c for c in curves}
    if len(by_key) < len(curves):
        raise ValueError("each recipe may have one sweep per seed")
    start_model, unrecorded = _check_pairs(curves, baseline)
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
            "mode": curve.mode,
        }
        rows.append({**row, "general_at_level": at_levels, "area": dominated_area(curve, floor, ceiling)})
    return {
        "baseline": baseline,
        "levels": [float(level) for level in levels],
        "start": {
            "general": curves[0].general[curves[0].weights.index(0.0)],
            "model": start_model,
            "unrecorded": unrecorded,
        },
        "curves": rows,
        "paired": {r: _paired(rows, r, baseline, levels) for r in recipes if r != baseline},
        "area_floor": floor,
        "area_ceiling_gain": ceiling,
    }


def _check_pairs(curves: Sequence[Curve], baseline: str) -> tuple[str | None, list[str]]:
    """The start model the sweeps record and the sweeps (RECIPE@SEED) that record none.
    ValueError when two record different start models (their differences would mix what the
    recipes did with where they started) or when a recipe has no seed the baseline has (it
    would be a row of "-" with nothing paired)."""
    recorded = [curve for curve in curves if curve.start_model is not None]
    for curve in recorded[1:]:
        first = recorded[0]
        if curve.start_model != first.start_model:
            raise ValueError(
                f"{curve.recipe}@{curve.seed} was tuned from the start model "
                f"{model_label(curve.start_model)}, {first.recipe}@{first.seed} from "
                f"{model_label(first.start_model)} (as their sweeps record it): a frontier pairs "
                "models tuned from one start model"
            )
    seeds: dict[str, set[str]] = {}
    for curve in curves:
        seeds.setdefault(curve.recipe, set()).add(curve.seed)
    for recipe in sorted(seeds):
        if recipe != baseline and not seeds[recipe] & seeds[baseline]:
            raise ValueError(
                f"recipe {recipe} shares no seed with the baseline recipe {baseline} (seeds "
                f"{', '.join(sorted(seeds[recipe]))} against {', '.join(sorted(seeds[baseline]))}): "
                f"nothing to pair; sweep {baseline} with one of its seeds or leave {recipe} out"
            )
    unrecorded = [f"{curve.recipe}@{curve.seed}" for curve in curves if curve.start_model is None]
    return (recorded[0].start_model if recorded else None), unrecorded


def _paired(
    rows: list[dict[str, Any]], recipe: str, baseline: str, levels: Sequence[float]
) -> dict[str, Any]:
    ours = {row["seed"]: row for row in rows if row["recipe"] == recipe}
    theirs = {row["seed"]: row for row in rows if row["recipe"] == baseline}
    seeds = sorted(set(ours) & set(theirs))
    unpaired = sorted(set(ours) - set(theirs))
    result: dict[str, Any] = {"seeds": seeds, "unpaired": unpaired, "general_at_level": {}}
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
