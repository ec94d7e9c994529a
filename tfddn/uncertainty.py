"""The three uncertainties of a prediction, in one batched computation (Naor et al.).

For raw features `x` (and optionally the impressions `n` the CTR will be measured on),
`decompose` returns, per row:

- `ctr_mean`: the predicted CTR, the mean over T MC-dropout passes of the mixture mean
  `mu_t` (Gal & Ghahramani's MC-dropout predictive mean);
- `data_stddev` `s_d = sqrt(mean_t s_d,t^2)`: the width of the predicted CTR
  distribution itself (the mixture stddev, Zeldes et al. 2018, Sec. 3), averaged over
  the passes; 0 for REG, which predicts no distribution;
- `model_stddev` `s_m`: the (population, 1/T) std over passes of `mu_t`, the model
  uncertainty (Naor et al.); exactly 0 without dropout;
- `measurement_stddev` `s_e = sqrt(mu (1 - mu) / n)` with `mu = ctr_mean`: the binomial
  noise of an observed CTR over `n` impressions (Zeldes et al. 2018, Sec. 3); 0 when
  `impressions` is None or infinite;
- `total_stddev = sqrt(s_d^2 + s_m^2)`: the predictive stddev of the *true* CTR over
  the T passes (law of total variance), the quantity UCB explores with (DESIGN.md).
  The measurement noise is **not** included: it is noise of one future observation,
  not uncertainty about the CTR; `sqrt(total^2 + s_e^2)` is the stddev of an observed
  CTR over `n` impressions.

The T passes are one graph: the deterministic `feature_encoder` once (inference mode:
no OOV replacement), every tensor it returns tiled T times along the batch axis,
`density_network` once on the `[T*B]` batch with dropout on, reshaped to `[T, B, ...]`.
Nothing depends on the encoder's outputs beyond "a structure of `[B, ...]` tensors",
so attention or extra encoder outputs need no change here.

References:
    Zeldes et al., "Deep density networks and uncertainty in recommender systems",
    2018, arXiv:1711.02487. Naor et al., "Debugging large scale deep recommender systems
    using uncertainty estimations and attention". Gal & Ghahramani, "Dropout as a
    Bayesian approximation", ICML 2016.

Example:
    >>> parts = decompose(model, features, model_config, impressions=n, mc_samples=32)
    >>> parts["model_stddev"]        # [batch]
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfddn import distributions
from tfddn.models.builder import DENSITY_NAME, ENCODER_NAME
from tfddn.models.config import ModelConfig

__all__ = ["UNCERTAINTY_KEYS", "decompose", "decompose_params", "mc_dropout_params",
           "predictive_moments", "seed_dropout"]

UNCERTAINTY_KEYS = ("ctr_mean", "data_stddev", "measurement_stddev", "model_stddev",
                    "total_stddev")


def predictive_moments(params, model_config: ModelConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """`(mean, data stddev)` of the model's output `[..., 3K]` (REG `[..., 1]`: stddev 0)."""
    params = tf.cast(params, tf.float32)
    if not model_config.is_density:
        return params[..., 0], tf.zeros_like(params[..., 0])
    k, family = model_config.num_components, model_config.family
    return (distributions.mixture_mean(params, k, family),
            distributions.mixture_stddev(params, k, family))


