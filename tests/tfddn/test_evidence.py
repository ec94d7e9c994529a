"""Counts as evidence: the PairCounts interface, history decay and the empirical-Bayes fit of
prior strength and decay (issue #11)."""

import numpy as np
import pandas as pd
import pytest

from tfddn.distributions import Mixture
from tfddn.posterior import PairCounts, discounted, fit_evidence, pooled_prior


def test_pair_counts_sum_duplicates_match_keys_as_strings_and_default_to_zero(tmp_path):
    frame = pd.DataFrame({"target_id": ["t1", "t1", "t2"], "publisher_id": [7, 7, 8],
                          "clicks": [1, 2, 0], "impressions": [10, 5, 4]})
    path = tmp_path / "counts.csv"
    frame.to_csv(path, index=False)
    for counts in (PairCounts(frame), PairCounts.read(str(path))):
        assert counts.keys == ("target_id", "publisher_id") and len(counts) == 2
        rows = pd.DataFrame({"target_id": ["t2", "t1", "t9"], "publisher_id": ["8", "7", "7"],
                             "other": [0, 0, 0]})
        clicks, impressions = counts.lookup(rows)
        np.testing.assert_array_equal(clicks, [0, 3, 0])
        np.testing.assert_array_equal(impressions, [4, 15, 0])
    frame.to_parquet(tmp_path / "counts.parquet")
    single = PairCounts.read(str(tmp_path / "counts.parquet"), keys=["target_id"])
    np.testing.assert_array_equal(single.lookup(pd.DataFrame({"target_id": ["t1", "t2"]}))[1], [15, 4])


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"target_id": ["a"], "clicks": [3], "impressions": [2]}), "clicks <= impr"),
    (pd.DataFrame({"target_id": ["a"], "clicks": [-1], "impressions": [2]}), "finite numbers"),
    (pd.DataFrame({"target_id": ["a"], "clicks": ["x"], "impressions": [2]}), "row 0 has 'x'"),
    (pd.DataFrame({"target_id": ["a"], "impressions": [2]}), "missing \\['clicks'\\]"),
    (pd.DataFrame({"clicks": [1], "impressions": [2]}), "at least one key column"),
])
def test_bad_counts_are_refused_with_the_reason(frame, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        PairCounts(frame)
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match="counts file .*bad.csv"):
        PairCounts.read(str(path))
    with pytest.raises(ValueError, match="cannot read counts file .*missing.csv"):
        PairCounts.read(str(tmp_path / "missing.csv"))


def test_discounted_weights_days_by_age():
    history = [(np.array([1.0]), np.array([10.0])), (np.array([2.0]), np.array([20.0]))]
    clicks, impressions = discounted(history, 0.5)
    np.testing.assert_allclose([clicks[0], impressions[0]], [0.5 + 0.5, 5.0 + 5.0])
    np.testing.assert_allclose(discounted(history, 0.0)[1], [0.0])
    np.testing.assert_allclose(discounted(history, 1.0)[1], [30.0])
    with pytest.raises(ValueError, match="decay must be in"):
        discounted(history, 1.5)


def test_strength_scales_concentration_and_keeps_the_mean():
    prior = Mixture(np.array([[0.4, 0.6]]), np.array([[0.02, 0.05]]),
                    np.array([[0.01, 0.02]]))  # Gaussian: moment-matched first
    wide = prior.with_strength(0.25)
    beta = prior.to_beta()
    np.testing.assert_allclose(wide.means, beta.means)
    np.testing.assert_allclose(wide.scales, 0.25 * beta.scales)
    assert wide.stddev()[0] > prior.stddev()[0]
    single = prior.collapse()
    np.testing.assert_allclose([single.mean()[0], single.stddev()[0]],
                               [prior.mean()[0], prior.stddev()[0]], rtol=1e-9)


def _pairs(rng, pairs, mean, concentration):
    return rng.beta(mean * concentration, (1 - mean) * concentration, pairs)


def test_fit_finds_an_overconfident_prior_and_a_stable_pair_history():
    """True CTRs spread as Beta(kappa=50) around 2%; the prior claims kappa=400 (8x too
    sure): the fit weakens it by 1/8 (the grid's 1/16 .. 1/4). CTRs constant over days:
    the history counts fully (decay 1)."""
    rng = np.random.default_rng(0)
    pairs, n = 4000, 200
    ctr = _pairs(rng, pairs, 0.02, 50.0)
    prior = Mixture(np.ones((pairs, 1)), np.full((pairs, 1), 0.02), np.full((pairs, 1), 400.0),
                    "beta")
    history = [(rng.binomial(n, ctr), np.full(pairs, n)) for _ in range(3)]
    today = rng.binomial(n, ctr)
    fit = fit_evidence(prior, history, today, np.full(pairs, n))
    assert 1 / 16 <= fit.strength <= 1 / 4 and fit.decay == 1.0
    assert fit.log_likelihood.shape == (9, 5) and fit.pairs == pairs
    # CTRs redrawn every day (no memory): earlier days say nothing, decay 0 wins.
    history = [(rng.binomial(n, _pairs(rng, pairs, 0.02, 50.0)), np.full(pairs, n))
               for _ in range(3)]
    fit = fit_evidence(prior, history, rng.binomial(n, _pairs(rng, pairs, 0.02, 50.0)),
                       np.full(pairs, n))
    assert fit.decay == 0.0 and 1 / 16 <= fit.strength <= 1 / 4


def test_fit_with_no_history_fits_the_strength_alone_and_pooled_prior():
    rng = np.random.default_rng(1)
    ctr = _pairs(rng, 3000, 0.01, 100.0)
    impressions = rng.integers(1, 300, 3000)
    clicks = rng.binomial(impressions, ctr)
    prior = pooled_prior(clicks, impressions, 3000)
    assert prior.means[0, 0] == pytest.approx(clicks.sum() / impressions.sum())
    assert prior.scales[0, 0] == pytest.approx(1 / prior.means[0, 0])  # one pseudo-click
    fit = fit_evidence(prior, [], clicks, impressions)
    assert fit.log_likelihood.shape == (9, 1) and fit.decay == 0.0
    # kappa 100 vs the pooled prior's ~100: the fit stays within a factor 2 of the truth.
    assert 0.5 <= fit.strength * prior.scales[0, 0] / 100.0 <= 2.0
