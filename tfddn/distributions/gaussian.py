"""Gaussian mixtures over CTR, with and without binomial measurement noise.

A mixture density head predicts, for every example, the packed parameters

    params = concat(logits [K], means [K], stddevs [K])      shape [batch, 3K]

of the mixture `p(y* | x) = sum_k a_k N(y*; m_k, s_k^2)` over the *true* CTR `y*`,
with `a = softmax(logits)` (Zeldes et al. 2018, Sec. 3, the MDN). The *observed* CTR
`y = clicks / n` of a binomial experiment with `n` impressions adds measurement noise,
approximated by a Gaussian of variance `s_e^2 = mu (1 - mu) / n`, `mu` the mixture mean.
Convolving the two gives the DDN likelihood (Sec. 3, Eq. 3)

    p(y | x, n) = sum_k a_k N(y; m_k, s_k^2 + s_e^2).

Everything here is a pure function on tensors. The likelihood used by the losses is
computed by hand (log-softmax weights, per-component Normal log-densities on variances,
logsumexp) so that it stays finite for CTR 0 or 1, `n = 1`, huge `n` and extreme logits;
`mixture()` builds the equivalent `tfp.distributions.MixtureSameFamily` for sampling,
quantiles and anything else a caller needs.

References:
    Zeldes, Theodorakis, Solodnik, Rotman, Chamiel, Friedman. "Deep density networks
    and uncertainty in recommender systems", 2018. arXiv:1711.02487.

Example:

    params = head(hidden)                                  # [batch, 3K]
    ctr = mixture_mean(params, 3)                          # [batch]
    data_sd = mixture_stddev(params, 3)                    # [batch]
    nll = -log_likelihood(y, params, 3, impressions=n)     # [batch]
"""

from __future__ import annotations

import math
import numbers

import tensorflow as tf
import tensorflow_probability as tfp

from tfddn.distributions._constants import MEAN_EPSILON, MIN_STDDEV

tfd = tfp.distributions

__all__ = [
    "MEAN_EPSILON",
    "MIN_STDDEV",
    "component_stddevs",
    "log_likelihood",
    "measurement_stddev",
    "measurement_variance",
    "mixture",
    "mixture_mean",
    "mixture_stddev",
    "split_params",
]


_LOG_2PI = math.log(2.0 * math.pi)


def split_params(params, num_components):
    """Splits packed mixture parameters into `(logits, means, stddevs)`.

    Args:
        params: float tensor `[..., 3K]`, `concat(logits, means, stddevs)`.
        num_components: `K`, the number of mixture components.

    Returns:
        Three tensors of shape `[..., K]`: unnormalised log-weights, component means and
        component standard deviations (not floored; see `MIN_STDDEV`).
    """
    k = _check_num_components(num_components)
    params = tf.convert_to_tensor(params)
    size = params.shape[-1]
    if size is not None and size != 3 * k:
        raise ValueError(
            f"Expected packed params with last dimension 3 * num_components = {3 * k}. "
            f"Received: params.shape={params.shape}, num_components={num_components}"
        )
    return params[..., :k], params[..., k:2 * k], params[..., 2 * k:3 * k]


def measurement_variance(mean, impressions):
    """Variance of the observed CTR of `n` Bernoulli trials with rate `mean`.

    The Gaussian approximation of binomial noise, `s_e^2 = mu (1 - mu) / n`
    (Zeldes et al. 2018, Sec. 3), with `mu` clipped into `[eps, 1 - eps]` and `n`
    floored at 1 so that it is positive and finite for every input.

    Args:
        mean: float tensor, the CTR `mu`.
        impressions: tensor broadcastable to `mean` (a trailing axis of size 1 is
            dropped), the number of impressions `n`.

    Returns:
        A tensor shaped like `mean`.
    """
    mean = tf.convert_to_tensor(mean)
    mu = tf.clip_by_value(mean, MEAN_EPSILON, 1.0 - MEAN_EPSILON)
    # 1 - mu clipped on its own: in float32, 1 - (1 - eps) is not eps.
    one_minus_mu = tf.clip_by_value(1.0 - mean, MEAN_EPSILON, 1.0 - MEAN_EPSILON)
    n = tf.maximum(_like(impressions, mean), 1.0)
    return mu * one_minus_mu / n


def mixture_mean(params, num_components):
    """Mean of the mixture, `sum_k a_k m_k`; shape `[...]` for params `[..., 3K]`."""
    logits, means, _ = split_params(params, num_components)
    return tf.reduce_sum(tf.nn.softmax(logits, axis=-1) * means, axis=-1)


