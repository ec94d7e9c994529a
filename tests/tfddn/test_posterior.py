"""The model's distribution as a prior, updated by counts: exact posterior and its policies."""

import numpy as np
import pytest
from scipy import stats

from tfddn.distributions import Mixture
from tfddn.policy import (CandidatePredictions, PolicyConfig, PosteriorThompson, PosteriorUCB,
                          make_policy)

GRID = np.linspace(1e-9, 1 - 1e-9, 400_001)


def _grid_posterior(weights, alphas, betas, clicks, n):
    """Posterior density of a Beta-mixture prior on a fine grid (numerical Bayes)."""
    prior = sum(w * stats.beta.pdf(GRID, a, b) for w, a, b in zip(weights, alphas, betas))
    density = prior * stats.binom.pmf(clicks, n, GRID)
    return density / np.trapezoid(density, GRID)


@pytest.mark.parametrize("clicks, n", [(0, 1), (1, 1), (3, 40), (0, 500), (60, 1000)])
def test_beta_posterior_matches_grid_integration(clicks, n):
    # Both components have alpha > 1 (a finite density at 0, so the grid is exact enough).
    prior = Mixture(np.array([[0.3, 0.7]]), np.array([[0.015, 0.05]]),
                    np.array([[100.0, 200.0]]), "beta")
    post = prior.posterior([clicks], [n])
    a, b = prior.alpha_beta()
    density = _grid_posterior(prior.weights[0], a[0], b[0], clicks, n)
    mean = np.trapezoid(GRID * density, GRID)
    np.testing.assert_allclose(post.mean(), [mean], rtol=1e-4)  # the grid's resolution
    np.testing.assert_allclose(post.stddev(), [np.sqrt(np.trapezoid(
        (GRID - mean) ** 2 * density, GRID))], rtol=1e-3)
    cdf = np.cumsum(density) * (GRID[1] - GRID[0])
    median = GRID[np.searchsorted(cdf, 0.5)]
    np.testing.assert_allclose(post.quantile(0.5), [median], atol=2e-5)


def test_gaussian_prior_is_moment_matched_then_updated_exactly():
    prior = Mixture(np.array([[1.0]]), np.array([[0.04]]), np.array([[0.02]]))
    beta = prior.to_beta()
    np.testing.assert_allclose(beta.mean(), prior.mean())
    np.testing.assert_allclose(beta.stddev(), prior.stddev(), rtol=1e-9)
    (a,), (b,) = beta.alpha_beta()
    post = prior.posterior([2], [30])
    np.testing.assert_allclose(post.mean(), [(a[0] + 2) / (a[0] + b[0] + 30)], rtol=1e-12)


def test_no_evidence_returns_the_prior_and_large_n_the_data():
    prior = Mixture(np.array([[0.5, 0.5]]), np.array([[0.02, 0.2]]), np.array([[20.0, 20.0]]),
                    "beta")
    same = prior.posterior([0], [0])
    for name in ("weights", "means", "scales"):
        np.testing.assert_allclose(getattr(same, name), getattr(prior, name), rtol=1e-12)
    big = prior.posterior([31_000], [10**6])
    np.testing.assert_allclose(big.mean(), [0.031], rtol=1e-3)
    assert big.stddev()[0] < 2e-4
    # Each weight times its evidence BetaBinomial(31,000; 10^6, a_k, b_k), renormalised.
    (a,), (b,) = prior.alpha_beta()
    evidence = 0.5 * np.exp(stats.betabinom.logpmf(31_000, 10**6, a, b) - stats.betabinom.logpmf(
        31_000, 10**6, a, b).max())
    np.testing.assert_allclose(big.weights[0], evidence / evidence.sum(), rtol=1e-6)


def _two_candidates(**counts):
    # A: prior Beta(3, 97) (mean 0.03); B: prior Beta(2, 98). Deterministic model (T = 1).
    mixture = np.array([[[0.0, 0.03, 100.0], [0.0, 0.02, 100.0]]])
    return CandidatePredictions(ctr_mean=np.array([0.03, 0.02]), data_stddev=np.array(
        [0.017, 0.014]), model_stddev=np.zeros(2), cpc=np.array([1.0, 1.2]), mixture=mixture,
        num_components=1, family="beta", **counts)


def test_posterior_thompson_frequencies_match_posterior_probabilities():
    predictions = _two_candidates(clicks=np.array([2.0, 6.0]), impressions=np.array([150.0, 90.0]))
    # Posteriors: A Beta(5, 245), B Beta(8, 182); A first iff y_A > 1.2 y_B.
    density_a = stats.beta.pdf(GRID, 5, 245)
    p_a = np.trapezoid(density_a * stats.beta.cdf(GRID / 1.2, 8, 182), GRID)
    lists = PosteriorThompson().select(predictions, 40_000, np.random.default_rng(0))
    rate = np.mean(lists[:, 0] == 0)
    assert abs(rate - p_a) < 4 * np.sqrt(p_a * (1 - p_a) / 40_000), (rate, p_a)


def test_posterior_ucb_is_the_bayes_ucb_quantile():
    counts = dict(clicks=np.array([1.0, 4.0]), impressions=np.array([60.0, 38.0]))
    predictions = _two_candidates(**counts)
    policy = PosteriorUCB()
    level = policy.level(predictions)
    assert level == pytest.approx(1 - 1 / 100.0)  # t = 1 + 98 impressions seen, + 1
    expected = [stats.beta.ppf(level, 4, 156), 1.2 * stats.beta.ppf(level, 6, 132)]
    np.testing.assert_allclose(policy._score(predictions), expected, rtol=1e-6)
    fixed = PosteriorUCB(quantile=0.5)._score(predictions)
    np.testing.assert_allclose(fixed, [stats.beta.median(4, 156),
                                       1.2 * stats.beta.median(6, 132)], rtol=1e-6)
    assert isinstance(make_policy(PolicyConfig(name="posterior_ucb", quantile=0.9)), PosteriorUCB)


def test_mc_passes_form_one_prior_mixture_and_reg_gets_a_beta():
    # Two passes with different means: the prior is their equal-weight mixture.
    mixture = np.array([[[0.0, 0.01, 100.0]], [[0.0, 0.05, 100.0]]])
    predictions = CandidatePredictions(
        ctr_mean=np.array([0.03]), data_stddev=np.array([0.01]), model_stddev=np.array([0.02]),
        cpc=np.ones(1), mixture=mixture, num_components=1, family="beta")
    np.testing.assert_allclose(predictions.posterior().weights, [[0.5, 0.5]])
    np.testing.assert_allclose(predictions.posterior().mean(), [0.03])
    reg = CandidatePredictions(ctr_mean=np.array([0.03]), data_stddev=np.zeros(1),
                               model_stddev=np.array([0.01]), cpc=np.ones(1))
    np.testing.assert_allclose(reg.posterior().mean(), [0.03])
    np.testing.assert_allclose(reg.posterior().stddev(), [0.01], rtol=1e-9)


@pytest.mark.parametrize("counts, message", [
    (dict(clicks=np.array([1.0, 0.0])), "both or neither"),
    (dict(clicks=np.array([3.0, 0.0]), impressions=np.array([2.0, 5.0])), "<= impressions"),
    (dict(clicks=np.array([0.0]), impressions=np.array([1.0])), r"shape \[C=2\]"),
])
def test_counts_are_validated(counts, message):
    with pytest.raises(ValueError, match=message):
        _two_candidates(**counts)
    with pytest.raises(ValueError, match="quantile=1.0"):
        PosteriorUCB(quantile=1.0)