def _parts(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    try:
        return model.get_layer(ENCODER_NAME), model.get_layer(DENSITY_NAME)
    except ValueError:
        raise ValueError(
            f"MC dropout needs a `tfddn.models.build_model` model with the sub-models "
            f"{ENCODER_NAME!r} and {DENSITY_NAME!r}. Received: a model with layers "
            f"{[layer.name for layer in model.layers]}") from None


def _dropout_seed_states(network: keras.Model) -> list:
    """The seed-generator state variables of every layer of `network` (its dropout)."""
    return [generator.state for layer in network._flatten_layers(include_self=True)
            for generator in getattr(layer, "_seed_generators", ())]


def mc_dropout_params(model: keras.Model, features, mc_samples: int,
                      mask_blocks: int = 1) -> tf.Tensor:
    """The model's output for T dropout passes, shape `[T, B, ...]`, float32.

    Args:
        model: a `tfddn.models.build_model` model (`feature_encoder` + `density_network`).
        features: raw feature tensors by the spec's names, batch size B.
        mc_samples: T, at least 1. Each call draws new dropout masks.
        mask_blocks: the batch is this many equal blocks, block-major (a batch and its
            marginalised copies, `tfddn.explain.marginalise.expand`); row `i` of every
            block gets the same T dropout masks (common random numbers), so the
            difference between a row and its copy is the inputs' doing, not MC noise.
            B must be a multiple of it. 1: independent masks for every row.
    """
    if mc_samples < 1:
        raise ValueError(f"mc_samples must be >= 1. Received: mc_samples={mc_samples}")
    if mask_blocks < 1:
        raise ValueError(f"mask_blocks must be >= 1. Received: mask_blocks={mask_blocks}")
    encoder, density = _parts(model)
    encoded = encoder(features, training=False)
    batch = tf.shape(tf.nest.flatten(encoded)[0])[0]

    def passes(block):
        tiled = tf.nest.map_structure(
            lambda v: tf.tile(v, tf.concat([[mc_samples], tf.ones_like(tf.shape(v)[1:])], 0)),
            block)
        out = tf.cast(density(tiled, training=True), tf.float32)
        rows = tf.shape(tf.nest.flatten(block)[0])[0]
        return tf.reshape(out, tf.concat([[mc_samples, rows], tf.shape(out)[1:]], axis=0))

    if mask_blocks == 1:
        return passes(encoded)
    tf.debugging.assert_equal(batch % mask_blocks, 0,
                              message="the batch must be a multiple of mask_blocks")
    size = batch // mask_blocks
    states = _dropout_seed_states(density)
    start = [tf.identity(state.value) for state in states]
    outs = []
    for i in range(mask_blocks):  # same seeds, same shapes -> the same masks per block
        for state, value in zip(states, start):
            state.assign(value)
        outs.append(passes(tf.nest.map_structure(lambda v: v[i * size:(i + 1) * size],
                                                 encoded)))
    return tf.concat(outs, axis=1)


def decompose(model: keras.Model, features, model_config: ModelConfig, impressions=None,
              mc_samples: int = 32, mask_blocks: int = 1) -> dict[str, tf.Tensor]:
    """Data, measurement, model and total uncertainty of every row (module docstring).

    Args:
        model: a `tfddn.models.build_model` model.
        features: raw feature tensors by the spec's names, batch size B.
        model_config: the model's `ModelConfig` (kind, K).
        impressions: optional `n` per row `[B]` (or a scalar) for `measurement_stddev`;
            None or `inf` gives 0.
        mc_samples: T dropout passes (>= 1; T = 1 gives `model_stddev` 0).
        mask_blocks: share dropout masks between this many equal blocks of the batch
            (`mc_dropout_params`); 1 draws independent masks for every row.

    Returns:
        A dict with the float32 `[B]` tensors of `UNCERTAINTY_KEYS`.
    """
    params = mc_dropout_params(model, features, mc_samples, mask_blocks)
    return decompose_params(params, model_config, impressions)


def decompose_params(params, model_config: ModelConfig, impressions=None) -> dict[str, tf.Tensor]:
    """`decompose` from the outputs `[T, B, ...]` of `mc_dropout_params` (kept for reuse,
    e.g. Thompson sampling from the same passes)."""
    means, data_stddevs = predictive_moments(params, model_config)  # [T, B] each
    ctr_mean = tf.reduce_mean(means, axis=0)
    data_var = tf.reduce_mean(tf.square(data_stddevs), axis=0)
    # Shifted by the first pass: exactly 0 when every pass agrees (no float32 residue
    # of the mean), and no cancellation between large squares.
    shifted = means - means[0]
    model_var = tf.maximum(tf.reduce_mean(tf.square(shifted), axis=0)
                           - tf.square(tf.reduce_mean(shifted, axis=0)), 0.0)
    if impressions is None:
        measurement = tf.zeros_like(ctr_mean)
    else:
        measurement = tf.sqrt(distributions.measurement_variance(ctr_mean, impressions))
    return {"ctr_mean": ctr_mean, "data_stddev": tf.sqrt(data_var),
            "measurement_stddev": measurement, "model_stddev": tf.sqrt(model_var),
            "total_stddev": tf.sqrt(data_var + model_var)}


def seed_dropout(model: keras.Model, seed: int) -> None:
    """Restarts the dropout masks of `mc_dropout_params` from `seed`.

    A loaded model's dropout draws from seed states saved with it, advanced by every
    call; after `seed_dropout(model, s)` the same calls on batches of the same shapes draw
    the same masks again, so a job's model stddevs are reproducible (each dropout layer
    gets its own state, derived from `(seed, layer number)`).
    """
    import numpy as np

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0. Received: seed={seed!r}")
    for i, state in enumerate(_dropout_seed_states(_parts(model)[1])):
        base = int(np.random.default_rng([seed, i]).integers(1, 2**31 - 1))
        state.assign(np.array([base, 0], dtype=state.dtype))
