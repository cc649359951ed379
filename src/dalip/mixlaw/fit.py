"""From measured pilots to a recommendation: the laws per domain with bootstrap bands, the
held-out and leave-one-out errors, and the mixture the user's objective asks for.

A pilot row is {"mixture": [share per domain], "seed", "steps", "held_out", "loss": {domain:
loss}}. With pilots at two or more step budgets and a `full_steps` to predict, each
(mixture, seed)'s loss at `full_steps` comes from step laws with a shared floor and exponent
(`fit_step_laws`, fitted on every pilot); the mixture law is then fitted to those predictions.
Held-out mixtures never enter the mixture law's fit.

The recommendation is searched within the fitted pilots' range of shares (`within_range`,
what `dalip mixlaw` does unless --extrapolate) or over the whole simplex, flagged where it
lies outside that range; every interval is a bootstrap percentile interval that contains its
point estimate (`interval`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dalip.mixlaw.law import (
    Law,
    bootstrap_laws,
    fit_law,
    fit_step_laws,
    parameters,
    recommend,
    simplex_grid,
)


@dataclass(frozen=True)
class Objective:
    """What the recommendation optimises: the lowest loss of `target` with the loss of `keep`
    at most `eps` above the start model's (`start_loss`), or, with `weights` (one per domain),
    the lowest weighted sum of the domains' losses."""

    target: str
    keep: str | None = None
    eps: float | None = None
    start_loss: float | None = None
    weights: Mapping[str, float] | None = None

    def describe(self) -> str:
        if self.weights is not None:
            return "minimise " + " + ".join(f"{w:g} x L({d})" for d, w in self.weights.items())
        limit = f"{self.start_loss:.4f} + {self.eps:g}"
        return f"minimise L({self.target}) with L({self.keep}) <= {limit} (the start model's + eps)"


def points(
    rows: Sequence[Mapping[str, Any]], domains: Sequence[str], full_steps: int | None
) -> list[dict[str, Any]]:
    """One point per (mixture, seed): its losses at the largest pilot budget, or, given
    `full_steps` and two or more budgets, as the step laws predict them there."""
    budgets = sorted({row["steps"] for row in rows})
    if full_steps is None or len(budgets) < 2:
        return [dict(row, predicted_from_steps=False) for row in rows if row["steps"] == budgets[-1]]
    groups = sorted({(tuple(row["mixture"]), row["seed"]) for row in rows})
    index = {group: number for number, group in enumerate(groups)}
    ids = [index[(tuple(row["mixture"]), row["seed"])] for row in rows]
    predict = {
        domain: fit_step_laws([row["steps"] for row in rows], ids, [row["loss"][domain] for row in rows])
        for domain in domains
    }
    held = {(tuple(row["mixture"]), row["seed"]): row["held_out"] for row in rows}
    return [
        {
            "mixture": list(group[0]),
            "seed": group[1],
            "steps": full_steps,
            "held_out": held[group],
            "loss": {domain: predict[domain](number, full_steps) for domain in domains},
            "predicted_from_steps": True,
        }
        for group, number in index.items()
    ]


def _fit(chosen: Sequence[Mapping[str, Any]], domains: Sequence[str]) -> list[Law]:
    mixtures = np.array([row["mixture"] for row in chosen])
    return [fit_law(mixtures, [row["loss"][domain] for row in chosen]) for domain in domains]


def _distinct(chosen: Sequence[Mapping[str, Any]]) -> list[tuple[float, ...]]:
    return sorted({tuple(row["mixture"]) for row in chosen})


def _observed(chosen: Sequence[Mapping[str, Any]], mixture: tuple[float, ...], domain: str) -> float:
    return float(np.mean([row["loss"][domain] for row in chosen if tuple(row["mixture"]) == mixture]))


def errors(
    laws: Sequence[Law], chosen: Sequence[Mapping[str, Any]], domains: Sequence[str]
) -> list[dict[str, Any]]:
    """Predicted vs observed (the mean over seeds) per mixture and domain."""
    found = []
    for mixture in _distinct(chosen):
        for law, domain in zip(laws, domains):
            predicted, observed = float(law(np.array([mixture]))[0]), _observed(chosen, mixture, domain)
            found.append(
                {
                    "mixture": list(mixture),
                    "domain": domain,
                    "predicted": predicted,
                    "observed": observed,
                    "abs_error": abs(predicted - observed),
                    "rel_error": abs(predicted - observed) / abs(observed),
                }
            )
    return found


def leave_one_out(fitted: Sequence[Mapping[str, Any]], domains: Sequence[str]) -> list[dict[str, Any]]:
    """Each fitted mixture predicted by the law fitted without it (where the rest still fit);
    `extrapolated`: the mixture lies outside the range of the others' shares."""
    distinct = _distinct(fitted)
    if len(distinct) - 1 <= parameters(len(domains)):
        return []
    found = []
    for mixture in distinct:
        rest = [row for row in fitted if tuple(row["mixture"]) != mixture]
        others = np.array([row["mixture"] for row in rest])
        # outside the others' range in some share: the left-out law extrapolates there
        outside = not _inside(np.array([mixture]), others.min(axis=0), others.max(axis=0))[0]
        for error in errors(
            _fit(rest, domains), [r for r in fitted if tuple(r["mixture"]) == mixture], domains
        ):
            found.append(dict(error, extrapolated=bool(outside)))
    return found


