"""Tests of the hidden marketplace: hashing, quadrature, calibration, noise, history."""

import numpy as np
import pytest
from scipy.special import expit

from tfddn.marketplace import (AGE_GROUPS, HISTORY_BOOST, Marketplace, MarketplaceConfig,
                               Requests, hash_columns, normal_from_hash)

CONFIG = MarketplaceConfig(targets=2_000, advertisers=200, publishers=50, topics=8,
                           words=300, articles=200, history=True, history_length=6, seed=3)
USERS = MarketplaceConfig(**{**CONFIG.__dict__, "users": 20_000, "mean_ctr": 0.005})


@pytest.fixture(scope="module")
def world():
    return Marketplace(CONFIG)


@pytest.fixture(scope="module")
def requests(world):
    return world.sample_requests(np.random.default_rng(11), 60_000, days=7)


@pytest.fixture(scope="module")
def user_world():
    return Marketplace(USERS)


def test_hash_normals_are_standard_and_deterministic():
    keys = np.arange(200_000)
    z = normal_from_hash(hash_columns(5, keys, keys % 7))
    assert abs(z.mean()) < 0.01
    assert abs(z.std() - 1.0) < 0.01
    assert abs(np.mean(z > 1.96) - 0.025) < 0.002
    np.testing.assert_array_equal(z, normal_from_hash(hash_columns(5, keys, keys % 7)))
    other = normal_from_hash(hash_columns(6, keys, keys % 7))
    assert abs(np.corrcoef(z, other)[0, 1]) < 0.01


def test_true_moments_match_monte_carlo():
    logit = np.array([-4.0, -2.0, 0.0, 1.0])
    sigma = np.array([0.3, 0.8, 1.5, 3.0])
    mean, std = Marketplace.true_moments(logit, sigma)
    z = np.random.default_rng(0).standard_normal(400_000)
    samples = expit(logit[:, None] + sigma[:, None] * z)
    np.testing.assert_allclose(mean, samples.mean(1), atol=2e-3)
    np.testing.assert_allclose(std, samples.std(1), atol=2e-3)
    mean0, std0 = Marketplace.true_moments(logit, np.zeros(4))
    np.testing.assert_allclose(mean0, expit(logit), rtol=1e-9)
    np.testing.assert_allclose(std0, 0.0, atol=1e-6)


def test_mean_ctr_is_calibrated(world, requests):
    mean, _ = world.true_moments(world.logit(requests), world.noise_stddev(requests))
    assert abs(mean.mean() - 0.03) < 0.003
    assert 0.2 < np.std(world.logit(requests)) < 3.0


def test_same_seed_same_world_other_seed_differs(world):
    again = Marketplace(CONFIG)
    other = Marketplace(MarketplaceConfig(**{**CONFIG.__dict__, "seed": 4}))
    for name in ("target_advertiser", "title_tokens", "target_effect", "topic_affinity"):
        np.testing.assert_array_equal(getattr(world, name), getattr(again, name))
        assert not np.array_equal(getattr(world, name), getattr(other, name))
    assert world.base_logit == again.base_logit


def test_long_tail_of_advertisers_and_targets(world, requests):
    owned = np.bincount(world.target_advertiser, minlength=CONFIG.advertisers)
    assert owned.min() >= 1
    assert owned.max() >= 50
    assert np.mean(owned <= 2) > 0.25
    shown = np.bincount(requests.target[:4_000], minlength=CONFIG.targets)  # ~2 per target
    seen = shown[shown > 0]
    assert np.mean(seen < 3) > 0.5
    assert seen.max() > 20 * np.median(seen)


def test_noise_is_heteroscedastic(world, requests):
    sigma = world.noise_stddev(requests)
    _, std = world.true_moments(world.logit(requests), sigma)
    adv = world.target_advertiser[requests.target]
    per_adv = np.bincount(adv, std) / np.maximum(np.bincount(adv), 1)
    per_adv = per_adv[np.bincount(adv, minlength=CONFIG.advertisers) > 0]
    p10, p90 = np.percentile(per_adv, [10, 90])
    assert p90 / p10 > 3
    volatile = world.advertiser_volatile[adv]
    assert sigma[volatile].mean() > 3 * sigma[~volatile].mean()
    assert sigma[requests.device == 1].mean() > 1.3 * sigma[requests.device == 0].mean()


