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

from tfddn.distributions._constants import (MAX_CONCENTRATION, MEAN_EPSILON, MIN_PARAMETER,
                                            MIN_STDDEV)
from tfddn.distributions.gaussian import _like, split_params

tfd = tfp.distributions
_BISECTIONS = 60  # halvings of [0, 1]: below float64 resolution near any CTR

__all__ = ["MEAN_EPSILON", "MIN_PARAMETER", "beta_binomial_log_likelihood",
           "beta_parameters", "component_stddevs", "matched_beta", "mixture", "mixture_mean",
           "collapsed_quantile", "mixture_moments", "mixture_stddev", "posterior", "sample"]


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


# The posterior of a Beta mixture given counts (issue #11): the TF twin of
# `tfddn.distributions.arrays.Mixture` (`to_beta`, `posterior`, `collapse`, `sample`), for
# the `posterior` serving signature. Everything is float64.


def matched_beta(means, variances):
    """`(alpha, beta)` of the Beta with each mean (clipped into (0, 1)) and variance (capped
    below `m (1 - m)`): `Mixture.to_beta` for a Gaussian component."""
    m = tf.clip_by_value(means, MEAN_EPSILON, 1.0 - MEAN_EPSILON)
    bound = m * (1.0 - m)
    variance = tf.clip_by_value(variances, bound / (MAX_CONCENTRATION + 1.0),
                                bound * (1.0 - 1e-9))
    kappa = tf.clip_by_value(bound / variance - 1.0, MIN_PARAMETER, MAX_CONCENTRATION)
    return beta_parameters(m, kappa)


def posterior(weights, alpha, beta, clicks, impressions):
    """`(weights, alpha, beta)` `[..., K]` after `clicks` of `impressions` (`[...]`): each
    component `Beta(alpha + c, beta + n - c)`, its weight times its Beta-Binomial evidence
    (the binomial coefficient, the same for every k, cancels)."""
    n = tf.maximum(impressions, 0.0)[..., tf.newaxis]
    c = tf.clip_by_value(clicks[..., tf.newaxis], 0.0, n)
    lgamma = tf.math.lgamma
    log_evidence = (lgamma(alpha + c) - lgamma(alpha) + lgamma(beta + n - c) - lgamma(beta)
                    + lgamma(alpha + beta) - lgamma(alpha + beta + n))
    return tf.nn.softmax(tf.math.log(weights) + log_evidence, axis=-1), alpha + c, beta + n - c


def mixture_moments(weights, alpha, beta):
    """`(mean, stddev)` `[...]` of a Beta mixture given by `(weights, alpha, beta)`."""
    kappa = alpha + beta
    means = alpha / kappa
    m = tf.clip_by_value(means, MEAN_EPSILON, 1.0 - MEAN_EPSILON)
    mean = tf.reduce_sum(weights * means, axis=-1)
    variance = tf.reduce_sum(weights * (m * (1.0 - m) / (kappa + 1.0)
                                        + tf.square(means - mean[..., tf.newaxis])), axis=-1)
    return mean, tf.sqrt(tf.maximum(variance, 0.0))


def collapsed_quantile(mean, stddev, level):
    """The `level` quantile of the Beta with this mean and stddev (`Mixture.collapse`)."""
    a, b = matched_beta(mean, tf.square(tf.maximum(stddev, MIN_STDDEV)))
    level = tf.cast(level, a.dtype)
    # Bisection on the regularised incomplete Beta function: `tfp.math.betaincinv` (TFP
    # 0.25) is wrong for some shapes below 1, e.g. (0.3, 10, 0.5): 0.00356 vs 0.00755.
    lo, hi = tf.zeros_like(a), tf.ones_like(a)
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        below = tf.math.betainc(a, b, mid) < level
        lo, hi = tf.where(below, mid, lo), tf.where(below, hi, mid)
    return 0.5 * (lo + hi)


def sample(weights, alpha, beta):
    """One draw `[...]` per row: a component by its weight, then its Beta (two Gammas)."""
    flat = tf.reshape(tf.math.log(weights), [-1, tf.shape(weights)[-1]])
    k = tf.reshape(tf.random.categorical(flat, 1, dtype=tf.int32), tf.shape(weights)[:-1])
    a, b = (tf.gather(v, k, batch_dims=len(v.shape) - 1) for v in (alpha, beta))
    x, y = tf.random.gamma([], a, dtype=a.dtype), tf.random.gamma([], b, dtype=b.dtype)
    return x / (x + y)
