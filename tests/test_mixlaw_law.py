"""The mixing-law fitter recovers laws it generated (two and three domains, with noise),
refuses fits it cannot make, and the recommendations follow the fitted curves."""

from __future__ import annotations

import numpy as np
import pytest

from dalip.mixlaw.law import (
    Law,
    bootstrap_laws,
    fit_law,
    fit_step_laws,
    recommend,
    simplex_grid,
)

SHARES = np.array([0.5, 0.65, 0.8, 0.9, 0.95, 0.3, 0.1])
PLANT = Law(c=1.2, k=2.0, t=(-1.5,), rms=0.0)  # plant loss falls with the plant share
GENERAL = Law(c=1.5, k=0.05, t=(3.0,), rms=0.0)  # general loss rises with it


@pytest.mark.parametrize("truth", [PLANT, GENERAL], ids=["falling", "rising"])
def test_a_two_domain_law_is_recovered_from_noisy_pilots(truth):
    rng = np.random.default_rng(0)
    losses = truth(SHARES) + rng.normal(0, 0.002, len(SHARES))
    law = fit_law(SHARES, losses)
    grid = np.linspace(0.05, 0.99, 50)
    assert np.max(np.abs(law(grid) - truth(grid))) < 0.01  # the curve, not the (c, k) trade-off
    assert 0.0005 < law.rms < 0.004
    exact = fit_law(SHARES, truth(SHARES))
    assert np.max(np.abs(exact(grid) - truth(grid))) < 1e-3
    assert exact.t[0] == pytest.approx(truth.t[0], rel=0.05)


def test_a_three_domain_law_is_recovered():
    truth = Law(c=0.8, k=1.5, t=(-2.0, 0.7), rms=0.0)
    rng = np.random.default_rng(1)
    mixtures = rng.dirichlet(np.ones(3), size=12)
    law = fit_law(mixtures, truth(mixtures))
    held_out = rng.dirichlet(np.ones(3), size=20)
    assert np.max(np.abs(law(held_out) - truth(held_out))) < 2e-3


def test_fits_it_cannot_make_are_refused():
    with pytest.raises(ValueError, match="3 pilot mixtures fit no law of 3 parameters per domain"):
        fit_law([0.5, 0.7, 0.9], [1.0, 0.9, 0.8])
    with pytest.raises(ValueError, match="every loss must be finite"):
        fit_law(SHARES, [1.0, np.nan, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="sum to 1"):
        fit_law(np.full((5, 3), 0.5), np.ones(5))


def test_bootstrap_laws_spread_around_the_fit():
    rng = np.random.default_rng(2)
    losses = PLANT(SHARES) + rng.normal(0, 0.01, len(SHARES))
    laws = bootstrap_laws(SHARES, losses, resamples=12, seed=0)
    assert len(laws) == 12
    at = np.array([law(np.array([0.77]))[0] for law in laws])
    low, high = np.percentile(at, [2.5, 97.5])
    assert low < PLANT(np.array([0.77]))[0] < high and high - low < 0.1


def test_the_critical_share_keeps_the_general_loss_within_the_limit():
    limit = float(GENERAL(np.array([0.0]))[0]) + 0.2  # at most 0.2 above the share-0 loss
    share = recommend([PLANT, GENERAL], target=0, keep=1, limit=limit)[0]
    assert GENERAL(np.array([share]))[0] <= limit < GENERAL(np.array([share + 0.01]))[0]
    exact = np.log((limit - GENERAL.c) / GENERAL.k) / GENERAL.t[0]
    assert share == pytest.approx(exact, abs=0.006)
    assert recommend([PLANT, GENERAL], 0, 1, GENERAL.c) is None  # nothing reaches the asymptote
    assert recommend([PLANT, GENERAL], 0, weights=[1, 0])[0] == pytest.approx(0.995)  # plant alone
    assert recommend([PLANT, GENERAL], 0, weights=[0, 1])[0] == pytest.approx(0.005)
    with pytest.raises(ValueError, match="one non-negative weight per domain"):
        recommend([PLANT, GENERAL], 0, weights=[1, -1])


def test_the_simplex_grid_covers_mixtures_with_every_share_positive():
    two = simplex_grid(2)
    assert len(two) == 199 and two[0] == pytest.approx([0.005, 0.995])
    three = simplex_grid(3)
    assert np.allclose(three.sum(axis=1), 1) and three.min() > 0 and len(three) == 19701
    four = simplex_grid(4, points=5000)
    assert len(four) <= 5000 and np.allclose(four.sum(axis=1), 1)


def test_three_domain_recommendation_finds_the_constrained_optimum():
    first = Law(c=1.0, k=1.0, t=(-2.0, 0.0), rms=0.0)  # falls with domain 0's share
    last = Law(c=1.0, k=0.2, t=(1.0, 1.0), rms=0.0)  # rises as domain 2's share falls
    limit = 1.0 + 0.2 * np.exp(0.6)  # domain 2 keeps at least 40%
    mixture = recommend([first, Law(1, 1, (0.0, 0.0), 0), last], target=0, keep=2, limit=limit)
    assert mixture == pytest.approx([0.6, 0.0, 0.4], abs=0.006)


def test_step_laws_with_two_budgets_predict_a_longer_run():
    scales = np.array([3.0, 2.0, 1.5, 1.0])
    truth = lambda g, s: 1.1 + scales[g] * (s / 50) ** -0.4  # noqa: E731
    steps = np.array([50, 100] * 4)
    groups = np.repeat(np.arange(4), 2)
    predict = fit_step_laws(steps, groups, [truth(g, s) for g, s in zip(groups, steps)])
    for group in range(4):
        assert predict(group, 400) == pytest.approx(truth(group, 400), abs=2e-3)
    with pytest.raises(ValueError, match="two or more positive step budgets"):
        fit_step_laws([100, 100, 100], [0, 1, 2], [1.0, 0.9, 0.8])
    with pytest.raises(ValueError, match="4 runs fit no step law of 4 parameters"):
        fit_step_laws([50, 100, 50, 100], [0, 0, 1, 1], [1.0, 0.9, 0.8, 0.7])
