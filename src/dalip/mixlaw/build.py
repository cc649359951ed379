"""A `Study` from the options of `dalip mixlaw` (shares or a mixture file, held-out
mixtures, seeds, budgets, validation data and the objective), each checked with one line."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from dalip.config import DEFAULT_ANSWER_MODE, TrainConfig
from dalip.mixlaw.fit import Objective
from dalip.mixlaw.measure import Measures
from dalip.mixlaw.plan import domains_of, parse_shares, read_mixtures
from dalip.mixlaw.study import Study


def _mixtures(text: str | None, domains: Sequence[str], target: str, option: str) -> list[tuple[float, ...]]:
    if text is None:
        return []
    if os.path.exists(text) or text.endswith((".csv", ".tsv")):
        return read_mixtures(text, domains, option)
    return parse_shares(text, domains, target, option)


def build_study(
    base: TrainConfig,
    shares: str | None = None,
    mixtures: str | None = None,
    holdout: str | None = None,
    seeds: Sequence[int] = (0,),
    steps: Sequence[int] = (),
    full_steps: int | None = None,
    val: Mapping[str, str] | None = None,
    zeroshot: Mapping[str, str] | None = None,
    templates: Mapping[str, str] | None = None,
    mode: str | None = None,
    batch_size: int = 64,
    target: str | None = None,
    keep: str | None = None,
    eps: float | None = None,
    weights: Mapping[str, float] | None = None,
    confirm: bool = False,
    resamples: int = 200,
    extrapolate: bool = False,
) -> Study:
    """The study these options describe (docs: "Choosing the mix"); ValueError naming the
    option for a mistake. `shares` (two domains) or `mixtures` (a CSV) give the fitted pilots;
    `extrapolate`: the recommendation may lie outside the pilots' range of shares."""
    domains = domains_of(base)
    target = target or domains[0]
    if target not in domains:
        raise ValueError(f"--domain: no source is of domain {target!r}; the domains are {', '.join(domains)}")
    keep = _objective(domains, target, keep, eps, weights)
    if (shares is None) == (mixtures is None):
        raise ValueError("--shares / --mixtures: give the pilot mixtures with exactly one of them")
    fitted = (
        _mixtures(shares, domains, target, "--shares")
        if shares
        else read_mixtures(mixtures, domains, "--mixtures")
    )
    if mode is None and base.loss.kind == "dalip":  # the mode the pilots answer with, when fixed
        mode = DEFAULT_ANSWER_MODE if base.model.answer_mode == "auto" else base.model.answer_mode
    mode = mode or "first"
    # every similarity a DALIP model has is measured (the report keeps them all); the fit uses `mode`
    modes = (
        ("fused", "first", "second") if base.loss.kind == "dalip" else tuple(dict.fromkeys([mode, "first"]))
    )
    return Study(
        base=base,
        mixtures=fitted,
        held_out=_mixtures(holdout, domains, target, "--holdout"),
        measures=Measures(
            dict(val or {}),
            dict(zeroshot or {}),
            dict(templates or {}),
            modes,
            batch_size,
        ),
        objective=Objective(target, keep, eps, None, None if weights is None else dict(weights)),
        seeds=list(seeds),
        steps=list(steps),
        full_steps=full_steps,
        mode=mode,
        confirm=confirm,
        resamples=resamples,
        extrapolate=extrapolate,
        mixtures_option="--shares" if shares else "--mixtures",
    )


def _objective(
    domains: Sequence[str],
    target: str,
    keep: str | None,
    eps: float | None,
    weights: Mapping[str, float] | None,
) -> str | None:
    """The domain whose loss --eps holds (by default the other of two), once the objective's
    options are checked: --eps, finite and > 0, or --weight (`_check_weighted`)."""
    if weights is not None:
        _check_weighted(weights, eps, keep)
        return None
    if keep is None:
        if len(domains) != 2:
            raise ValueError(f"--keep: name the domain whose loss is held (one of {', '.join(domains)})")
        keep = next(domain for domain in domains if domain != target)
    if eps is None:
        raise ValueError(
            f"--eps: say how far the {keep} loss may rise above the start model's (e.g. --eps 0.1), "
            "or give a weighted objective with --weight"
        )
    if not math.isfinite(eps):
        raise ValueError(f"--eps: expected a finite loss margin > 0, got {eps}")
    if not eps > 0:
        raise ValueError(f"--eps: expected a loss margin > 0, got {eps}")
    return keep


def _check_weighted(weights: Mapping[str, float], eps: float | None, keep: str | None) -> None:
    """A weighted objective: no --eps or --keep beside it, weights finite, >= 0, not all 0."""
    if eps is not None:
        raise ValueError(
            "--eps and --weight: give one objective: --eps bounds the kept domain's loss, "
            "--weight minimises a weighted sum of the domains' losses"
        )
    if keep is not None:
        raise ValueError(
            "--keep: applies to the --eps objective; --weight weighs every domain's loss instead"
        )
    for domain, weight in weights.items():
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"--weight: expected a finite weight >= 0 for {domain}, got {weight:g}")
    if not any(weight > 0 for weight in weights.values()):
        raise ValueError("--weight: every weight is 0; give at least one domain a weight > 0")
