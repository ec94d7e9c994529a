"""Tests of the Vowpal Wabbit contextual-bandit baseline on tiny problems with known optima."""

import numpy as np
import pytest
import vowpalwabbit

from tfddn.simulation.vw import VowpalWabbitBandit, VWConfig, escape, features

# 2 contexts x 5 actions; the best action is 2 in context 0 and 0 in context 1.
CONTEXTS = [{"publisher_id": "pub0", "device": "mobile"},
            {"publisher_id": "pub1", "device": "desktop"}]
ACTIONS = [{"ad_id": f"ad{i}", "title": [f"w{i}", f"w{i + 1}"]} for i in range(5)]
CTR = np.array([[0.05, 0.10, 0.50, 0.10, 0.05],
                [0.50, 0.05, 0.10, 0.05, 0.10]])
BEST = CTR.argmax(1)


def _run(config, rounds=30, chunk=100, cpc=None, ctr=CTR, seed=0):
    """Alternates contexts in chunks; returns per-context (chosen, clicks, propensities)."""
    cpc = np.ones(5) if cpc is None else cpc
    rng, clicks_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    out = {c: ([], [], []) for c in range(len(ctr))}
    with VowpalWabbitBandit(config) as bandit:
        for _ in range(rounds):
            for c in range(len(ctr)):
                chosen, clicks = bandit.serve(CONTEXTS[c], ACTIONS, cpc, chunk,
                                              lambda k, c=c: int(clicks_rng.random() < ctr[c, k]),
                                              rng)
                for store, values in zip(out[c], (chosen, clicks, bandit.propensities)):
                    store.append(values)
    return {c: tuple(np.concatenate(v) for v in values) for c, values in out.items()}


# Epsilon-greedy's greedy arm still flips now and then: an explored click is learned with
# importance weight A / epsilon = 100, so its best-arm share (0.72-0.97 over seeds 0-3) is
# lower than SquareCB's (0.98-0.99).
@pytest.mark.parametrize("algorithm, min_best_share", [("squarecb", 0.9), ("epsilon", 0.6)])
def test_learns_the_best_action_per_context(algorithm, min_best_share):
    runs = _run(VWConfig(algorithm=algorithm, cost="click"))
    for c, (chosen, clicks, _) in runs.items():
        assert len(chosen) == 3000
        assert np.mean(chosen[-500:] == BEST[c]) > min_best_share  # chance is 0.2
        assert np.mean(clicks[-500:]) > 0.35  # best CTR 0.5, uniform play 0.16


def test_revenue_cost_prefers_the_higher_expected_revenue():
    # Action 1 has the lower CTR (0.2 vs 0.3) but 3x the CPC: revenue 0.6 vs 0.3 per request.
    ctr = np.array([[0.3, 0.2, 0.05, 0.05, 0.05]])
    cpc = np.array([1.0, 3.0, 1.0, 1.0, 1.0])
    by_revenue = _run(VWConfig(cost="revenue"), rounds=20, cpc=cpc, ctr=ctr)[0][0]
    by_click = _run(VWConfig(cost="click"), rounds=20, cpc=cpc, ctr=ctr)[0][0]
    assert np.mean(by_revenue[-500:] == 1) > 0.7
    assert np.mean(by_click[-500:] == 0) > 0.7


def test_without_signal_the_pmf_is_uniform_and_sampled_from():
    rng = np.random.default_rng(3)
    with VowpalWabbitBandit(VWConfig(cost="click")) as bandit:
        chosen, clicks = bandit.serve(CONTEXTS[0], ACTIONS, np.ones(5), 5000, lambda k: 0, rng)
        np.testing.assert_allclose(bandit.propensities, 0.2, atol=1e-6)
    assert chosen.dtype == np.int64 and clicks.dtype == np.int64
    np.testing.assert_array_equal(clicks, 0)
    np.testing.assert_allclose(np.bincount(chosen, minlength=5) / 5000, 0.2, atol=0.025)


def test_epsilon_greedy_explores_at_the_configured_rate():
    epsilon, num_actions = 0.2, 5
    chosen, _, propensity = _run(VWConfig(algorithm="epsilon", epsilon=epsilon, cost="click"))[0]
    greedy, explore = 1 - epsilon + epsilon / num_actions, epsilon / num_actions
    # Epsilon-greedy pmf has two values; the chosen action's propensity says which one it got.
    late, late_propensity = chosen[-1000:], propensity[-1000:]
    assert np.all(np.isclose(late_propensity, greedy, atol=1e-6)
                  | np.isclose(late_propensity, explore, atol=1e-6))
    non_greedy = np.mean(np.isclose(late_propensity, explore, atol=1e-6))
    expected = epsilon * (1 - 1 / num_actions)  # 0.16
    assert expected / 2 < non_greedy < 2 * expected
    assert np.mean(late[np.isclose(late_propensity, greedy)] == BEST[0]) > 0.9


def test_same_seed_same_run_and_other_seed_differs():
    config = VWConfig(algorithm="squarecb", cost="click", seed=5)
    first = _run(config, rounds=3)
    again = _run(config, rounds=3)
    other = _run(config, rounds=3, seed=1)
    for c in first:
        for a, b in zip(first[c], again[c]):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0][0], other[0][0])


