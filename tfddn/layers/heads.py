"""Output heads: a hidden vector -> a CTR distribution (MDN / DDN / BBDDN) or a point (REG).

The mixture head emits packed mixture parameters (see `tfddn.distributions`) rather
than a `Distribution` object, so a model's output stays a plain tensor that Keras can
save, export and serve; `MixtureDensityHead.new(params)` turns it into the
`tfp.distributions.MixtureSameFamily`, in the `params_size` / `new` shape of TFP's
distribution layers (which do not work with Keras 3).

Initialisation matters on CTR data: targets cluster near a few percent, and a mixture
that starts at mean 0.5 with unit scales spends its first thousand steps (and often
its stability) getting there. Both heads therefore start at `initial_mean` (default
0.03, a typical CTR) through the output bias, with a small kernel so that the
starting point barely depends on the input; the mixture's scales start near
`initial_stddev`.

References:
    Zeldes et al. "Deep density networks and uncertainty in recommender systems",
    2018, arXiv:1711.02487, Sec. 3 (REG, MDN, DDN).
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
from keras import ops

from tfddn import distributions

__all__ = ["BetaMixtureHead", "MixtureDensityHead", "RegressionHead"]

_MEAN_SPREAD = 0.5
"""Width, in logit units, over which the K initial component means are spread."""


def _small_kernel():
    # Pre-activation std ~ 0.1 x the input's RMS: the initial output ~ the bias.
    return keras.initializers.VarianceScaling(
        scale=0.01, mode="fan_in", distribution="truncated_normal")


def _logit(p):
    return math.log(p / (1.0 - p))


def _check_probability(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise ValueError(f"`{name}` must be in the open interval (0, 1). "
                         f"Received: {name}={value!r}")
    return float(value)


class _PackedMixtureHead(keras.layers.Layer):
    """Dense projection to packed `concat(logits, means, scales)` `[..., 3K]` (shared by
    the Gaussian and Beta heads): a small kernel and a bias that sets the start."""

    def __init__(self, num_components, initial_mean, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_components, bool) or not isinstance(
                num_components, numbers.Integral) or num_components < 1:
            raise ValueError("`num_components` must be a positive integer. "
                             f"Received: num_components={num_components!r}")
        self.num_components = int(num_components)
        self.initial_mean = _check_probability("initial_mean", initial_mean)

    @staticmethod
    def params_size(num_components):
        """Size of the packed parameter vector: `3 * num_components`."""
        return 3 * int(num_components)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], self.params_size(self.num_components)),
            initializer=_small_kernel())
        self.bias = self.add_weight(
            name="bias", shape=(self.params_size(self.num_components),),
            initializer=self._bias_initializer)

    def _bias_initializer(self, shape, dtype=None):
        k = self.num_components
        spread = np.linspace(-_MEAN_SPREAD / 2, _MEAN_SPREAD / 2, k) if k > 1 else np.zeros(1)
        bias = np.concatenate([np.zeros(k), _logit(self.initial_mean) + spread,
                               np.full(k, self._initial_scale_bias())])
        return ops.convert_to_tensor(bias.reshape(shape), dtype=dtype)

    def _initial_scale_bias(self) -> float:
        raise NotImplementedError

    def _raw(self, inputs):
        """`(logits, mean pre-activations, scale pre-activations)`, each `[..., K]`."""
        k = self.num_components
        raw = ops.matmul(inputs, self.kernel) + self.bias
        return raw[..., :k], raw[..., k:2 * k], raw[..., 2 * k:]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.params_size(self.num_components))

    def get_config(self):
        base_config = super().get_config()
        return {**base_config, "num_components": self.num_components,
                "initial_mean": self.initial_mean}


@keras.saving.register_keras_serializable(package="tfddn")
class MixtureDensityHead(_PackedMixtureHead):
    """Dense projection to the parameters of a K-component Gaussian mixture over CTR.

    Outputs `concat(logits, means, stddevs)`: raw mixture logits, component means
    through a sigmoid so that they lie in (0, 1), and component standard deviations
    `softplus(.) + min_stddev`. The same head serves the MDN (loss `MDNLoss`) and the
    DDN (loss `DDNLoss`, which convolves it with the measurement noise); the
    distribution over the *true* CTR is `new(params)`.

    Args:
        num_components: `K`, the number of Gaussian components (>= 1).
        min_stddev: floor added to every component's standard deviation (> 0).
        initial_mean: CTR, in (0, 1), the component means start near (spread by
            +-0.25 in logit units across components to break their symmetry).
        initial_stddev: standard deviation the components start near
            (> `min_stddev`).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input shape:
        `(..., hidden_dim)`.

    Output shape:
        `(..., 3 * num_components)`.

    Example:

    ```python
    head = MixtureDensityHead(3)
    params = head(hidden)                    # (batch, 9)
    dist = head.new(params)                  # MixtureSameFamily, batch shape (batch,)
    ctr, data_sd = dist.mean(), dist.stddev()
    ```
    """

    def __init__(self, num_components, min_stddev=1e-3, initial_mean=0.03,
                 initial_stddev=0.02, **kwargs):
        super().__init__(num_components, initial_mean, **kwargs)
        if isinstance(min_stddev, bool) or not isinstance(min_stddev, numbers.Real) \
                or not 0.0 < min_stddev < math.inf:
            raise ValueError("`min_stddev` must be a positive finite number. "
                             f"Received: min_stddev={min_stddev!r}")
        if isinstance(initial_stddev, bool) or not isinstance(initial_stddev, numbers.Real) \
                or not min_stddev < initial_stddev < math.inf:
            raise ValueError(f"`initial_stddev` must be finite and greater than "
                             f"min_stddev={min_stddev}. "
                             f"Received: initial_stddev={initial_stddev!r}")
        self.min_stddev = float(min_stddev)
        self.initial_stddev = float(initial_stddev)

    def _initial_scale_bias(self):
        # softplus^-1(x) = log(expm1(x)).
        return math.log(math.expm1(self.initial_stddev - self.min_stddev))

    def call(self, inputs):
        logits, means, stddevs = self._raw(inputs)
        return ops.concatenate(
            [logits, ops.sigmoid(means), ops.softplus(stddevs) + self.min_stddev], axis=-1)

    def new(self, params, impressions=None):
        """The mixture for `params`; convolved with measurement noise if `impressions`.

        Args:
            params: this layer's output, `(..., 3K)`.
            impressions: optional `n`, `(...)`; see `tfddn.distributions.mixture`.

        Returns:
            A `tfp.distributions.MixtureSameFamily` with batch shape `(...)`.
        """
        return distributions.mixture(params, self.num_components, impressions=impressions)

    def get_config(self):
        return {**super().get_config(), "min_stddev": self.min_stddev,
                "initial_stddev": self.initial_stddev}


@keras.saving.register_keras_serializable(package="tfddn")
class BetaMixtureHead(_PackedMixtureHead):
    """Dense projection to a K-component Beta mixture over CTR (the BBDDN head).

    Outputs `concat(logits, means, concentrations)`: raw mixture logits, component means
    `m_k` through a sigmoid squeezed into `[eps, 1 - eps]`, and concentrations
    `kappa_k = alpha_k + beta_k = min_concentration + exp(.)` (log-parametrised: useful
    concentrations span 1 to 10^5, which a softplus would need ~10^5 steps to reach).
    The component is `Beta(m_k kappa_k, (1 - m_k) kappa_k)`, stddev
    `sqrt(m_k (1 - m_k) / (kappa_k + 1))`; the loss `BBDDNLoss` integrates it against
    the exact Binomial (`tfddn.distributions.beta`).

    Args:
        num_components: `K` (>= 1).
        min_concentration: floor on every `kappa_k` (> 0). It bounds the component
            stddev by `sqrt(m (1 - m) / (min_concentration + 1))`; rows with n = 1 say
            nothing about kappa (P(click) is the mean whatever the spread), so the floor
            and the start matter where most rows are single impressions.
        initial_mean: CTR in (0, 1) the component means start near (spread by +-0.25
            in logit units across components).
        initial_stddev: stddev the components start near (sets the starting kappa).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input shape:
        `(..., hidden_dim)`.

    Output shape:
        `(..., 3 * num_components)`.

    Example:

    ```python
    head = BetaMixtureHead(3)
    params = head(hidden)                        # (batch, 9)
    clicks_dist = head.new(params, impressions)  # mixture of BetaBinomials over clicks
    ```
    """

    def __init__(self, num_components, min_concentration=1.0, initial_mean=0.03,
                 initial_stddev=0.02, **kwargs):
        super().__init__(num_components, initial_mean, **kwargs)
        for name, value in (("min_concentration", min_concentration),
                            ("initial_stddev", initial_stddev)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not 0.0 < value < math.inf:
                raise ValueError(f"`{name}` must be a positive finite number. "
                                 f"Received: {name}={value!r}")
        self.min_concentration = float(min_concentration)
        self.initial_stddev = float(initial_stddev)

    def _initial_scale_bias(self):
        # Var = m (1 - m) / (kappa + 1); at least twice the floor so that it can move down.
        m = self.initial_mean
        kappa = max(m * (1.0 - m) / self.initial_stddev**2 - 1.0, 2.0 * self.min_concentration)
        return math.log(kappa - self.min_concentration)

    def call(self, inputs):
        logits, means, concentrations = self._raw(inputs)
        eps = distributions.MEAN_EPSILON
        return ops.concatenate(
            [logits, eps + (1.0 - 2.0 * eps) * ops.sigmoid(means),
             self.min_concentration + ops.exp(ops.clip(concentrations, -30.0, 30.0))],
            axis=-1)

    def new(self, params, impressions=None):
        """The Beta mixture for `params` (over clicks, a Beta-Binomial mixture, if
        `impressions`); see `tfddn.distributions.beta.mixture`."""
        return distributions.mixture(params, self.num_components, impressions=impressions,
                                     family="beta")

    def get_config(self):
        return {**super().get_config(), "min_concentration": self.min_concentration,
                "initial_stddev": self.initial_stddev}


@keras.saving.register_keras_serializable(package="tfddn")
class RegressionHead(keras.layers.Layer):
    """Dense(1) + sigmoid: the REG model's point estimate of CTR.

    Args:
        initial_mean: CTR, in (0, 1), the estimate starts near (the output bias is
            `logit(initial_mean)`).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input shape:
        `(..., hidden_dim)`.

    Output shape:
        `(..., 1)`, values in (0, 1).
    """

    def __init__(self, initial_mean=0.03, **kwargs):
        super().__init__(**kwargs)
        self.initial_mean = _check_probability("initial_mean", initial_mean)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], 1), initializer=_small_kernel())
        self.bias = self.add_weight(
            name="bias", shape=(1,),
            initializer=keras.initializers.Constant(_logit(self.initial_mean)))

    def call(self, inputs):
        return ops.sigmoid(ops.matmul(inputs, self.kernel) + self.bias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)

    def get_config(self):
        base_config = super().get_config()
        return {**base_config, "initial_mean": self.initial_mean}
