"""Mixture and regression heads: initialisation, config and .keras round trips, training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfddn import distributions
from tfddn.layers import MixtureDensityHead, RegressionHead
from tfddn.losses import DDNLoss


def _tiny_model(head, hidden_dim=8, input_dim=4, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((input_dim,))
    hidden = keras.layers.Dense(hidden_dim, activation="relu")(inputs)
    return keras.Model(inputs, head(hidden))


def test_mixture_head_outputs_packed_params_near_initial_values():
    keras.utils.set_random_seed(0)
    head = MixtureDensityHead(3, initial_mean=0.05, initial_stddev=0.02)
    x = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    params = head(x).numpy()
    assert params.shape == (64, MixtureDensityHead.params_size(3)) == (64, 9)
    logits, means, stddevs = (t.numpy() for t in distributions.split_params(params, 3))
    assert np.all(np.abs(logits) < 1.0)
    assert np.all((means > 0.03) & (means < 0.08))
    np.testing.assert_allclose(distributions.mixture_mean(params, 3).numpy().mean(), 0.05,
                               atol=0.003)
    np.testing.assert_allclose(np.median(stddevs), 0.02, atol=0.002)
    assert np.all((stddevs > 0.01) & (stddevs < 0.04))
    assert head.compute_output_shape((None, 16)) == (None, 9)


def test_mixture_head_new_is_the_mixture_of_its_params():
    head = MixtureDensityHead(2, min_stddev=0.01)
    params = head(np.ones((3, 5), np.float32))
    dist = head.new(params)
    np.testing.assert_allclose(dist.mean().numpy(),
                               distributions.mixture_mean(params, 2).numpy(), rtol=1e-6)
    np.testing.assert_allclose(dist.stddev().numpy(),
                               distributions.mixture_stddev(params, 2).numpy(), rtol=1e-5)
    assert np.all(distributions.split_params(params, 2)[2].numpy() > 0.01)
    wider = head.new(params, impressions=[10.0, 10.0, 10.0])
    assert np.all(wider.stddev().numpy() > dist.stddev().numpy())


def test_regression_head_starts_at_initial_mean():
    keras.utils.set_random_seed(1)
    head = RegressionHead(initial_mean=0.1)
    out = head(np.random.default_rng(1).normal(size=(32, 6)).astype(np.float32)).numpy()
    assert out.shape == (32, 1)
    np.testing.assert_allclose(np.median(out), 0.1, atol=0.005)
    assert np.all((out > 0.06) & (out < 0.16))


@pytest.mark.parametrize("layer", [
    MixtureDensityHead(4, min_stddev=1e-4, initial_mean=0.2, initial_stddev=0.05, name="mdh"),
    RegressionHead(initial_mean=0.07, name="reg"),
], ids=["mixture", "regression"])
def test_config_round_trip(layer):
    x = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    layer(x)
    restored = type(layer).from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    restored(x)
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(restored(x).numpy(), layer(x).numpy(), rtol=1e-6)
    revived = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(revived) is type(layer) and revived.get_config() == layer.get_config()


def test_save_load_keras_gives_identical_outputs(tmp_path):
    model = _tiny_model(MixtureDensityHead(3))
    x = np.random.default_rng(3).normal(size=(10, 4)).astype(np.float32)
    path = str(tmp_path / "mdn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[-1], MixtureDensityHead)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("kwargs, match", [
    ({"num_components": 0}, "num_components=0"),
    ({"num_components": 2.5}, "num_components=2.5"),
    ({"num_components": 2, "min_stddev": 0.0}, "min_stddev=0.0"),
    ({"num_components": 2, "initial_mean": 1.0}, "initial_mean=1.0"),
    ({"num_components": 2, "initial_stddev": 1e-4}, "initial_stddev=0.0001"),
])
def test_mixture_head_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixtureDensityHead(**kwargs)


def test_regression_head_validates_arguments():
    with pytest.raises(ValueError, match="initial_mean=0"):
        RegressionHead(initial_mean=0)


def test_ddn_training_recovers_the_true_ctr_distribution():
    """Two groups with known true-CTR mixtures, observed through binomial noise."""
    rng = np.random.default_rng(4)
    rows = 8192
    group = rng.integers(0, 2, rows)
    # Group 0: 0.5 N(0.02, 0.004^2) + 0.5 N(0.06, 0.004^2); group 1: N(0.10, 0.01^2).
    high = rng.random(rows) < 0.5
    true_ctr = np.where(group == 0,
                        np.where(high, 0.06, 0.02) + 0.004 * rng.normal(size=rows),
                        0.10 + 0.01 * rng.normal(size=rows)).clip(1e-4, 1.0)
    impressions = rng.integers(10, 200, rows).astype(np.float32)
    clicks = rng.binomial(impressions.astype(int), true_ctr)
    x = np.eye(2, dtype=np.float32)[group]
    y = np.stack([clicks / impressions, impressions], axis=1).astype(np.float32)

    steps = 300
    model = _tiny_model(MixtureDensityHead(2), hidden_dim=16, input_dim=2, seed=5)
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.02, steps))
    model.compile(optimizer=optimizer, loss=DDNLoss(2))
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(rows, seed=6).batch(512)
    model.fit(data.repeat(), steps_per_epoch=steps, epochs=1, shuffle=False,
              verbose=0)

    params = model(np.eye(2, dtype=np.float32))
    true_means = [true_ctr[group == g].mean() for g in (0, 1)]  # ~0.04, ~0.10
    np.testing.assert_allclose(distributions.mixture_mean(params, 2).numpy(), true_means,
                               atol=0.003)
    # Deconvolution: the data stddev is the true CTR's spread (~0.0204, ~0.01), not the
    # much wider spread of the observed CTR (~0.031, ~0.038).
    true_sds = [true_ctr[group == g].std() for g in (0, 1)]
    observed_sds = [y[group == g, 0].std() for g in (0, 1)]
    data_sd = distributions.mixture_stddev(params, 2).numpy()
    np.testing.assert_allclose(data_sd, true_sds, atol=0.004)
    assert np.all(data_sd < 0.75 * np.array(observed_sds))