def _inside(mixtures: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Which mixtures (N, M) have every share within [low, high] (M,): (N,) booleans."""
    return np.all((mixtures >= low - 1e-9) & (mixtures <= high + 1e-9), axis=1)


def _grid(mixtures: np.ndarray, within_range: bool) -> np.ndarray:
    """The mixtures a recommendation is searched among: the simplex grid, or with
    `within_range` its part within the pilots' share ranges and the pilot mixtures themselves."""
    grid = simplex_grid(mixtures.shape[1])
    if not within_range:
        return grid
    inside = grid[_inside(grid, mixtures.min(axis=0), mixtures.max(axis=0))]
    return np.concatenate([inside, np.unique(mixtures, axis=0)])


def _recommend(
    laws: Sequence[Law], domains: Sequence[str], objective: Objective, grid: np.ndarray
) -> np.ndarray | None:
    if objective.weights is not None:
        weights = [objective.weights.get(domain, 0.0) for domain in domains]
        return recommend(laws, domains.index(objective.target), weights=weights, grid=grid)
    limit = objective.start_loss + objective.eps
    return recommend(laws, domains.index(objective.target), domains.index(objective.keep), limit, grid=grid)


def interval(values: Any, point: Any) -> tuple[np.ndarray, np.ndarray]:
    """The 95% interval of a quantity: the 2.5th and 97.5th percentiles of its bootstrap
    `values` (N, ...), widened to contain `point`, the fit's own value. Where every
    refit falls on one side of the fit (a biased or extrapolating law), the percentiles alone
    would exclude the estimate they are meant to bound."""
    low, high = np.percentile(np.asarray(values, dtype=float), [2.5, 97.5], axis=0)
    return np.minimum(low, point), np.maximum(high, point)


def fit_study(
    rows: Sequence[Mapping[str, Any]],
    domains: Sequence[str],
    objective: Objective,
    full_steps: int | None = None,
    resamples: int = 200,
    seed: int = 0,
    within_range: bool = True,
) -> dict[str, Any]:
    """The laws, their bootstrap, the errors and the recommendation (module docstring).
    `within_range`: recommend only mixtures within the fitted pilots' range of shares (each
    domain's lowest to highest), where the laws interpolate; `optimum_outside_range` then
    gives the optimum outside it, if the laws put it there. Otherwise the whole simplex is
    searched and `extrapolated` says whether the recommendation lies outside that range."""
    domains = list(domains)
    chosen = points(rows, domains, full_steps)
    fitted = [row for row in chosen if not row["held_out"]]
    laws = _fit(fitted, domains)
    mixtures = np.array([row["mixture"] for row in fitted])
    low, high = mixtures.min(axis=0), mixtures.max(axis=0)
    grid = _grid(mixtures, within_range)
    best = _recommend(laws, domains, objective, grid)
    free = _recommend(laws, domains, objective, simplex_grid(len(domains))) if within_range else None
    result: dict[str, Any] = {
        "domains": domains,
        "objective": objective.describe(),
        "points": chosen,
        "laws": {domain: law.to_dict() for domain, law in zip(domains, laws)},
        "fit_errors": errors(laws, fitted, domains),
        "held_out": errors(laws, [row for row in chosen if row["held_out"]], domains),
        "leave_one_out": leave_one_out(fitted, domains),
        "recommended": None if best is None else [float(share) for share in best],
        "pilot_range": {"low": low.tolist(), "high": high.tolist()},
        "extrapolate": not within_range,
        "extrapolated": bool(best is not None and not _inside(best[None], low, high)[0]),
        "optimum_outside_range": None
        if free is None or _inside(free[None], low, high)[0]
        else [float(share) for share in free],
        "limit": None
        if objective.weights is not None
        else {"domain": objective.keep, "value": objective.start_loss + objective.eps},
    }
    boots = [
        bootstrap_laws(mixtures, [row["loss"][domain] for row in fitted], resamples, seed)
        for domain in domains
    ]
    result.update(_uncertainty(laws, boots, best, domains, objective, grid))
    return result


def _uncertainty(
    laws: Sequence[Law],
    boots: Sequence[Sequence[Law]],
    best: np.ndarray | None,
    domains: list[str],
    objective: Objective,
    grid: np.ndarray,
) -> dict[str, Any]:
    """The recommendation and predicted losses again from each bootstrap refit (`interval`),
    and the laws' bands."""
    pairs = list(zip(*boots))  # the same resampled pilots for every domain (same seed and size)
    again = [_recommend(list(pair), domains, objective, grid) for pair in pairs]
    feasible = np.array([mixture for mixture in again if mixture is not None])
    found: dict[str, Any] = {
        "bootstrap": {"resamples": len(pairs), "infeasible": len(again) - len(feasible)},
        "bands": _bands(laws, boots, len(domains)),
    }
    if best is not None:
        found["recommended_interval"] = (
            np.stack(interval(feasible, best), axis=1).tolist() if len(feasible) else None
        )
        found["predicted"] = {
            domain: {
                "loss": float(law(best[None])[0]),
                "interval": [
                    float(end) for end in interval([b(best[None])[0] for b in boot], law(best[None])[0])
                ],
            }
            for domain, law, boot in zip(domains, laws, boots)
        }
    return found


def _bands(laws: Sequence[Law], boots: Sequence[Sequence[Law]], domains: int) -> dict[str, Any] | None:
    """Two domains: each law and its 95% bootstrap band (`interval`) over a grid of
    first-domain shares."""
    if domains != 2:
        return None
    grid = np.linspace(0.01, 0.99, 99)
    bands = []
    for law, boot in zip(laws, boots):
        fit = law(grid)
        low, high = interval([b(grid) for b in boot], fit)
        bands.append({"fit": fit.tolist(), "low": low.tolist(), "high": high.tolist()})
    return {"share": grid.tolist(), "curves": bands}