def mixture_stddev(params, num_components):
    """Standard deviation of the mixture: the *data* uncertainty `s_d`.

    Closed form `sqrt(sum_k a_k (s_k^2 + m_k^2) - mean^2)`, evaluated as the
    equivalent `sqrt(sum_k a_k (s_k^2 + (m_k - mean)^2))`, a sum of non-negative
    terms, so there is no cancellation in float32.

    Args:
        params: packed parameters `[..., 3K]`.
        num_components: `K`.

    Returns:
        A tensor of shape `[...]`, at least `MIN_STDDEV`.
    """
    logits, means, stddevs = split_params(params, num_components)
    weights = tf.nn.softmax(logits, axis=-1)
    mean = tf.reduce_sum(weights * means, axis=-1, keepdims=True)
    variance = tf.reduce_sum(
        weights * (_component_variance(stddevs) + tf.square(means - mean)), axis=-1)
    return tf.sqrt(tf.maximum(variance, MIN_STDDEV**2))


def component_stddevs(params, num_components):
    """`[..., K]` component stddevs, floored at `MIN_STDDEV`."""
    return tf.sqrt(_component_variance(split_params(params, num_components)[2]))


def measurement_stddev(params, num_components, impressions):
    """Measurement uncertainty `s_e = sqrt(mu (1 - mu) / n)`, `mu` the mixture mean."""
    return tf.sqrt(measurement_variance(mixture_mean(params, num_components), impressions))


def mixture(params, num_components, impressions=None):
    """The mixture as a `tfp.distributions.MixtureSameFamily` of Normals.

    Without `impressions` this is the MDN's `p(y* | x)` over the true CTR. With them,
    each component is widened by the measurement noise, `s_k^2 + s_e^2`: the DDN's
    `p(y | x, n)` over the observed CTR (Zeldes et al. 2018, Sec. 3). `s_e^2` is
    computed from the mixture mean under `tf.stop_gradient`: the plug-in (quasi-
    likelihood) estimator, which keeps the fitted mean unbiased; letting the gradient
    through `mu` pulls it towards 0, since a smaller `mu (1 - mu)` shrinks every
    variance.

    Args:
        params: packed parameters `[..., 3K]`.
        num_components: `K`.
        impressions: optional `n`, broadcastable to `params.shape[:-1]`.

    Returns:
        A distribution with batch shape `params.shape[:-1]` and scalar events.
    """
    logits, means, _ = split_params(params, num_components)
    variance = _total_variance(params, num_components, impressions)
    return tfd.MixtureSameFamily(
        mixture_distribution=tfd.Categorical(logits=logits),
        components_distribution=tfd.Normal(loc=means, scale=tf.sqrt(variance)),
    )


def log_likelihood(y, params, num_components, impressions=None):
    """Log-density of the observed CTR under the (convolved) mixture.

    `log sum_k a_k N(y; m_k, v_k)` with `v_k = s_k^2` (MDN) or `s_k^2 + s_e^2` (DDN,
    when `impressions` is given), computed as `logsumexp(log_softmax(logits) +
    log N_k)` on variances floored at `MIN_STDDEV^2`. The value is exactly the
    convolved mixture's log-density; its gradient treats `s_e^2` as fixed at the current
    mixture mean (see `mixture`).

    Args:
        y: CTR, shape `[...]` or `[..., 1]` matching `params.shape[:-1]`.
        params: packed parameters `[..., 3K]`.
        num_components: `K`.
        impressions: optional `n`, shaped like `y`.

    Returns:
        A tensor of shape `params.shape[:-1]`.
    """
    logits, means, _ = split_params(params, num_components)
    variance = _total_variance(params, num_components, impressions)
    y = _like(y, means[..., 0])[..., tf.newaxis]
    component_log_prob = -0.5 * (_LOG_2PI + tf.math.log(variance)
                                 + tf.square(y - means) / variance)
    return tf.reduce_logsumexp(tf.nn.log_softmax(logits, axis=-1) + component_log_prob,
                               axis=-1)


def _total_variance(params, num_components, impressions):
    """Per-component variance `[..., K]`, plus `s_e^2` when `impressions` is given."""
    _, _, stddevs = split_params(params, num_components)
    variance = _component_variance(stddevs)
    if impressions is not None:
        # s_e^2 is a plug-in at the current mixture mean (quasi-likelihood): no gradient
        # flows through mu here, else -log(variance) rewards pulling mu towards 0 and the
        # fitted CTR is biased low on rows with few impressions.
        mean = tf.stop_gradient(mixture_mean(params, num_components))
        noise = measurement_variance(mean, impressions)
        variance = variance + noise[..., tf.newaxis]
    return tf.maximum(variance, MIN_STDDEV**2)


def _component_variance(stddevs):
    return tf.square(tf.maximum(stddevs, MIN_STDDEV))


def _like(value, reference):
    """`value` cast to `reference`'s dtype, a trailing size-1 axis dropped if extra."""
    value = tf.cast(tf.convert_to_tensor(value), reference.dtype)
    if (value.shape.rank is not None and reference.shape.rank is not None
            and value.shape.rank == reference.shape.rank + 1 and value.shape[-1] == 1):
        value = tf.squeeze(value, axis=-1)
    return value


def _check_num_components(num_components):
    if isinstance(num_components, bool) or not isinstance(num_components, numbers.Integral) \
            or num_components < 1:
        raise ValueError(
            "`num_components` must be a positive integer. "
            f"Received: num_components={num_components!r}"
        )
    return int(num_components)
