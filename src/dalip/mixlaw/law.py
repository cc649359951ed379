"""Data mixing laws (Ye et al. 2024, arXiv 2403.16952): each domain's validation loss as a
function of the training mixture, fitted on a few pilot mixtures, and the mixture a user's
objective asks for.

For M domains with proportions r (summing to 1), domain i's loss is

    L_i(r) = c_i + k_i * exp(sum_{j < M} t_ij * r_j)

(the last domain's share is 1 minus the others, so its exponent is absorbed in k_i). For two
domains, L_i(s) = c_i + k_i * exp(t_i * s) with s the first domain's share. The fit minimises
a Huber loss of the residuals with scipy's L-BFGS-B from several starts (as the paper does);
uncertainty comes from refitting on bootstrap resamples of the pilots. Pilots at two or more
step budgets fit laws in steps, L_g(S) = E + B_g * S^-beta (`fit_step_laws`), that predict
each mixture's loss at a longer budget. `recommend` searches a grid of the simplex for the
mixture an objective asks for.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits


def one_blas_thread(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run `function` with one BLAS thread: these fits have 3-10 parameters, and L-BFGS-B's
    BLAS calls ran 13x slower with a thread per core on 2 busy cores."""

    @functools.wraps(function)
    def limited(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return limited


HUBER_DELTA = 1e-3  # losses differ by hundredths between pilots; beyond this a residual counts linearly


@dataclass(frozen=True)
class Law:
    """One domain's fitted law: `c + k * exp(t . r[:-1])`; `rms`: the fit's residual RMS."""

    c: float
    k: float
    t: tuple[float, ...]
    rms: float

    def __call__(self, shares: np.ndarray) -> np.ndarray:
        """Losses at mixtures (N, M) (or (M,)), or at first-domain shares (N,) for two domains."""
        shares = _as_mixtures(shares, len(self.t) + 1)
        return self.c + self.k * np.exp(shares[:, :-1] @ np.asarray(self.t))

    def to_dict(self) -> dict[str, object]:
        return {"c": self.c, "k": self.k, "t": list(self.t), "rms": self.rms}


def _as_mixtures(shares: np.ndarray | Sequence[float], domains: int | None = None) -> np.ndarray:
    """Mixtures (N, M): a 1-D array is first-domain shares of two domains (or, for M > 2
    domains, one mixture); rows must be proportions summing to 1."""
    array = np.asarray(shares, dtype=float)
    if array.ndim == 1 and (domains in (None, 2)):
        array = np.stack([array, 1.0 - array], axis=1)
    array = np.atleast_2d(array)
    if domains is not None and array.shape[1] != domains:
        raise ValueError(f"mixtures: expected {domains} proportions per mixture, got {array.shape[1]}")
    if np.any(array < 0) or not np.allclose(array.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("mixtures: every mixture's proportions must be >= 0 and sum to 1")
    return array


def parameters(domains: int) -> int:
    """Free parameters of one domain's law: c, k and one exponent per domain but the last."""
    return 2 + (domains - 1)


def _huber(residuals: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    small = np.abs(residuals) <= delta
    value = np.where(small, 0.5 * residuals**2, delta * (np.abs(residuals) - 0.5 * delta))
    grad = np.where(small, residuals, delta * np.sign(residuals))
    return float(value.sum()), grad


@one_blas_thread
def fit_law(
    shares: np.ndarray | Sequence[float],
    losses: Sequence[float],
    restarts: int = 8,
    seed: int = 0,
    delta: float = HUBER_DELTA,
) -> Law:
    """The law through pilot `losses` at mixtures `shares` (N, M), or first-domain shares (N,)
    for two domains. ValueError when there are no more pilots than parameters or the losses
    are not finite."""
    losses = np.asarray(losses, dtype=float)
    mixtures = _as_mixtures(shares)
    if len(mixtures) != len(losses):
        raise ValueError(f"mixtures: {len(mixtures)} given for {len(losses)} losses")
    needed = parameters(mixtures.shape[1])
    if len(losses) <= needed:
        raise ValueError(
            f"{len(losses)} pilot mixtures fit no law of {needed} parameters per domain "
            f"(give at least {needed + 1})"
        )
    if not np.all(np.isfinite(losses)):
        raise ValueError("pilot losses: every loss must be finite")
    x = mixtures[:, :-1]
    scale = float(np.ptp(losses)) or 1.0

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        c, log_k, t = theta[0], theta[1], theta[2:]
        exponential = np.exp(np.clip(log_k + x @ t, -50, 50))
        value, grad = _huber((c + exponential - losses) / scale, delta)
        gradient = np.concatenate([[grad.sum()], [grad @ exponential], (grad * exponential) @ x]) / scale
        return value, gradient

    rng = np.random.default_rng(seed)
    best = None
    for _ in range(restarts):
        c0 = float(losses.min()) - scale * rng.uniform(0.0, 2.0)
        start = np.concatenate(
            [[c0, np.log(max(float(losses.mean()) - c0, 1e-6))], rng.normal(0, 2, x.shape[1])]
        )
        result = minimize(objective, start, jac=True, method="L-BFGS-B")
        if best is None or result.fun < best.fun:
            best = result
    c, log_k, t = best.x[0], best.x[1], best.x[2:]
    law = Law(float(c), float(np.exp(log_k)), tuple(float(v) for v in t), 0.0)
    rms = float(np.sqrt(np.mean((law(mixtures) - losses) ** 2)))
    return Law(law.c, law.k, law.t, rms)


def bootstrap_laws(
    shares: np.ndarray | Sequence[float], losses: Sequence[float], resamples: int = 200, seed: int = 0
) -> list[Law]:
    """Laws refitted on pilots drawn with replacement (resamples with too few distinct
    mixtures to fit are drawn again, at most 10 times as many draws as asked)."""
    shares, losses = np.asarray(shares, dtype=float), np.asarray(losses, dtype=float)
    rng = np.random.default_rng(seed)
    needed = parameters(_as_mixtures(shares).shape[1])
    laws: list[Law] = []
    for _ in range(10 * resamples):
        if len(laws) == resamples:
            break
        rows = rng.integers(0, len(losses), len(losses))
        if len(np.unique(rows)) <= needed:
            continue
        laws.append(fit_law(shares[rows], losses[rows], restarts=3, seed=int(rng.integers(1 << 31))))
    return laws


@one_blas_thread
def fit_step_laws(
    steps: Sequence[float], groups: Sequence[int], losses: Sequence[float]
) -> Callable[[int, float], float]:
    """Step laws L_g(S) = E + B_g * S^-beta through losses of runs of several lengths, one
    group g per mixture: the exponent and the floor E are shared, the scale is each mixture's
    (so two budgets per mixture fit it once there are 3 or more mixtures). Returns
    predict(group, steps)."""
    steps, losses = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    groups = np.asarray(groups, dtype=int)
    count = int(groups.max()) + 1 if len(groups) else 0
    if np.any(steps <= 0) or len(np.unique(steps)) < 2:
        raise ValueError("steps: a law in steps needs runs of two or more positive step budgets")
    if len(losses) <= count + 2:
        raise ValueError(f"steps: {len(losses)} runs fit no step law of {count + 2} parameters")
    scale = float(np.ptp(losses)) or 1.0
    reference = float(steps.min())

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        e, beta, log_b = theta[0], theta[1], theta[2:]
        decay = (steps / reference) ** -beta
        term = np.exp(log_b[groups]) * decay
        residual = (e + term - losses) / scale
        d_log_b = np.bincount(groups, weights=residual * term, minlength=count)
        d_beta = -np.sum(residual * term * np.log(steps / reference))
        return float(0.5 * residual @ residual), np.concatenate([[residual.sum(), d_beta], d_log_b]) / scale

    best = None
    for floor in (0.5, 2.0, 5.0):
        e0 = float(losses.min()) - floor * scale
        start = np.concatenate([[e0, 0.5], np.log(np.maximum(losses.max() - e0, 1e-6)) * np.ones(count)])
        bounds = [(None, None), (1e-3, 5.0)] + [(None, None)] * count
        result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds)
        if best is None or result.fun < best.fun:
            best = result
    e, beta, log_b = best.x[0], best.x[1], best.x[2:]
    return lambda group, s: float(e + np.exp(log_b[group]) * (float(s) / reference) ** -beta)


def simplex_grid(domains: int, points: int = 100_000) -> np.ndarray:
    """Mixtures (N, M) of a regular grid on the simplex, every share > 0: the finest grid of
    steps 1/n (n <= 200) with at most `points` mixtures."""
    n = 200
    while n > domains and math.comb(n - 1, domains - 1) > points:
        n -= 1
    bars = np.array(list(itertools.combinations(range(1, n), domains - 1)), dtype=float)
    edges = np.concatenate([np.zeros((len(bars), 1)), bars, np.full((len(bars), 1), n)], axis=1)
    return np.diff(edges, axis=1) / n


def recommend(
    laws: Sequence[Law],
    target: int,
    keep: int | None = None,
    limit: float | None = None,
    weights: Sequence[float] | None = None,
    grid: np.ndarray | None = None,
) -> np.ndarray | None:
    """The mixture (M,) an objective asks for, from one law per domain (in mixture order):
    with `weights`, the lowest `sum_i weights[i] * L_i`; else the lowest predicted loss of
    domain `target` among mixtures whose predicted loss of domain `keep` stays at or below
    `limit` (the critical-ratio form), None if none does."""
    grid = simplex_grid(len(laws)) if grid is None else _as_mixtures(grid, len(laws))
    if weights is not None:
        if len(weights) != len(laws) or min(weights) < 0 or not sum(weights) > 0:
            raise ValueError("weights: expected one non-negative weight per domain, not all 0")
        total = sum(w * law(grid) for w, law in zip(weights, laws))
        return grid[int(np.argmin(total))]
    if keep is None or limit is None:
        raise ValueError("recommend: give `weights`, or the domain to keep and its loss limit")
    allowed = grid[laws[keep](grid) <= limit]
    if len(allowed) == 0:
        return None
    return allowed[int(np.argmin(laws[target](allowed)))]
