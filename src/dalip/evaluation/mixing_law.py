"""Data mixing laws (Ye et al. 2024, arXiv 2403.16952): each domain's validation loss as a
function of the training mixture, fitted on a few pilot mixtures, and the mixture a user's
objective asks for.

For M domains with proportions r (summing to 1), domain i's loss is

    L_i(r) = c_i + k_i * exp(sum_{j < M} t_ij * r_j)

(the last domain's share is 1 minus the others, so its exponent is absorbed in k_i). For two
domains, L_i(s) = c_i + k_i * exp(t_i * s) with s the first domain's share. The fit minimises
a Huber loss of the residuals with scipy's L-BFGS-B from several starts (as the paper does);
uncertainty comes from refitting on bootstrap resamples of the pilots. A step budget's power
law L(S) = E + B * S^-beta extrapolates a loss measured along a run to a longer run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

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


def power_law_in_steps(steps: Sequence[float], losses: Sequence[float]) -> Callable[[float], float]:
    """L(S) = E + B * S^-beta through losses measured at `steps` of one run (at least 4)."""
    steps, losses = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    if len(steps) < 4 or np.any(steps <= 0):
        raise ValueError("steps: a power law in steps needs losses at 4 or more positive steps")
    scale = float(np.ptp(losses)) or 1.0

    def objective(theta: np.ndarray) -> float:
        e, log_b, beta = theta
        return float(np.sum(((e + np.exp(log_b) * steps**-beta - losses) / scale) ** 2))

    starts = [
        [float(losses.min()) - scale * f, np.log(scale * steps.min() ** b + 1e-9), b]
        for f in (0.1, 1.0)
        for b in (0.3, 1.0)
    ]
    best = min(
        (minimize(objective, s, method="Nelder-Mead", options={"maxiter": 4000}) for s in starts),
        key=lambda r: r.fun,
    )
    e, log_b, beta = best.x
    return lambda s: float(e + np.exp(log_b) * float(s) ** -beta)


def critical_share(
    domain: Law, general: Law, general_limit: float, grid: np.ndarray | None = None
) -> float | None:
    """The first-domain share in (0, 1) with the lowest predicted domain loss among those whose
    predicted general loss stays at or below `general_limit` (two domains); None if none does."""
    grid = np.linspace(0.005, 0.995, 199) if grid is None else np.asarray(grid, dtype=float)
    allowed = grid[general(grid) <= general_limit]
    if len(allowed) == 0:
        return None
    return float(allowed[np.argmin(domain(allowed))])


def weighted_share(domain: Law, general: Law, weight: float, grid: np.ndarray | None = None) -> float:
    """The first-domain share minimising `weight * domain + (1 - weight) * general` (two domains)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight: expected a number in [0, 1], got {weight}")
    grid = np.linspace(0.005, 0.995, 199) if grid is None else np.asarray(grid, dtype=float)
    return float(grid[np.argmin(weight * domain(grid) + (1 - weight) * general(grid))])
