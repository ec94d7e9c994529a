"""Tests of the exploration policies: hand-computed rankings and exact sampling rates."""

import itertools
import math

import numpy as np
import pytest
from scipy.stats import beta as beta_dist
from scipy.stats import norm

from tfddn.policy import (UCB, CandidatePredictions, EpsilonGreedy, Greedy, PolicyConfig,
                          Random, Thompson, make_policy, top_n)

REQUESTS = 20_000


def _predictions(mean, data=None, model=None, cpc=None, **kwargs):
    mean = np.asarray(mean, dtype=float)
    zeros = np.zeros_like(mean)
    return CandidatePredictions(
        ctr_mean=mean, data_stddev=zeros if data is None else data,
        model_stddev=zeros if model is None else model,
        cpc=np.ones_like(mean) if cpc is None else cpc, **kwargs)


def _mixture(weights, means, stddevs):
    """Packed `[T, C, 3K]` params from per-(pass, candidate, component) arrays."""
    return np.concatenate([np.log(weights), means, stddevs], axis=-1)


def _assert_rate(observed, expected, n=REQUESTS):
    sigma = math.sqrt(expected * (1 - expected) / n)
    assert abs(observed - expected) < 4 * sigma + 1e-12, (observed, expected, sigma)


# Means, data stddevs and CPCs with hand-computed greedy and UCB orders.
HAND = _predictions([0.02, 0.05, 0.03], data=[0.03, 0.0, 0.04], cpc=[2.0, 1.0, 1.5])


def test_greedy_ranks_by_expected_revenue():
    # mean x cpc = [0.04, 0.05, 0.045]
    np.testing.assert_allclose(Greedy().scores(HAND, None), [0.04, 0.05, 0.045])
    lists = Greedy().select(HAND, 4, np.random.default_rng(0), slots=2)
    np.testing.assert_array_equal(lists, [[1, 2]] * 4)


def test_ucb_ranks_by_optimistic_revenue():
    # (mean + c * sd) x cpc: c=1 -> [0.10, 0.05, 0.105]; c=2 -> [0.16, 0.05, 0.165]
    np.testing.assert_allclose(UCB(c=1.0).scores(HAND, None), [0.10, 0.05, 0.105])
    np.testing.assert_allclose(UCB(c=2.0).scores(HAND, None), [0.16, 0.05, 0.165])
    lists = UCB(c=1.0).select(HAND, 3, np.random.default_rng(0), slots=3)
    np.testing.assert_array_equal(lists, [[2, 0, 1]] * 3)


def test_ucb_with_c_zero_is_greedy():
    rng = np.random.default_rng(1)
    predictions = _predictions(rng.random(50) * 0.1, data=rng.random(50) * 0.05,
                               model=rng.random(50) * 0.05, cpc=rng.random(50))
    np.testing.assert_array_equal(UCB(c=0.0).select(predictions, 5, rng, slots=10),
                                  Greedy().select(predictions, 5, rng, slots=10))


def test_ucb_stddev_choice_changes_the_order():
    predictions = _predictions([0.10, 0.10, 0.10], data=[0.08, 0.0, 0.06],
                               model=[0.0, 0.07, 0.06])
    # data: [0.18, 0.10, 0.16]; model: [0.10, 0.17, 0.16];
    # total: [0.18, 0.17, 0.10 + sqrt(0.0072) = 0.1849]
    np.testing.assert_allclose(predictions.total_stddev, [0.08, 0.07, math.sqrt(0.0072)])
    rng = np.random.default_rng(0)
    expected = {"data": [0, 2, 1], "model": [1, 2, 0], "total": [2, 0, 1]}
    for kind, order in expected.items():
        np.testing.assert_array_equal(UCB(1.0, kind).select(predictions, 1, rng, 3)[0], order)


def test_thompson_win_rate_matches_the_mixture():
    # A (cpc 1): 0.3 N(0.2, 0.05^2) + 0.7 N(0.5, 0.05^2); B (cpc 0.8): N(0.4, 0.1^2).
    # A ranks first iff y_A - 0.8 y_B > 0, a Gaussian per component of A
    # (clipping at 0 or 1 has probability < 1e-4 here).
    weights = np.array([[[0.3, 0.7], [0.5, 0.5]]])
    means = np.array([[[0.2, 0.5], [0.4, 0.4]]])
    stddevs = np.array([[[0.05, 0.05], [0.1, 0.1]]])
    predictions = _predictions([0.41, 0.4], data=[0.14, 0.1], cpc=[1.0, 0.8],
                               mixture=_mixture(weights, means, stddevs), num_components=2)
    spread = np.sqrt(0.05 ** 2 + (0.8 * 0.1) ** 2)
    p_a = 0.3 * norm.cdf((0.2 - 0.32) / spread) + 0.7 * norm.cdf((0.5 - 0.32) / spread)
    assert abs(p_a - 0.7113) < 1e-3
    lists = Thompson().select(predictions, REQUESTS, np.random.default_rng(2), slots=2)
    np.testing.assert_array_equal(np.sort(lists, axis=1), [[0, 1]] * REQUESTS)
    _assert_rate(np.mean(lists[:, 0] == 0), p_a)


