"""Beta mixtures over CTR with the exact Binomial measurement model (BBDDN), in TF.

A Beta mixture head predicts, for every example, the packed parameters

    params = concat(logits [K], means [K], concentrations [K])      shape [batch, 3K]

of `p(y* | x) = sum_k a_k Beta(y*; m_k kappa_k, (1 - m_k) kappa_k)` over the *true* CTR,
`a = softmax(logits)`, `m_k` in (0, 1) the component means and `kappa_k = alpha_k + beta_k`
their concentrations. Observing `clicks` of `n` impressions is a Binomial experiment;
integrated over the Beta, each component gives a Beta-Binomial, so a row's likelihood is

    P(clicks | x, n) = sum_k a_k BetaBinomial(clicks; n, alpha_k, beta_k)
                     = sum_k a_k C(n, clicks) B(clicks + alpha_k, n - clicks + beta_k)
                                               / B(alpha_k, beta_k).

This is the DDN's deconvolution (Zeldes et al. 2018, Sec. 3, Eq. 3) without the
Gaussian approximation of the binomial noise: exact for every n (n = 1 included, where
an observation is 0 or 1), support in [0, 1], and as `n -> inf` it tends to the data
distribution itself. It is a probability of a count, so the negative log-likelihood is
never below 0 and has no degenerate optimum (a Gaussian density can grow without bound).

The likelihood is computed in float64 from `lgamma` (the `lbeta` form): `lgamma(n)` is
~1.5e8 at n = 10^7, where float32 would lose every digit of the difference.

Example:

    params = head(hidden)                                        # [batch, 3K]
    nll = -beta_binomial_log_likelihood(clicks, n, params, 3)    # [batch]
    ctr, data_sd = mixture_mean(params, 3), mixture_stddev(params, 3)
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from tfddn.distributions._constants import MEAN_EPSILON, MIN_PARAMETER
from tfddn.distributions.gaussian import _like, split_params

tfd = tfp.distributions

__all__ = ["MEAN_EPSILON", "MIN_PARAMETER", "beta_binomial_log_likelihood",
           "beta_parameters", "component_stddevs", "mixture", "mixture_mean",
           "mixture_stddev"]


def beta_parameters(means, concentrations):
    """`(alpha, beta) = (m kappa, (1 - m) kappa)`, both floored at `MIN_PARAMETER`."""
    m = tf.clip_by_value(means, MEAN_EPSILON, 1.0 - MEAN_EPSILON)
    one_minus_m = tf.clip_by_value(1.0 - means, MEAN_EPSILON, 1.0 - MEAN_EPSILON)
    floor = tf.cast(MIN_PARAMETER, means.dtype)
    return tf.maximum(m * concentrations, floor), tf.maximum(one_minus_m * concentrations, floor)


def component_stddevs(params, num_components):
    """`[..., K]` stddev of each Beta, `sqrt(m (1 - m) / (kappa + 1))`."""
    _, means, concentrations = split_params(params, num_components)
    m = tf.clip_by_value(means, MEAN_EPSILON, 1.0 - MEAN_EPSILON)
    return tf.sqrt(m * (1.0 - m) / (concentrations + 1.0))


def mixture_mean(params, num_components):
    """Mean of the Beta mixture, `sum_k a_k m_k`; shape `[...]`."""
    logits, means, _ = split_params(params, num_components)
    return tf.reduce_sum(tf.nn.softmax(logits, axis=-1) * means, axis=-1)


def mixture_stddev(params, num_components):
    """Stddev of the Beta mixture (the data uncertainty `s_d`); shape `[...]`.

    `sqrt(sum_k a_k (v_k + (m_k - mean)^2))`, `v_k = m_k (1 - m_k) / (kappa_k + 1)`.
    """
    logits, means, _ = split_params(params, num_components)
    weights = tf.nn.softmax(logits, axis=-1)
    mean = tf.reduce_sum(weights * means, axis=-1, keepdims=True)
    variance = tf.reduce_sum(
        weights * (tf.square(component_stddevs(params, num_components))
                   + tf.square(means - mean)), axis=-1)
    return tf.sqrt(tf.maximum(variance, 0.0))


def mixture(params, num_components, impressions=None):
    """The Beta mixture as a `tfp.distributions.MixtureSameFamily`.

    Without `impressions`: the data distribution `p(y* | x)` of the true CTR (Betas).
    With them: the distribution of the *clicks* among `n` impressions, a mixture of
    `BetaBinomial(n, alpha_k, beta_k)` (note: over counts, not over `clicks / n`).
    """
    logits, means, concentrations = split_params(params, num_components)
    alpha, beta = beta_parameters(means, concentrations)
    if impressions is None:
        components = tfd.Beta(concentration1=alpha, concentration0=beta)
    else:
        n = _like(impressions, means[..., 0])[..., tf.newaxis]
        components = tfd.BetaBinomial(total_count=n, concentration1=alpha, concentration0=beta)
    return tfd.MixtureSameFamily(mixture_distribution=tfd.Categorical(logits=logits),
                                 components_distribution=components)


def beta_binomial_log_likelihood(clicks, impressions, params, num_components):
    """`log sum_k a_k BetaBinomial(clicks; n, alpha_k, beta_k)` (module docstring).

    Computed in float64 (lgamma / lbeta form, log-softmax weights, logsumexp) and
    returned in `params`' dtype; finite with finite gradients for n = 1, n = 10^7,
    clicks = 0 and clicks = n. Clicks are clipped into [0, n], n floored at 0.

    Args:
        clicks: `[...]` (or `[..., 1]`) observed clicks.
        impressions: `[...]` (or `[..., 1]`) impressions `n`.
        params: packed `[..., 3K]` (logits, means, concentrations).
        num_components: `K`.

    Returns:
        A tensor of shape `params.shape[:-1]`.
    """
    params = tf.convert_to_tensor(params)
    logits, means, concentrations = (tf.cast(t, tf.float64)
                                     for t in split_params(params, num_components))
    n = tf.maximum(_like(impressions, means[..., 0]), 0.0)[..., tf.newaxis]
    c = tf.clip_by_value(tf.round(_like(clicks, means[..., 0]))[..., tf.newaxis], 0.0, n)
    alpha, beta = beta_parameters(means, concentrations)
    lgamma = tf.math.lgamma
    log_choose = lgamma(n + 1.0) - lgamma(c + 1.0) - lgamma(n - c + 1.0)
    log_pmf = (log_choose + lgamma(c + alpha) + lgamma(n - c + beta) - lgamma(n + alpha + beta)
               - lgamma(alpha) - lgamma(beta) + lgamma(alpha + beta))
    out = tf.reduce_logsumexp(tf.nn.log_softmax(logits, axis=-1) + log_pmf, axis=-1)
    return tf.cast(out, params.dtype)
