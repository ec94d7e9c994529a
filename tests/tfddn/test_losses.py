"""Mixture likelihoods and the REG / MDN / DDN losses, against scipy and closed forms."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats
from scipy.special import logsumexp, softmax

from tfddn import distributions, losses
from tfddn.layers import BetaMixtureHead, MixtureDensityHead

# (logits, means, stddevs) of hand-written 1-, 2- and 3-component mixtures.
MIXTURES = {
    1: ([0.0], [0.04], [0.01]),
    2: ([0.3, -0.2], [0.02, 0.07], [0.005, 0.02]),
    3: ([1.0, 0.0, -2.0], [0.01, 0.05, 0.3], [0.004, 0.015, 0.1]),
}
Y = np.array([0.0, 0.03, 0.05, 0.25, 1.0])
N = np.array([1.0, 10.0, 250.0, 3e4, 1e7])


def _params(k, rows=len(Y)):
    logits, means, stddevs = MIXTURES[k]
    return np.tile(np.concatenate([logits, means, stddevs]), (rows, 1)).astype(np.float32)


def _scipy_log_likelihood(y, k, n=None):
    """log sum_k a_k N(y; m_k, s_k^2 + s_e^2), s_e^2 = mu (1 - mu) / n, by scipy."""
    logits, means, stddevs = (np.asarray(v, np.float64) for v in MIXTURES[k])
    weights = softmax(logits)
    variance = np.tile(stddevs**2, (len(y), 1))
    if n is not None:
        mu = weights @ means
        variance = variance + (mu * (1 - mu) / n)[:, None]
    log_pdf = stats.norm.logpdf(y[:, None], means, np.sqrt(variance))
    return logsumexp(np.log(weights) + log_pdf, axis=1)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("with_n", [False, True])
def test_log_likelihood_matches_scipy(k, with_n):
    n = N if with_n else None
    got = distributions.log_likelihood(Y.astype(np.float32), _params(k), k, impressions=n)
    np.testing.assert_allclose(got.numpy(), _scipy_log_likelihood(Y, k, n), rtol=1e-4,
                               atol=1e-3)


def test_log_likelihood_accepts_column_labels_and_matches_tfp():
    params = _params(3)
    column = distributions.log_likelihood(Y[:, None], params, 3, impressions=N[:, None])
    flat = distributions.log_likelihood(Y, params, 3, impressions=N)
    tfp_value = distributions.mixture(params, 3, impressions=N).log_prob(Y.astype(np.float32))
    np.testing.assert_allclose(column.numpy(), flat.numpy(), rtol=1e-6)
    np.testing.assert_allclose(flat.numpy(), tfp_value.numpy(), rtol=1e-4, atol=1e-3)


def test_mixture_moments_closed_form_and_samples():
    logits, means, stddevs = (np.asarray(v) for v in MIXTURES[3])
    weights = softmax(logits)
    mean = weights @ means
    stddev = np.sqrt(weights @ (stddevs**2 + means**2) - mean**2)
    params = _params(3, rows=1)
    np.testing.assert_allclose(distributions.mixture_mean(params, 3).numpy(), [mean], rtol=1e-6)
    np.testing.assert_allclose(distributions.mixture_stddev(params, 3).numpy(), [stddev],
                               rtol=1e-5)
    samples = distributions.mixture(params, 3).sample(200_000, seed=7).numpy()
    assert abs(samples.mean() - mean) < 4 * stddev / np.sqrt(len(samples))
    np.testing.assert_allclose(samples.std(), stddev, rtol=0.01)


def test_mixture_stddev_is_component_stddev_for_identical_components():
    # sum a_k (s^2 + m^2) - mean^2 cancels to s^2 exactly; the float32 form must too.
    params = np.array([[0.5, -1.0, 0.9, 0.9, 1e-3, 1e-3]], np.float32)
    np.testing.assert_allclose(distributions.mixture_stddev(params, 2).numpy(), [1e-3],
                               rtol=1e-4)


def test_measurement_variance_and_stddev():
    got = distributions.measurement_variance([0.0, 0.5, 1.0, 0.1], [100.0, 0.0, 5.0, 10.0])
    eps = distributions.MEAN_EPSILON
    np.testing.assert_allclose(got.numpy(), [eps * (1 - eps) / 100, 0.25, eps * (1 - eps) / 5,
                                             0.009], rtol=1e-5)
    sd = distributions.measurement_stddev(_params(1, rows=2), 1, [[100.0], [1e4]])
    np.testing.assert_allclose(sd.numpy(), np.sqrt(0.04 * 0.96 / np.array([100.0, 1e4])),
                               rtol=1e-5)


def test_ddn_convolution_variance_for_small_n():
    params = _params(1, rows=1)
    variance = 0.01**2 + 0.04 * 0.96 / 5.0
    dist = distributions.mixture(params, 1, impressions=[5.0])
    np.testing.assert_allclose(dist.variance().numpy(), [variance], rtol=1e-5)
    ll = distributions.log_likelihood([0.2], params, 1, impressions=[5.0])
    np.testing.assert_allclose(ll.numpy(), stats.norm.logpdf(0.2, 0.04, np.sqrt(variance)),
                               rtol=1e-5)


def test_ddn_loss_tends_to_mdn_loss_for_large_n():
    params = _params(3)
    big_n = np.stack([Y, np.full_like(Y, 1e12)], axis=1)
    small_n = np.stack([Y, np.full_like(Y, 20.0)], axis=1)
    mdn, ddn = losses.MDNLoss(3), losses.DDNLoss(3)
    np.testing.assert_allclose(ddn(big_n, params).numpy(), mdn(big_n, params).numpy(),
                               rtol=1e-6)
    expected = -_scipy_log_likelihood(Y, 3, np.full_like(Y, 20.0)).mean()
    np.testing.assert_allclose(ddn(small_n, params).numpy(), expected, rtol=1e-4)
    # Wider components explain the far-away CTRs: the noisy rows cost less under the DDN.
    assert ddn(small_n, params) < mdn(small_n, params)


def test_ddn_gradient_treats_measurement_variance_as_fixed():
    # One component at y == m: the residual term has zero gradient in m, and so must the
    # variance term, s_e^2 being a plug-in at the current mean (no pull of mu towards 0).
    params = tf.Variable([[0.0, 0.05, 0.01]])
    with tf.GradientTape() as tape:
        value = losses.DDNLoss(1)([[0.05, 10.0]], params)
    np.testing.assert_allclose(tape.gradient(value, params).numpy()[0, 1], 0.0, atol=1e-6)


def test_regression_loss_is_mse_against_empirical_ctr():
    y_true = np.array([[0.1, 10.0], [0.0, 1.0], [1.0, 3.0]], np.float32)
    y_pred = np.array([[0.2], [0.05], [0.5]], np.float32)
    np.testing.assert_allclose(losses.RegressionLoss()(y_true, y_pred).numpy(),
                               np.mean([0.01, 0.0025, 0.25]), rtol=1e-6)


EXTREME_LABELS = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 1e7], [1.0, 1e7], [0.03, 1e7],
                           [0.5, 0.0]], np.float32)


@pytest.mark.parametrize("loss", [losses.MDNLoss(2), losses.DDNLoss(2)], ids=["mdn", "ddn"])
def test_extreme_params_give_finite_loss_and_gradients(loss):
    # Extreme logits, means at the (0, 1) boundary, scales at and below the floor.
    row = [80.0, -80.0, 0.0, 1.0, 1e-3, 1e-9]
    params = tf.Variable(np.tile(row, (len(EXTREME_LABELS), 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        value = loss(EXTREME_LABELS, params)
    assert np.isfinite(value.numpy())
    assert np.all(np.isfinite(tape.gradient(value, params).numpy()))


@pytest.mark.parametrize("kind", losses.MODEL_KINDS)
def test_extreme_rows_through_a_model_give_finite_gradients(kind):
    head = (keras.layers.Dense(1, activation="sigmoid") if kind == "reg"
            else BetaMixtureHead(3) if kind == "bbddn" else MixtureDensityHead(3))
    inputs = keras.Input((4,))
    model = keras.Model(inputs, head(keras.layers.Dense(8, activation="relu")(inputs)))
    x = np.array([[0, 0, 0, 0], [1e4, -1e4, 1e4, 1e4], [-1e4, 1e4, 1e4, -1e4],
                  [1, 2, 3, 4], [1e3, 1e3, 1e3, 1e3], [5, -5, 5, -5]], np.float32)
    loss = losses.loss_for(kind, 3)
    with tf.GradientTape() as tape:
        value = loss(EXTREME_LABELS, model(x))
    grads = tape.gradient(value, model.trainable_variables)
    assert np.isfinite(value.numpy())
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_float16_predictions_are_scored_in_float32():
    params = _params(3)
    y_true = np.stack([Y, N], axis=1)
    loss = losses.DDNLoss(3)
    value = loss(y_true, tf.constant(params, tf.float16))
    assert value.dtype == tf.float32
    np.testing.assert_allclose(value.numpy(), loss(y_true, params).numpy(), rtol=2e-3)


@pytest.mark.parametrize("loss, y_pred", [
    (losses.MDNLoss(3), _params(3)),
    (losses.DDNLoss(2, reduction="sum"), _params(2)),
    (losses.RegressionLoss(name="reg"), np.full((len(Y), 1), 0.04, np.float32)),
], ids=["mdn", "ddn", "reg"])
def test_loss_config_round_trip(loss, y_pred):
    restored = type(loss).from_config(loss.get_config())
    assert restored.get_config() == loss.get_config()
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(revived) is type(loss) and revived.get_config() == loss.get_config()
    y_true = np.stack([Y, N], axis=1).astype(np.float32)
    np.testing.assert_allclose(revived(y_true, y_pred).numpy(), loss(y_true, y_pred).numpy())


def test_loss_for_and_argument_validation():
    assert isinstance(losses.loss_for("reg", 3), losses.RegressionLoss)
    assert losses.loss_for("mdn", 3).num_components == 3
    assert isinstance(losses.loss_for("ddn", 2), losses.DDNLoss)
    with pytest.raises(ValueError, match="model_kind='gan'"):
        losses.loss_for("gan", 3)
    with pytest.raises(ValueError, match="num_components=0"):
        losses.DDNLoss(0)
    with pytest.raises(ValueError, match="num_components=2"):
        distributions.split_params(_params(3), 2)