def test_thompson_draws_from_a_beta_mixture():
    # A: 0.4 Beta(1, 99) + 0.6 Beta(6, 94) (BBDDN scales are concentrations, 100 each);
    # B: a near-point mass at 0.03. P(A first) = sum_k w_k P(Beta_k > 0.03).
    weights = np.array([[[0.4, 0.6], [0.5, 0.5]]])
    means = np.array([[[0.01, 0.06], [0.03, 0.03]]])
    kappas = np.array([[[100.0, 100.0], [1e9, 1e9]]])
    predictions = _predictions([0.04, 0.03], data=[0.026, 0.0], mixture=_mixture(
        weights, means, kappas), num_components=2, family="beta")
    p_a = 0.4 * beta_dist.sf(0.03, 1, 99) + 0.6 * beta_dist.sf(0.03, 6, 94)
    lists = Thompson().select(predictions, REQUESTS, np.random.default_rng(5))
    _assert_rate(np.mean(lists[:, 0] == 0), p_a)
    draws = np.array([Thompson().scores(predictions, np.random.default_rng(s))
                      for s in range(4000)])
    assert np.all((draws >= 0) & (draws <= 1))
    assert abs(draws[:, 0].mean() - 0.04) < 0.002


def test_thompson_draws_a_pass_per_candidate():
    # K = 1, near-zero stddev. Candidate 0's passes: means 0.9, 0.1, 0.1; candidate 1: 0.5.
    means = np.array([[[0.9], [0.5]], [[0.1], [0.5]], [[0.1], [0.5]]])
    mixture = _mixture(np.ones_like(means), means, np.full_like(means, 1e-3))
    predictions = _predictions([0.3667, 0.5], model=[0.377, 0.0], mixture=mixture)
    lists = Thompson().select(predictions, REQUESTS, np.random.default_rng(3))
    _assert_rate(np.mean(lists[:, 0] == 0), 1 / 3)


def test_thompson_without_mixture_samples_a_gaussian_of_total_stddev():
    # A ~ N(0.3, 0.03^2 + 0.04^2 = 0.05^2) beats B = 0.35 (no uncertainty) w.p. 1 - Phi(1).
    predictions = _predictions([0.3, 0.35], data=[0.03, 0.0], model=[0.04, 0.0])
    lists = Thompson().select(predictions, REQUESTS, np.random.default_rng(4))
    _assert_rate(np.mean(lists[:, 0] == 0), 1 - norm.cdf(1.0))
    draws = np.array([Thompson().scores(predictions, np.random.default_rng(s))
                      for s in range(2000)])
    np.testing.assert_allclose(draws[:, 1], 0.35)
    assert abs(draws[:, 0].std() - 0.05) < 0.005


def test_thompson_clips_draws_to_the_unit_interval():
    predictions = _predictions([0.01, 0.99], data=[0.5, 0.5], cpc=[1.0, 1.0])
    draws = np.array([Thompson().scores(predictions, np.random.default_rng(s))
                      for s in range(500)])
    assert draws.min() == 0.0 and draws.max() == 1.0


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_epsilon_greedy_explores_at_rate_epsilon(epsilon):
    predictions = _predictions([0.1, 0.3, 0.2])            # greedy list [1, 2]
    lists = EpsilonGreedy(epsilon).select(predictions, REQUESTS, np.random.default_rng(5), 2)
    differs = np.mean(np.any(lists != [1, 2], axis=1))
    # A random ordered list of 2 of 3 candidates equals the greedy one w.p. 1/6.
    _assert_rate(differs, epsilon * (1 - 1 / 6))
    assert np.all(lists[:, 0] != lists[:, 1])


def test_random_lists_are_uniform():
    lists = Random().select(_predictions([0.1, 0.3, 0.2]), REQUESTS,
                            np.random.default_rng(6), slots=2)
    for pair in itertools.permutations(range(3), 2):
        _assert_rate(np.mean(np.all(lists == pair, axis=1)), 1 / 6)


@pytest.mark.parametrize("policy", [Greedy(), UCB(2.0), Thompson(), EpsilonGreedy(0.5),
                                    Random()])
