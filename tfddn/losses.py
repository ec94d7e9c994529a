"""Training losses of the three models of Zeldes et al. (2018), Sec. 3.

All losses take the same labels, `y_true = [ctr, impressions, clicks]` of shape
`(batch, 3)` (the empirical CTR `clicks / impressions`, the impressions `n` and the
clicks; `(batch, 2)` without clicks also works), so one dataset feeds every model kind:

- `RegressionLoss` (REG): squared error of the sigmoid point estimate, `(batch, 1)`,
  against the empirical CTR.
- `MDNLoss` (MDN): `-log p(y | x)` under the mixture emitted by
  `tfddn.layers.MixtureDensityHead` (`n` is ignored).
- `DDNLoss` (DDN): `-log p(y | x, n)`, the mixture convolved with the binomial
  measurement noise `mu (1 - mu) / n` (Eq. 3): rows with few impressions have a
  noisy CTR and are explained by `s_e`, so the mixture learns the spread of the
  *true* CTR.
- `BBDDNLoss` (BBDDN, beyond the paper): `-log P(clicks | x, n)` under a Beta mixture
  and the exact Binomial, a mixture of Beta-Binomials (`tfddn.distributions.beta`).

Losses compute in float32 whatever the model's dtype policy (`mixed_float16`
included) and stay finite, with finite gradients, for CTR 0 or 1, `n = 1`,
`n = 10^7` and extreme logits (see `tfddn.distributions.log_likelihood`).

Example:

    model.compile(optimizer="adam", loss=loss_for("ddn", num_components=3))
"""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf

from tfddn import distributions
from tfddn.models.config import MODEL_KINDS

__all__ = ["BBDDNLoss", "DDNLoss", "MDNLoss", "MODEL_KINDS", "RegressionLoss", "loss_for"]



def _labels(y_true):
    """`(ctr, impressions)`, each `(batch,)` float32, from `(batch, 2)` labels."""
    y_true = tf.cast(y_true, tf.float32)
    return y_true[..., 0], y_true[..., 1]


class _MixtureLoss(keras.losses.Loss):
    """Negative log-likelihood of a mixture head's packed params; base of MDN/DDN."""

    _uses_impressions = False

    def __init__(self, num_components, name=None, reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if isinstance(num_components, bool) or not isinstance(num_components, numbers.Integral) \
                or num_components < 1:
            raise ValueError("`num_components` must be a positive integer. "
                             f"Received: num_components={num_components!r}")
        self.num_components = int(num_components)

    def call(self, y_true, y_pred):
        ctr, impressions = _labels(y_true)
        params = tf.cast(y_pred, tf.float32)
        return -distributions.log_likelihood(
            ctr, params, self.num_components,
            impressions=impressions if self._uses_impressions else None)

    def get_config(self):
        return {**super().get_config(), "num_components": self.num_components}


@keras.saving.register_keras_serializable(package="tfddn")
class MDNLoss(_MixtureLoss):
    """Mean of `-log p(y | x)`, `p` the head's Gaussian mixture (MDN, Sec. 3).

    Args:
        num_components: `K` of the `MixtureDensityHead` whose output is `y_pred`.
        name, reduction, dtype: as for `keras.losses.Loss`.

    Call arguments:
        y_true: `(batch, 2)`, `[ctr, impressions]`; impressions are ignored.
        y_pred: `(batch, 3K)` packed mixture parameters.
    """

    def __init__(self, num_components, name="mdn_loss", **kwargs):
        super().__init__(num_components, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="tfddn")
class DDNLoss(_MixtureLoss):
    """Mean of `-log p(y | x, n)`: the mixture convolved with measurement noise (DDN).

    Each component's variance becomes `s_k^2 + mu (1 - mu) / n`, `mu` the mixture
    mean (Zeldes et al. 2018, Sec. 3, Eq. 3). As `n -> inf` this is `MDNLoss`.

    Args:
        num_components: `K` of the `MixtureDensityHead` whose output is `y_pred`.
        name, reduction, dtype: as for `keras.losses.Loss`.

    Call arguments:
        y_true: `(batch, 2)`, `[ctr, impressions]`; impressions are floored at 1.
        y_pred: `(batch, 3K)` packed mixture parameters.
    """

    _uses_impressions = True

    def __init__(self, num_components, name="ddn_loss", **kwargs):
        super().__init__(num_components, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="tfddn")
class BBDDNLoss(_MixtureLoss):
    """Mean of `-log sum_k a_k BetaBinomial(clicks; n, alpha_k, beta_k)` (BBDDN).

    The exact deconvolution of the binomial measurement noise from a Beta mixture over
    the true CTR (`tfddn.distributions.beta`); a probability of a count, so >= 0.

    Args:
        num_components: `K` of the `BetaMixtureHead` whose output is `y_pred`.
        name, reduction, dtype: as for `keras.losses.Loss`.

    Call arguments:
        y_true: `(batch, 3)` `[ctr, impressions, clicks]`, or `(batch, 2)` (clicks are
            then `round(ctr * n)`).
        y_pred: `(batch, 3K)` packed `concat(logits, means, concentrations)`.
    """

    def __init__(self, num_components, name="bbddn_loss", **kwargs):
        super().__init__(num_components, name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        ctr, impressions = y_true[..., 0], y_true[..., 1]
        clicks = y_true[..., 2] if y_true.shape[-1] == 3 else ctr * impressions
        return -distributions.beta_binomial_log_likelihood(
            clicks, impressions, tf.cast(y_pred, tf.float32), self.num_components)


@keras.saving.register_keras_serializable(package="tfddn")
class RegressionLoss(keras.losses.Loss):
    """Mean squared error of the REG point estimate against the empirical CTR.

    Args:
        name, reduction, dtype: as for `keras.losses.Loss`.

    Call arguments:
        y_true: `(batch, 2)`, `[ctr, impressions]`; impressions are ignored.
        y_pred: `(batch, 1)` (or `(batch,)`) CTR estimate in (0, 1).
    """

    def __init__(self, name="regression_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        ctr, _ = _labels(y_true)
        y_pred = tf.cast(y_pred, tf.float32)
        if y_pred.shape.rank is not None and y_pred.shape.rank == ctr.shape.rank + 1:
            y_pred = tf.squeeze(y_pred, axis=-1)
        return tf.square(y_pred - ctr)


def loss_for(model_kind, num_components):
    """The training loss of a model kind.

    Args:
        model_kind: `"reg"`, `"mdn"`, `"ddn"` or `"bbddn"`.
        num_components: `K` of the mixture head (ignored for `"reg"`).

    Returns:
        A `RegressionLoss`, `MDNLoss`, `DDNLoss` or `BBDDNLoss`.
    """
    if model_kind == "reg":
        return RegressionLoss()
    if model_kind == "mdn":
        return MDNLoss(num_components)
    if model_kind == "ddn":
        return DDNLoss(num_components)
    if model_kind == "bbddn":
        return BBDDNLoss(num_components)
    raise ValueError(f"`model_kind` must be one of {MODEL_KINDS}. "
                     f"Received: model_kind={model_kind!r}")