def test_parse_once_matches_reparsing_every_request():
    """The speed trick (reuse parsed candidates) gives the same updates as plain VW text."""
    config = VWConfig(cost="click")
    ctr, requests = CTR[0], 400
    chosen, _, propensity = _run(config, rounds=1, chunk=requests, ctr=ctr[None])[0]
    rng, clicks_rng = np.random.default_rng(0), np.random.default_rng(1)
    ws = vowpalwabbit.Workspace(config.vw_arguments())
    lines = [f"shared |c {features(CONTEXTS[0])}"] + [f"|a {features(a)}" for a in ACTIONS]
    for r in range(requests):
        pmf = np.asarray(ws.predict(lines))
        cdf = np.cumsum(pmf)
        k = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        assert k == chosen[r]
        assert pmf[k] == pytest.approx(propensity[r], abs=1e-6)
        click = int(clicks_rng.random() < ctr[k])
        labelled = list(lines)
        labelled[k + 1] = f"0:{-click}:{pmf[k]:.9g} {lines[k + 1]}"
        ws.learn(labelled)
    ws.finish()


def test_weird_values_are_escaped_injectively():
    assert escape("a b|c:d") == "a%20b%7Cc%3Ad"
    assert escape("a_b") != escape("a b")
    assert escape("50%") == "50%25"
    assert (features({"t i": "a b|c:d", "title": ["x|y", "z"], "bid": 0.5})
            == "t%20i=a%20b%7Cc%3Ad title=x%7Cy title=z bid:0.5")
    ws = vowpalwabbit.Workspace("--cb_explore_adf --quiet")
    shared, action = ws.parse(["shared |c " + features({"p": "a b|c:d"}),
                               "|a " + features({"t": ["x|y", "z w"], "u": "1:2"})])
    assert shared.num_features_in("c") == 1
    assert action.num_features_in("a") == 3
    ws.finish()
    weird = [{"ad": "a b|c:d"}, {"ad": "a_b"}, {"ad": "x\ty\nz"}]
    with VowpalWabbitBandit(VWConfig()) as bandit:
        chosen, _ = bandit.serve({"pub": "p|1: x"}, weird, np.ones(3), 50, lambda k: int(k == 2),
                                 np.random.default_rng(0))
    assert set(chosen) <= {0, 1, 2}


@pytest.mark.parametrize("kwargs", [
    {"algorithm": "ucb"}, {"cost": "ctr"}, {"epsilon": 1.5}, {"epsilon": -0.1},
    {"gamma_scale": 0.0}, {"gamma_exponent": -1.0}, {"learning_rate": 0.0},
    {"interactions": "ca"}, {"interactions": ("cx",)}, {"interactions": ("c",)},
    {"bit_precision": 40}, {"seed": -1},
])
def test_config_validation(kwargs):
    with pytest.raises(ValueError, match="Received"):
        VWConfig(**kwargs)


def test_vw_arguments():
    assert VWConfig().vw_arguments() == (
        "--cb_explore_adf --quiet --random_seed 0 -b 20 -l 0.5 --squarecb --gamma_scale 10 "
        "--gamma_exponent 0.5 --interactions ca")
    assert "--epsilon 0.1 " in VWConfig(algorithm="epsilon", epsilon=0.1).vw_arguments()
    assert VowpalWabbitBandit(VWConfig(algorithm="epsilon")).name == "vw-epsilon"


def test_serve_validation_and_finish():
    bandit = VowpalWabbitBandit(VWConfig(cost="revenue"))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="cpc"):
        bandit.serve(CONTEXTS[0], ACTIONS, np.ones(4), 5, lambda k: 0, rng)
    with pytest.raises(ValueError, match="cpc"):
        bandit.serve(CONTEXTS[0], ACTIONS, np.zeros(5), 5, lambda k: 0, rng)
    with pytest.raises(ValueError, match="reward"):
        bandit.serve(CONTEXTS[0], ACTIONS, np.ones(5), 5, lambda k: 2, rng)
    chosen, clicks = bandit.serve(CONTEXTS[0], ACTIONS, np.ones(5), 0, lambda k: 0, rng)
    assert chosen.shape == clicks.shape == (0,)
    bandit.finish()
    bandit.finish()
    with pytest.raises(RuntimeError, match="finished"):
        bandit.serve(CONTEXTS[0], ACTIONS, np.ones(5), 5, lambda k: 0, rng)


def test_learning_from_logged_uniform_decisions_makes_serving_prefer_the_clicked_action():
    """The simulator's day 0 (served at random) teaches VW like everyone else."""
    rng = np.random.default_rng(0)
    chosen = rng.integers(0, 5, 2000)
    clicks = (chosen == 3).astype(np.int64) * (rng.random(2000) < 0.6)
    with VowpalWabbitBandit(VWConfig(algorithm="epsilon", epsilon=0.05, cost="click")) as bandit:
        bandit.learn(CONTEXTS[0], ACTIONS, np.ones(5), chosen, clicks, np.full(2000, 0.2))
        served, _ = bandit.serve(CONTEXTS[0], ACTIONS, np.ones(5), 200, lambda k: 0, rng)
        assert np.mean(served == 3) > 0.9  # before learning: 0.2
        with pytest.raises(ValueError, match="one shape"):
            bandit.learn(CONTEXTS[0], ACTIONS, np.ones(5), chosen, clicks[:3], np.ones(3))
        with pytest.raises(ValueError, match="index actions"):
            bandit.learn(CONTEXTS[0], ACTIONS, np.ones(5), [7], [0], [0.2])
