"""`tfddn.uncertainty.decompose`: data, measurement, model and total stddev in numbers."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfddn.models.builder import build_model
from tfddn.models.config import ModelConfig
from tfddn.uncertainty import decompose, mc_dropout_params, predictive_moments

from specs import mini_spec

SPEC = mini_spec(drop=("age",))
VOCABS = {"ad": ["a1", "a2", "a3"], "words": ["red", "car"], "site": [7, 8]}
FEATURES = {"ad": tf.constant(["a1", "a2", "a3", "zz"]),
            "words": tf.constant([["red", "", ""], ["car", "red", ""], ["", "", ""],
                                  ["x", "car", ""]]),
            "site": tf.constant([7, 8, 99, 7], tf.int64)}


def _model(kind="ddn", dropout=0.3, seed=0):
    config = ModelConfig(kind=kind, embedding_dim=4, tower_units=(16,), fusion_units=(16,),
                         dropout=dropout, num_components=2)
    model = build_model(SPEC, VOCABS, {}, config, seed=seed)
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(0.0, 0.5, v.shape).astype("float32"))
    return model, config


def test_constant_beta_head_gives_the_known_beta_mixture():
    """BBDDN: data stddev is the Beta mixture's, measurement noise as for every kind."""
    model, config = _model(kind="bbddn", dropout=0.5)
    head = model.get_layer("density_network").get_layer("mixture_head")
    weights, means, kappas = np.array([0.2, 0.8]), np.array([0.01, 0.05]), np.array([50., 400.])
    head.kernel.assign(np.zeros(head.kernel.shape, "float32"))
    head.bias.assign(np.concatenate([
        np.log(weights), np.log(means / (1 - means)),
        np.log(kappas - config.min_concentration)]).astype("float32"))
    n = np.array([1.0, 10.0, 1e4, np.inf], "float32")
    parts = {k: v.numpy() for k, v in decompose(model, FEATURES, config, n, 32).items()}
    mean = weights @ means  # 0.042
    variance = weights @ (means * (1 - means) / (kappas + 1) + (means - mean) ** 2)
    np.testing.assert_allclose(parts["ctr_mean"], mean, rtol=1e-4)
    np.testing.assert_allclose(parts["data_stddev"], math.sqrt(variance), rtol=1e-4)
    np.testing.assert_allclose(parts["model_stddev"], 0.0, atol=1e-7)
    np.testing.assert_allclose(parts["measurement_stddev"], np.sqrt(mean * (1 - mean) / n),
                               rtol=1e-4)