def test_realised_ctr_is_one_draw_per_pair_day(world, requests):
    ctr = world.realised_ctr(requests)
    np.testing.assert_array_equal(ctr, world.realised_ctr(requests.take(slice(None))))
    next_day = requests.take(slice(None))
    next_day.day = requests.day + 1
    assert np.mean(world.realised_ctr(next_day) != ctr) > 0.99
    mean, std = world.true_moments(world.logit(requests), world.noise_stddev(requests))
    resid = ctr - mean
    assert abs(resid.mean()) < 4 * np.sqrt(np.mean(std ** 2) / len(ctr))
    assert abs(np.mean(resid ** 2) / np.mean(std ** 2) - 1.0) < 0.1


def test_history_plants_at_most_one_driver(world, requests):
    pos, history = requests.driver_position, requests.history
    assert pos.min() >= -1 and pos.max() < CONFIG.history_length
    assert abs(np.mean(pos >= 0) - 0.35) < 0.02
    same = world.article_topic[history] == world.target_topic[requests.target][:, None]
    np.testing.assert_array_equal(same.sum(1), (pos >= 0).astype(int))
    rows = np.flatnonzero(pos >= 0)
    assert same[rows, pos[rows]].all()
    without = requests.take(slice(None))
    without.driver_position = np.full(len(requests), -1)
    gap = world.logit(requests) - world.logit(without)
    np.testing.assert_allclose(gap, HISTORY_BOOST * (pos >= 0), atol=1e-12)


def test_requests_without_history(world):
    plain = Marketplace(MarketplaceConfig(**{**CONFIG.__dict__, "history": False}))
    req = plain.sample_requests(np.random.default_rng(0), 100, days=3)
    assert req.history is None and req.driver_position is None
    assert "history" not in plain.logit_components(req)
    assert isinstance(req.take([0, 1]), Requests) and len(req.take([0, 1])) == 2


def test_value_names(world):
    assert world.names("target")[123] == "t000123"
    assert world.names("advertiser")[42] == "adv0042"
    assert world.names("publisher")[7] == "pub0007"
    assert world.names("topic")[3] == "topic03"
    assert world.names("word")[251] == "w0251"
    assert world.names("article")[123] == "a123"
    assert world.names("device") == ["desktop", "mobile", "tablet"]
    assert world.names("user") == []
    assert Marketplace(USERS).names("user")[123] == "u000123"
    assert world.names("age_group") == list(AGE_GROUPS)
    with pytest.raises(ValueError, match="kind='customer'"):
        world.names("customer")


@pytest.mark.parametrize("field, value", [("topics", 1), ("targets", 0), ("words", 5),
                                          ("mean_ctr", 0.7), ("seed", -1), ("users", -1)])
def test_config_validation_shows_bad_value(field, value):
    with pytest.raises(ValueError, match=f"{field}={value}"):
        MarketplaceConfig(**{**CONFIG.__dict__, field: value})


def test_marginal_moments_without_features_are_the_true_moments(world, requests):
    req = requests.take(np.arange(500))
    mean, std = world.marginal_moments(req, [], np.random.default_rng(0))
    expected = world.true_moments(world.logit(req), world.noise_stddev(req))
    np.testing.assert_allclose(mean, expected[0], rtol=1e-12)
    np.testing.assert_allclose(std, expected[1], rtol=1e-12)