def test_rows_hold_distinct_candidates(policy):
    rng = np.random.default_rng(7)
    predictions = _predictions(np.full(6, 0.1), data=np.full(6, 0.02), cpc=np.ones(6))
    lists = policy.select(predictions, 500, rng, slots=6)
    assert lists.shape == (500, 6)
    np.testing.assert_array_equal(np.sort(lists, axis=1), np.tile(np.arange(6), (500, 1)))
    assert policy.select(predictions, 0, rng, slots=3).shape == (0, 3)


def test_top_n_is_stable_for_ties():
    np.testing.assert_array_equal(top_n([1, 3, 3, 2, 3], 1), [1])
    np.testing.assert_array_equal(top_n([1, 3, 3, 2, 3], 2), [1, 2])
    np.testing.assert_array_equal(top_n([1, 3, 3, 2, 3], 4), [1, 2, 4, 3])
    np.testing.assert_array_equal(top_n([1, 3, 3, 2, 3], 5), [1, 2, 4, 3, 0])
    np.testing.assert_array_equal(top_n([[0, 0, 0, 0], [5, -np.inf, 5, 7]], 2),
                                  [[0, 1], [3, 0]])
    scores = np.random.default_rng(8).integers(0, 4, size=(300, 40)).astype(float)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(top_n(scores, 7), expected)


def test_make_policy_from_config():
    assert make_policy(PolicyConfig(name="ucb", c=0.5, stddev="model")) == UCB(0.5, "model")
    assert make_policy(PolicyConfig(name="epsilon_greedy", epsilon=0.2)) == EpsilonGreedy(0.2)
    for name, kind in [("greedy", Greedy), ("thompson", Thompson), ("random", Random)]:
        policy = make_policy(PolicyConfig(name=name))
        assert isinstance(policy, kind) and policy.name == name


def test_from_decomposition_accepts_tensors():
    tf = pytest.importorskip("tensorflow")
    parts = {"ctr_mean": tf.constant([0.1, 0.2]), "data_stddev": tf.constant([0.01, 0.0]),
             "model_stddev": tf.constant([0.0, 0.02]), "total_stddev": tf.constant([0., 0.])}
    mixture = tf.constant([[[0.0, 0.1, 0.01], [0.0, 0.2, 0.0]]])
    predictions = CandidatePredictions.from_decomposition(parts, [1.0, 2.0], mixture, 1)
    np.testing.assert_allclose(predictions.total_stddev, [0.01, 0.02], rtol=1e-6)
    assert predictions.mixture.shape == (1, 2, 3)
    with pytest.raises(ValueError, match="model_stddev"):
        CandidatePredictions.from_decomposition({"ctr_mean": [0.1], "data_stddev": [0.0]}, [1])


@pytest.mark.parametrize("kwargs, message", [
    ({"data": [0.1]}, "data_stddev must have shape"),
    ({"model": [0.0, -0.1]}, "model_stddev must be >= 0"),
    ({"cpc": [1.0, -1.0]}, "cpc must be >= 0"),
    ({"cpc": [1.0, np.nan]}, "cpc must be finite"),
    ({"mixture": np.zeros((1, 2, 4))}, "mixture must have shape"),
    ({"mixture": np.zeros((1, 2, 6)), "num_components": 2}, None),
    ({"mixture": -np.ones((1, 2, 3))}, "mixture scales"),
    ({"num_components": 0}, "num_components"),
])
def test_candidate_predictions_validation(kwargs, message):
    if message is None:
        _predictions([0.1, 0.2], **kwargs)
        return
    with pytest.raises(ValueError, match=message):
        _predictions([0.1, 0.2], **kwargs)


def test_config_and_select_validation():
    with pytest.raises(ValueError, match="name=.ubc"):
        PolicyConfig(name="ubc")
    with pytest.raises(ValueError, match="c=-1"):
        PolicyConfig(name="ucb", c=-1.0)
    with pytest.raises(ValueError, match="stddev='measurement'"):
        UCB(stddev="measurement")
    with pytest.raises(ValueError, match="epsilon=1.5"):
        EpsilonGreedy(1.5)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="slots=3"):
        Greedy().select(_predictions([0.1, 0.2]), 1, rng, slots=3)
    with pytest.raises(ValueError, match="requests=-1"):
        Random().select(_predictions([0.1, 0.2]), -1, rng)
    with pytest.raises(ValueError, match="NaN"):
        top_n([0.1, np.nan], 1)
    with pytest.raises(ValueError, match="n=0"):
        top_n([0.1, 0.2], 0)