def test_constant_head_gives_the_known_mixture_and_no_model_uncertainty():
    """Head kernel 0: every row and every dropout pass predicts the same mixture."""
    model, config = _model(dropout=0.5)
    head = model.get_layer("density_network").get_layer("mixture_head")
    weights, means, stddevs = np.array([0.2, 0.8]), np.array([0.1, 0.3]), np.array([0.02, 0.05])
    head.kernel.assign(np.zeros(head.kernel.shape, "float32"))
    head.bias.assign(np.concatenate([
        np.log(weights), np.log(means / (1 - means)),
        np.log(np.expm1(stddevs - config.min_stddev))]).astype("float32"))
    n = np.array([1.0, 10.0, 1e4, np.inf], "float32")
    parts = {k: v.numpy() for k, v in decompose(model, FEATURES, config, n, 64).items()}
    mean = weights @ means  # 0.26
    data = math.sqrt(weights @ (stddevs**2 + (means - mean) ** 2))
    np.testing.assert_allclose(parts["ctr_mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(parts["data_stddev"], data, rtol=1e-5)
    np.testing.assert_allclose(parts["model_stddev"], 0.0, atol=1e-7)
    np.testing.assert_allclose(parts["measurement_stddev"],
                               np.sqrt(mean * (1 - mean) / n), rtol=1e-5)
    assert parts["measurement_stddev"][3] == 0.0
    np.testing.assert_allclose(parts["total_stddev"], data, rtol=1e-5)


def test_dropout_zero_gives_model_stddev_zero_and_the_deterministic_prediction():
    model, config = _model(dropout=0.0)
    parts = decompose(model, FEATURES, config, mc_samples=16)
    mean, data = predictive_moments(model(FEATURES, training=False), config)
    np.testing.assert_array_equal(parts["model_stddev"].numpy(), 0.0)
    np.testing.assert_allclose(parts["ctr_mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(parts["data_stddev"], data, rtol=1e-6)
    np.testing.assert_allclose(parts["total_stddev"], data, rtol=1e-6)
    assert np.ptp(mean.numpy()) > 0.01  # rows differ: a [T, B] mix-up would show


def test_measurement_stddev_is_binomial_and_vanishes_with_infinite_impressions():
    model, config = _model(dropout=0.3)
    n = tf.constant([1.0, 7.0, 300.0, 1e9])
    parts = decompose(model, FEATURES, config, impressions=n, mc_samples=8)
    mu = parts["ctr_mean"].numpy().astype(np.float64)
    np.testing.assert_allclose(parts["measurement_stddev"],
                               np.sqrt(mu * (1 - mu) / n.numpy()), rtol=1e-6)
    assert np.all(np.diff(parts["measurement_stddev"].numpy()[[0, 1, 2]] /
                          np.sqrt(mu[[0, 1, 2]] * (1 - mu[[0, 1, 2]]))) < 0)
    for impressions in (None, np.inf):
        zero = decompose(model, FEATURES, config, impressions=impressions, mc_samples=2)
        np.testing.assert_array_equal(zero["measurement_stddev"].numpy(), 0.0)


def test_total_is_data_and_model_in_quadrature():
    model, config = _model(dropout=0.3)
    parts = {k: v.numpy() for k, v in decompose(model, FEATURES, config, 50.0, 128).items()}
    assert np.all(parts["model_stddev"] > 1e-4) and np.all(parts["data_stddev"] > 0)
    np.testing.assert_allclose(parts["total_stddev"] ** 2,
                               parts["data_stddev"] ** 2 + parts["model_stddev"] ** 2,
                               rtol=1e-5)
    one_pass = decompose(model, FEATURES, config, mc_samples=1)
    np.testing.assert_array_equal(one_pass["model_stddev"].numpy(), 0.0)


def test_reg_has_no_data_term():
    model, config = _model(kind="reg", dropout=0.3)
    parts = decompose(model, FEATURES, config, mc_samples=32)
    np.testing.assert_array_equal(parts["data_stddev"].numpy(), 0.0)
    np.testing.assert_allclose(parts["total_stddev"], parts["model_stddev"], rtol=1e-6)
    assert np.all(parts["model_stddev"].numpy() > 0)


def test_rejects_bad_arguments():
    model, config = _model()
    with pytest.raises(ValueError, match="mc_samples=0"):
        decompose(model, FEATURES, config, mc_samples=0)
    with pytest.raises(ValueError, match="feature_encoder"):
        decompose(model.get_layer("density_network"), FEATURES, config)


def test_mask_blocks_share_dropout_masks_between_blocks():
    """Two identical blocks: equal passes with shared masks, different ones without."""
    model, _ = _model(dropout=0.5)
    twice = {k: tf.concat([v, v], axis=0) for k, v in FEATURES.items()}
    shared = mc_dropout_params(model, twice, 8, mask_blocks=2).numpy()  # [8, 8, 3K]
    np.testing.assert_array_equal(shared[:, :4], shared[:, 4:])
    assert np.abs(shared[0] - shared[1]).max() > 1e-3  # passes still differ
    independent = mc_dropout_params(model, twice, 8).numpy()
    assert np.abs(independent[:, :4] - independent[:, 4:]).max() > 1e-3
    # The masks advance: the next call draws new ones.
    again = mc_dropout_params(model, twice, 8, mask_blocks=2).numpy()
    assert np.abs(again - shared).max() > 1e-3
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of mask_blocks"):
        mc_dropout_params(model, twice, 8, mask_blocks=3)