def test_marginal_moments_match_monte_carlo_over_publishers(world, requests):
    """Unknown publisher_id: the mixture over fresh publishers' effects, checked by hand."""
    req = requests.take(np.arange(3))
    draws = 20_000
    mean, std = world.marginal_moments(req, ["publisher_id"], np.random.default_rng(1), draws)
    fresh = world.sample_requests(np.random.default_rng(2), draws, days=1).publisher
    z = np.random.default_rng(3).standard_normal(draws)
    for i in range(len(req)):
        shifted = (world.logit(req.take([i]))
                   - world.publisher_effect[req.publisher[i]]
                   + world.publisher_effect[fresh])
        ctr = expit(shifted + world.noise_stddev(req.take([i])) * z)
        assert mean[i] == pytest.approx(ctr.mean(), rel=0.03)
        assert std[i] == pytest.approx(ctr.std(), rel=0.03)


def test_unknown_features_widen_the_true_distribution(world, requests):
    req = requests.take(np.arange(4_000))
    rng = np.random.default_rng(0)
    _, base = world.marginal_moments(req, [], rng)
    _, device = world.marginal_moments(req, ["device"], rng)
    _, everything = world.marginal_moments(
        req, ["target_id", "title", "advertiser_id", "target_topic", "publisher_id",
              "publisher_topic", "device", "history"], rng)
    assert np.median(device / base) > 1.0
    assert np.median(everything / base) > np.median(device / base)
    # Noise drivers can also narrow a row: a volatile advertiser's row gets narrower
    # when its advertiser is forgotten (most advertisers are calm).
    _, advertiser = world.marginal_moments(req, ["advertiser_id"], rng)
    volatile = world.advertiser_volatile[world.target_advertiser[req.target]]
    assert np.median(advertiser[volatile] / base[volatile]) < 1.0
    assert np.median(advertiser[~volatile] / base[~volatile]) > 1.0


def test_users_leave_the_rest_of_the_world_and_its_requests_unchanged(world, user_world):
    for name in ("target_advertiser", "title_tokens", "target_effect", "topic_affinity",
                 "publisher_cdf", "advertiser_sigma"):
        np.testing.assert_array_equal(getattr(world, name), getattr(user_world, name))
    plain = world.sample_requests(np.random.default_rng(5), 1_000, days=7)
    with_users = user_world.sample_requests(np.random.default_rng(5), 1_000, days=7)
    for name in ("target", "publisher", "device", "day", "history", "driver_position"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(with_users, name))
    assert plain.user is None and with_users.user.shape == (1_000,)
    assert "user_id" not in world.logit_components(plain)


def test_users_are_zipf_and_move_the_calibrated_logit(user_world):
    req = user_world.sample_requests(np.random.default_rng(12), 60_000, days=7)
    mean, _ = user_world.true_moments(user_world.logit(req), user_world.noise_stddev(req))
    assert abs(mean.mean() - 0.005) < 0.00075  # calibrated on 8192 requests: 0.0049-0.0052
    seen = np.bincount(req.user)
    seen = seen[seen > 0]
    assert np.mean(seen <= 2) > 0.5
    assert seen.max() > 100 * np.median(seen)
    other = req.take(slice(None))
    other.user = np.roll(req.user, 1)
    w, topic = user_world, user_world.target_topic[req.target]
    expected = (w.user_effect[req.user] - w.user_effect[other.user]
                + w.age_group_topic[w.user_age_group[req.user], topic]
                - w.age_group_topic[w.user_age_group[other.user], topic])
    np.testing.assert_allclose(w.logit(req) - w.logit(other), expected, atol=1e-12)
    assert np.std(w.user_effect) == pytest.approx(0.5, rel=0.05)
    moved = req.user != other.user
    assert np.mean(w.realised_ctr(req)[moved] != w.realised_ctr(other)[moved]) > 0.99
    assert np.mean(w.tuple_key(req)[moved] != w.tuple_key(other)[moved]) == 1.0


def test_unknown_user_widens_the_true_distribution(user_world):
    req = user_world.sample_requests(np.random.default_rng(13), 2_000, days=7)
    rng = np.random.default_rng(0)
    _, base = user_world.marginal_moments(req, [], rng)
    _, user = user_world.marginal_moments(req, ["user_id", "user_age_group"], rng)
    assert np.median(user / base) > 1.5  # 1.9-2.4 over seeds 3-6
