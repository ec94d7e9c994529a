"""All mixture maths of tfddn, for both families, in TF and numpy (one place).

- `gaussian`: the paper's Gaussian mixtures (MDN) and their convolution with the Gaussian
  approximation of binomial measurement noise (DDN; Zeldes et al. 2018, Sec. 3, Eq. 3).
- `beta`: Beta mixtures with the exact Binomial measurement model (BBDDN): the row
  likelihood is a mixture of Beta-Binomials.
- `arrays`: `Mixture`, the numpy/scipy side of both (moments, CDFs, quantiles, exact
  count likelihoods, moment-matched conversion, sampling) for evaluation, policies,
  candidation and reports.

Every head emits packed `concat(logits, means, scales) [..., 3K]`; `scales` are stddevs
for `"gaussian"` and concentrations for `"beta"`. The TF functions below take the family
as an argument (default `"gaussian"`, the paper's) so that callers dispatch in one place.

Example:
    >>> mean = mixture_mean(params, 3, family="beta")
    >>> data_sd = mixture_stddev(params, 3, family="beta")
    >>> Mixture.from_params(params.numpy(), 3, "beta").count_log_prob(clicks, n)
"""

from __future__ import annotations

import importlib

from tfddn.distributions._constants import MEAN_EPSILON, MIN_PARAMETER, MIN_STDDEV
from tfddn.distributions.arrays import (EXACT_MAX_IMPRESSIONS, FAMILIES, Mixture,
                                        point_count_log_prob)

__all__ = [
    "EXACT_MAX_IMPRESSIONS",
    "FAMILIES",
    "MEAN_EPSILON",
    "MIN_PARAMETER",
    "MIN_STDDEV",
    "Mixture",
    "beta_binomial_log_likelihood",
    "component_stddevs",
    "log_likelihood",
    "measurement_stddev",
    "measurement_variance",
    "mixture",
    "mixture_mean",
    "mixture_stddev",
    "point_count_log_prob",
    "split_params",
]

# The TF side is imported on first use, so numpy-only users (policies, reports) do not
# pay for TensorFlow.
_TF_NAMES = {"log_likelihood": "gaussian", "measurement_variance": "gaussian",
             "split_params": "gaussian", "beta_binomial_log_likelihood": "beta"}


def __getattr__(name):
    if name in ("gaussian", "beta"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in _TF_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_TF_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _family(family: str):
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}. Received: family={family!r}")
    return importlib.import_module(f"{__name__}.{family}")


def mixture_mean(params, num_components, family: str = "gaussian"):
    """Mean of the mixture, `sum_k a_k m_k`; shape `[...]` for params `[..., 3K]`."""
    return _family(family).mixture_mean(params, num_components)


def mixture_stddev(params, num_components, family: str = "gaussian"):
    """Stddev of the mixture over the true CTR: the *data* uncertainty `s_d`."""
    return _family(family).mixture_stddev(params, num_components)


def component_stddevs(params, num_components, family: str = "gaussian"):
    """`[..., K]` stddev of every component (Gaussian: floored scales; Beta: from kappa)."""
    return _family(family).component_stddevs(params, num_components)


def measurement_stddev(params, num_components, impressions, family: str = "gaussian"):
    """Measurement uncertainty `s_e = sqrt(mu (1 - mu) / n)`, `mu` the mixture mean."""
    mean = mixture_mean(params, num_components, family)
    return _family("gaussian").measurement_variance(mean, impressions) ** 0.5


def mixture(params, num_components, impressions=None, family: str = "gaussian"):
    """The `tfp.distributions.MixtureSameFamily`: Gaussian (DDN-convolved with
    `impressions`) or Beta (a Beta-Binomial mixture over clicks with `impressions`)."""
    return _family(family).mixture(params, num_components, impressions=impressions)
