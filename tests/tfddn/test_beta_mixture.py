"""BBDDN: Beta-mixture head, exact Beta-Binomial likelihood, and the one mixture module."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special, stats

from tfddn import distributions
from tfddn.distributions import Mixture
from tfddn.layers import BetaMixtureHead
from tfddn.losses import BBDDNLoss

tfd = tfp.distributions

# A grid over n = 1 .. 10^6 and CTRs near 0 and 1: [clicks, n] per row.
GRID = np.array([[0, 1], [1, 1], [0, 2], [2, 2], [1, 10], [0, 1000], [3, 1000], [997, 1000],
                 [1000, 1000], [0, 10**6], [31, 10**6], [29_950, 10**6], [10**6 - 2, 10**6]],
                np.float64)


def _beta_params(rows, k=3, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, k))
    means = np.concatenate([rng.uniform(1e-4, 0.05, (rows, 1)),
                            rng.uniform(0.9, 0.9999, (rows, 1)),
                            rng.uniform(0.01, 0.5, (rows, k - 2))], axis=1)
    concentrations = np.exp(rng.uniform(np.log(1.5), np.log(1e5), (rows, k)))
    return np.concatenate([logits, means, concentrations], axis=1)


def _scipy_log_likelihood(clicks, n, params, k):
    mix = Mixture.from_params(params, k, "beta")
    a, b = mix.means * mix.scales, (1 - mix.means) * mix.scales
    pmf = stats.betabinom.logpmf(clicks[:, None], n[:, None], a, b)
    return special.logsumexp(np.log(mix.weights) + pmf, axis=1)


def test_log_likelihood_matches_scipy_on_a_grid():
    params = _beta_params(len(GRID))
    clicks, n = GRID[:, 0], GRID[:, 1]
    expected = _scipy_log_likelihood(clicks, n, params, 3)
    got = distributions.beta_binomial_log_likelihood(
        clicks.astype(np.float32), n.astype(np.float32), params.astype(np.float32), 3).numpy()
    # float32 params (means to ~1e-7 relative): compare with the float32-rounded params
    expected32 = _scipy_log_likelihood(clicks, n, params.astype(np.float32).astype(np.float64),
                                       3)
    np.testing.assert_allclose(got, expected32, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(Mixture.from_params(params, 3, "beta").count_log_prob(clicks, n),
                               expected, rtol=1e-9)
    assert np.all(got <= 0)  # a probability of a count


def test_numpy_and_tf_sides_agree_with_tfp():
    params = _beta_params(16, seed=1)
    k, clicks, n = 3, np.arange(16.0), np.geomspace(16, 1e5, 16).round()
    mix = Mixture.from_params(params, k, "beta")
    components = tfd.Beta(mix.means * mix.scales, (1 - mix.means) * mix.scales)
    reference = tfd.MixtureSameFamily(tfd.Categorical(probs=mix.weights), components)
    np.testing.assert_allclose(mix.mean(), reference.mean().numpy(), rtol=1e-10)
    np.testing.assert_allclose(mix.stddev(), reference.stddev().numpy(), rtol=1e-8)
    np.testing.assert_allclose(distributions.mixture_stddev(params, k, "beta").numpy(),
                               reference.stddev().numpy(), rtol=1e-8)
    np.testing.assert_allclose(mix.cdf(np.full(16, 0.3)), reference.cdf(0.3).numpy(), rtol=1e-6)
    counts = distributions.mixture(params, k, impressions=n, family="beta")
    np.testing.assert_allclose(mix.count_log_prob(clicks, n), counts.log_prob(clicks).numpy(),
                               rtol=1e-8)
    np.testing.assert_allclose(distributions.beta_binomial_log_likelihood(clicks, n, params, k),
                               counts.log_prob(clicks).numpy(), rtol=1e-8)
    # Gaussian family: the numpy moments are the TF ones.
    gauss = np.concatenate([params[:, :6], np.full((16, 3), 0.02)], axis=1)
    g = Mixture.from_params(gauss, k)
    np.testing.assert_allclose(g.stddev(), distributions.mixture_stddev(gauss, k).numpy(),
                               rtol=1e-8)
    np.testing.assert_allclose(g.cdf(np.full(16, 0.2), impressions=n),
                               distributions.mixture(gauss, k, impressions=n).cdf(0.2).numpy(),
                               rtol=1e-6)


def test_count_cdf_and_quantile_are_the_exact_distribution_for_small_n():
    params = _beta_params(4, seed=2)
    mix = Mixture.from_params(params, 3, "beta")
    n = np.array([1.0, 5.0, 40.0, 256.0])
    a, b = mix.means * mix.scales, (1 - mix.means) * mix.scales
    for c in (0, 1, 3):
        expected = np.sum(mix.weights * stats.betabinom.cdf(c, n[:, None], a, b), axis=1)
        np.testing.assert_allclose(mix.count_cdf(np.full(4, c), n), np.minimum(expected, 1),
                                   atol=1e-9)
    np.testing.assert_array_equal(mix.count_cdf(np.full(4, -1.0), n), 0.0)
    np.testing.assert_allclose(mix.count_cdf(n, n), 1.0)
    q = mix.count_quantile(0.5, n)
    assert np.all(mix.count_cdf(q, n) >= 0.5) and np.all(mix.count_cdf(q - 1, n) < 0.5)


def test_count_cdf_for_large_n_approximates_the_exact_sum():
    mix = Mixture(np.array([[0.3, 0.7]]), np.array([[0.02, 0.1]]), np.array([[50.0, 400.0]]),
                  "beta")
    n = np.array([5000.0])
    a, b = mix.means * mix.scales, (1 - mix.means) * mix.scales
    for c in (60.0, 300.0, 520.0, 700.0):
        exact = np.sum(mix.weights * stats.betabinom.cdf(c, n[:, None], a, b), axis=1)
        np.testing.assert_allclose(mix.count_cdf(np.array([c]), n), exact, atol=2e-3)


@pytest.mark.parametrize("row", [[80.0, -80.0, 0.0, 1e-6, 1 - 1e-6, 0.5, 1.0, 1e9, 3.0],
                                 [0.0, 0.0, 0.0, 1e-6, 1e-6, 1e-6, 1e-3, 1e-3, 1e-3]])
def test_extreme_params_and_labels_give_finite_loss_and_gradients(row):
    labels = np.array([[0.0, 1.0, 0], [1.0, 1.0, 1], [0.0, 1e7, 0], [1.0, 1e7, 1e7],
                       [0.03, 1e7, 3e5], [0.5, 0.0, 0]], np.float32)
    params = tf.Variable(np.tile(row, (len(labels), 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        value = BBDDNLoss(3)(labels, params)
    assert np.isfinite(value.numpy()) and value.numpy() >= 0
    assert np.all(np.isfinite(tape.gradient(value, params).numpy()))


def test_clicks_from_ctr_when_labels_have_two_columns():
    params = _beta_params(len(GRID), seed=3).astype(np.float32)
    clicks, n = GRID[:, 0], GRID[:, 1]
    three = np.stack([clicks / n, n, clicks], axis=1).astype(np.float32)
    small = GRID[:, 1] <= 1000  # ctr * n rounds back to the clicks in float32
    loss = BBDDNLoss(3, reduction=None)
    np.testing.assert_allclose(loss(three[small, :2], params[small]).numpy(),
                               loss(three[small], params[small]).numpy(), rtol=1e-6)


def test_head_initial_values_config_and_save_load(tmp_path):
    keras.utils.set_random_seed(0)
    head = BetaMixtureHead(3, min_concentration=2.0, initial_mean=0.005, initial_stddev=0.004)
    x = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    params = head(x).numpy()
    mix = Mixture.from_params(params, 3, "beta")
    assert params.shape == (64, 9)
    assert np.all(mix.scales > 2.0)
    np.testing.assert_allclose(mix.mean().mean(), 0.005, rtol=0.1)
    np.testing.assert_allclose(np.median(mix.component_stddevs()), 0.004, rtol=0.3)
    restored = BetaMixtureHead.from_config(head.get_config())
    assert restored.get_config() == head.get_config()
    inputs = keras.Input((16,))
    model = keras.Model(inputs, head(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="min_concentration=0"):
        BetaMixtureHead(2, min_concentration=0)


def test_bbddn_recovers_a_known_beta_mixture_from_counts():
    """Two groups with known true-CTR Beta mixtures, seen only through clicks of n <= 30."""
    rng = np.random.default_rng(4)
    rows = 16_384
    group = rng.integers(0, 2, rows)
    # Group 0: 0.5 Beta(mean 0.02, kappa 200) + 0.5 Beta(mean 0.08, kappa 200);
    # group 1: Beta(mean 0.05, kappa 40).
    high = rng.random(rows) < 0.5
    mean = np.where(group == 0, np.where(high, 0.08, 0.02), 0.05)
    kappa = np.where(group == 0, 200.0, 40.0)
    true_ctr = rng.beta(mean * kappa, (1 - mean) * kappa)
    impressions = rng.integers(1, 31, rows).astype(np.float32)
    clicks = rng.binomial(impressions.astype(int), true_ctr).astype(np.float32)
    x = np.eye(2, dtype=np.float32)[group]
    y = np.stack([clicks / impressions, impressions, clicks], axis=1)

    keras.utils.set_random_seed(5)
    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, BetaMixtureHead(2, initial_mean=0.05)(hidden))
    steps = 400
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        0.03, steps)), loss=BBDDNLoss(2))
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(rows, seed=6).batch(512)
    model.fit(data.repeat(), steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)

    mix = Mixture.from_params(model(np.eye(2, dtype=np.float32)).numpy(), 2, "beta")
    true_means = [0.05, 0.05]
    true_sds = [np.sqrt(0.25 * 0.06**2 + 0.5 * (0.02 * 0.98 + 0.08 * 0.92) / 201),
                np.sqrt(0.05 * 0.95 / 41)]                                  # ~0.0317, ~0.034
    np.testing.assert_allclose(mix.mean(), true_means, atol=0.004)
    np.testing.assert_allclose(mix.stddev(), true_sds, rtol=0.2)
    # The observed CTR is far wider (binomial noise of n <= 30): deconvolved, not copied.
    observed = [y[group == g, 0].std() for g in (0, 1)]
    assert np.all(mix.stddev() < 0.5 * np.array(observed))
