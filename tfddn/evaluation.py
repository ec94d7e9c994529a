"""Offline evaluation of REG / MDN / DDN / BBDDN predictions: calibration, NLL, PIT, coverage.

The paper's offline metric is the MSE of the predicted mean against the empirical CTR
`y = clicks / n` (Zeldes et al., Table 1). Beyond it, every kind is scored on:

- **Calibration of the mean.** `predicted_clicks_ratio = sum(mean * n) / sum(clicks)` and
  the impression-weighted expected calibration error `ece` over CTR-quantile bins
  (`reliability_bins`, also drawn as the reliability diagram). `calibration_warnings`
  turns both (and `mass_below_zero`) into one-line messages.
- **Counts under the exact Binomial measurement model** (`nll`): `-log P(clicks | x, n)`,
  a Beta-Binomial mixture for BBDDN, Gaussian components moment-matched to Betas for MDN /
  DDN and `Binomial(n, mean)` for REG (`tfddn.distributions.Mixture.count_log_prob`), so
  all kinds are on one scale.

A density model is also scored on its predictive distribution. Gaussian kinds (MDN, DDN)
on the observed CTR, the data mixture convolved with the Gaussian approximation of the
binomial noise (Sec. 3.2, Eq. 3; MDN gets the same convolution so both are compared on
the same scale):

    p(y | x, n) = sum_k a_k N(y; m_k, s_k^2 + s_e^2),   s_e^2 = mu (1 - mu) / n,

giving `nll_density` (the pre-issue-#10 `nll`), the PIT `F(y)`, interval coverage and
width and `mass_below_zero` (mass of the true CTR below 0). The Beta kind (BBDDN) is
scored on the clicks themselves: PIT `F(clicks)` of the Beta-Binomial mixture, count
intervals. With the generator's ground truth we also report the MSE against the true mean
CTR and how well the predicted data uncertainty tracks the true one.

All maths of the mixtures is `tfddn.distributions.Mixture`; this module only scores.

References:
    Zeldes et al., "Deep density networks and uncertainty in recommender systems",
    arXiv:1711.02487, Sec. 3.2 and Table 1. Czado, Gneiting and Held, "Predictive model
    assessment for count data", Biometrics 65 (2009): the randomised PIT. Guo et al., "On
    calibration of modern neural networks", ICML 2017: expected calibration error.

Example:
    >>> preds = Predictions.from_mixture(clicks, n, Mixture.from_params(out, 3, "beta"))
    >>> metrics = evaluate(preds)
    >>> calibration_warnings(metrics)
    []
    >>> tfddn.report.write_report(metrics, preds, "runs/bbddn/eval", title="BBDDN")
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
from scipy import special, stats

from tfddn.distributions import FAMILIES, Mixture, point_count_log_prob

__all__ = ["PER_ROW_KEYS", "Predictions", "ReliabilityBins", "calibration_warnings",
           "evaluate", "reliability_bins"]

WEIGHT_SUM_TOLERANCE = 1e-4
PER_ROW_KEYS = ("pit", "pit_randomised")   # per-row arrays in `evaluate`'s result
CLICKS_RATIO_RANGE = (0.9, 1.1)             # `calibration_warnings` thresholds
MAX_MASS_BELOW_ZERO = 0.05
_MIXTURE = ("weights", "means", "scales")


@dataclasses.dataclass(frozen=True)
class Predictions:
    """A model's predictions over the eval rows, with the labels and optional truth.

    Attributes:
        clicks: [N] clicks per row, `0 <= clicks <= impressions`.
        impressions: [N] impressions `n >= 1`.
        mean: [N] the predicted mean CTR (every model kind).
        weights, means, scales: [N, K] the data mixture `p(y*|x)` of a density model, as in
            `tfddn.distributions.Mixture`: `scales` are stddevs (`family="gaussian"`) or
            concentrations (`"beta"`). All three `None` for REG.
        true_mean, true_stddev: [N] the generator's true mean CTR and data stddev.
        family: the mixture family, one of `tfddn.distributions.FAMILIES`.

    Arrays are converted to float64 and validated; a `ValueError` names the bad array.
    """

    clicks: np.ndarray
    impressions: np.ndarray
    mean: np.ndarray
    weights: np.ndarray | None = None
    means: np.ndarray | None = None
    scales: np.ndarray | None = None
    true_mean: np.ndarray | None = None
    true_stddev: np.ndarray | None = None
    family: str = "gaussian"

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}. Received: family={self.family!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "family" and value is not None:
                value = np.asarray(value, dtype=np.float64)
                if not np.all(np.isfinite(value)):
                    raise ValueError(f"`{field.name}` has {int((~np.isfinite(value)).sum())} "
                                     f"non-finite values (shape {value.shape}).")
                object.__setattr__(self, field.name, value)
        self._validate_rows()
        self._validate_mixture()

    @classmethod
    def from_mixture(cls, clicks, impressions, mixture: Mixture, **truth) -> "Predictions":
        """Predictions of a density model; `mean` is the mixture mean. `truth`: `true_*`."""
        return cls(clicks, impressions, mixture.mean(), mixture.weights, mixture.means,
                   mixture.scales, family=mixture.family, **truth)

    def _validate_rows(self) -> None:
        if self.clicks.ndim != 1 or len(self.clicks) == 0:
            raise ValueError(f"`clicks` must be a non-empty 1-D array; got shape "
                             f"{self.clicks.shape}.")
        rows = (len(self.clicks),)
        for name in ("impressions", "mean", "true_mean", "true_stddev"):
            value = getattr(self, name)
            if value is not None and value.shape != rows:
                raise ValueError(f"`{name}` must have shape {rows} like `clicks`; got "
                                 f"shape {value.shape}.")
        if np.any(self.impressions < 1):
            raise ValueError(f"`impressions` must be >= 1; got min {self.impressions.min()} "
                             f"(shape {self.impressions.shape}).")
        bad = (self.clicks < 0) | (self.clicks > self.impressions)
        if np.any(bad):
            raise ValueError("`clicks` must satisfy 0 <= clicks <= impressions; "
                             f"{int(bad.sum())} rows do not (shape {self.clicks.shape}).")

    def _validate_mixture(self) -> None:
        given = [name for name in _MIXTURE if getattr(self, name) is not None]
        if given and len(given) != 3:
            raise ValueError(f"A mixture needs `weights`, `means` and `scales`; got "
                             f"{given}, missing {sorted(set(_MIXTURE) - set(given))}.")
        if not given:
            return
        rows = len(self.clicks)
        if self.weights.ndim != 2 or self.weights.shape[0] != rows:
            raise ValueError(f"`weights` must have shape (N, K) with N = {rows}; got "
                             f"shape {self.weights.shape}.")
        for name in ("means", "scales"):
            if getattr(self, name).shape != self.weights.shape:
                raise ValueError(f"`{name}` must have shape {self.weights.shape} like "
                                 f"`weights`; got shape {getattr(self, name).shape}.")
        if np.any(self.weights < 0):
            raise ValueError(f"`weights` must be >= 0; got min {self.weights.min()}.")
        worst = float(np.max(np.abs(self.weights.sum(axis=1) - 1.0)))
        if worst > WEIGHT_SUM_TOLERANCE:
            raise ValueError(f"`weights` rows must sum to 1 (tolerance "
                             f"{WEIGHT_SUM_TOLERANCE}); worst |sum - 1| = {worst:.3g} "
                             f"(shape {self.weights.shape}).")
        if np.any(self.scales < 0):
            raise ValueError(f"`scales` must be >= 0; got min {self.scales.min()}.")
        if self.family == "beta" and (np.any(self.means < 0) or np.any(self.means > 1)):
            raise ValueError("`means` of a Beta mixture must lie in [0, 1]; got range "
                             f"[{self.means.min():.3g}, {self.means.max():.3g}].")

    @property
    def is_density(self) -> bool:
        """True for MDN / DDN / BBDDN predictions (a mixture is given)."""
        return self.weights is not None

    @property
    def mixture(self) -> Mixture | None:
        """The data mixture as a `tfddn.distributions.Mixture` (`None` for REG)."""
        if not self.is_density:
            return None
        return Mixture(self.weights, self.means, self.scales, self.family)

    @property
    def ctr(self) -> np.ndarray:
        """The empirical CTR `y = clicks / impressions`."""
        return self.clicks / self.impressions


@dataclasses.dataclass(frozen=True, eq=False)
class ReliabilityBins:
    """Per-bin calibration of the mean, bins ordered by predicted CTR (`reliability_bins`).

    Attributes:
        predicted: [B] impression-weighted mean predicted CTR, `sum(mean * n) / sum(n)`.
        observed: [B] observed CTR `sum(clicks) / sum(n)`.
        impressions: [B] impressions per bin.
        stderr: [B] binomial standard error of `observed`, `sqrt(p (1 - p) / impressions)`.
        true_ctr: [B] impression-weighted true mean CTR, or `None` without ground truth.
    """

    predicted: np.ndarray
    observed: np.ndarray
    impressions: np.ndarray
    stderr: np.ndarray
    true_ctr: np.ndarray | None = None

    @property
    def ece(self) -> float:
        """`sum_b (n_b / n) |predicted_b - observed_b|`: expected calibration error."""
        share = self.impressions / self.impressions.sum()
        return float(np.sum(share * np.abs(self.predicted - self.observed)))

    @property
    def clicks_ratio(self) -> float:
        """Predicted / observed clicks over all bins (`predicted_clicks_ratio`)."""
        clicks = self.observed @ self.impressions
        return float(self.predicted @ self.impressions / clicks) if clicks > 0 else math.nan


def reliability_bins(mean, clicks, impressions, bins: int = 10,
                     true_mean=None) -> ReliabilityBins:
    """Rows binned by impression-weighted quantiles of the predicted mean CTR.

    Bin edges are the predicted CTRs at which `1/bins, 2/bins, ...` of the impressions
    are reached (rows sorted by prediction), so bins hold about equal impressions. Rows
    with equal predictions always share a bin, so ties can leave fewer than `bins`
    (empty bins are dropped).

    Args:
        mean, clicks, impressions: [N] per row.
        bins: number of quantile bins, >= 1.
        true_mean: optional [N] true mean CTR, averaged per bin like the prediction.

    Returns:
        A `ReliabilityBins`; its `ece` is the metric of `evaluate`.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1. Received: bins={bins}")
    mean, clicks, n = (np.asarray(v, dtype=np.float64) for v in (mean, clicks, impressions))
    order = np.argsort(mean, kind="stable")
    share = np.cumsum(n[order]) / n.sum()
    cut = np.minimum(np.searchsorted(share, np.arange(1, bins) / bins), len(mean) - 1)
    index = np.searchsorted(mean[order][cut], mean, side="left")   # edges < mean

    def per_bin(values):
        return np.bincount(index, values, minlength=bins)

    weight = per_bin(n)
    used = weight > 0
    weight = weight[used]
    observed = per_bin(clicks)[used] / weight
    true_ctr = None if true_mean is None else per_bin(np.asarray(true_mean) * n)[used] / weight
    return ReliabilityBins(predicted=per_bin(mean * n)[used] / weight, observed=observed,
                           impressions=weight,
                           stderr=np.sqrt(observed * (1.0 - observed) / weight),
                           true_ctr=true_ctr)


def _count_scores(mixture: Mixture, clicks, n) -> np.ndarray:
    """[4, N]: count CDF at `clicks - 1` and `clicks`, 5% and 95% count quantiles / n."""
    return np.stack([mixture.count_cdf(clicks - 1, n), mixture.count_cdf(clicks, n),
                     mixture.count_quantile(0.05, n) / n, mixture.count_quantile(0.95, n) / n])


def _beta_pit(mixture: Mixture, p: Predictions):
    """Plain and bracketing PIT of the clicks, and the 90% count interval width of y."""
    c, n = p.clicks, p.impressions
    lower, pit, low, high = _count_scores(mixture, c, n)
    return pit, lower, pit, high - low


def _gaussian_pit(mixture: Mixture, p: Predictions):
    """PIT `F(y)` of the DDN's observed CTR, continuity-corrected count brackets, width."""
    c, n = p.clicks, p.impressions
    lower = np.where(c <= 0, 0.0, mixture.cdf((c - 0.5) / n, n))
    upper = np.where(c >= n, 1.0, mixture.cdf((c + 0.5) / n, n))
    low, high = mixture.quantile(np.array([[0.05], [0.95]]), n)
    return mixture.cdf(p.ctr, n), lower, upper, high - low


def _ctr_log_density(mixture: Mixture, y, n) -> np.ndarray:
    """`log p(y | x, n)` of a Gaussian mixture's observed CTR (Sec. 3.2, Eq. 3)."""
    scales = np.hypot(mixture.component_stddevs(), mixture.measurement_stddev(n)[:, None])
    with np.errstate(divide="ignore"):
        log_weights = np.log(mixture.weights)
    log_pdf = stats.norm.logpdf(np.asarray(y)[:, None], loc=mixture.means, scale=scales)
    return special.logsumexp(log_weights + log_pdf, axis=-1)


def _correlations(a, b) -> tuple[float | None, float | None]:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None, None
    return float(np.corrcoef(a, b)[0, 1]), float(stats.spearmanr(a, b).statistic)


def _coverage(pit, low, high) -> float:
    return float(np.mean((pit >= low) & (pit <= high)))


def _count_log_prob(p: Predictions) -> np.ndarray:
    """[N] `log P(clicks | x, n)` under the exact Binomial measurement model (`nll`)."""
    mix = p.mixture
    if mix is None:
        return point_count_log_prob(p.clicks, p.impressions, p.mean)
    return mix.count_log_prob(p.clicks, p.impressions)


def _pit(p: Predictions):
    """[N] each: plain PIT, the bracket of the randomised PIT, 90% interval width."""
    return (_gaussian_pit if p.family == "gaussian" else _beta_pit)(p.mixture, p)


def _mean_metrics(p: Predictions, bins: int) -> dict[str, Any]:
    """Metrics of the mean and the count NLL, for every kind."""
    y, n, mix = p.ctr, p.impressions, p.mixture
    squared_error = (p.mean - y) ** 2
    log_prob = _count_log_prob(p)
    gaussian = mix is not None and p.family == "gaussian"
    return {
        "examples": len(y),
        "impressions": int(round(n.sum())),
        "clicks": int(round(p.clicks.sum())),
        "mse": float(squared_error.mean()),
        "mse_weighted": float(np.sum(n * squared_error) / n.sum()),
        "mse_truth": None if p.true_mean is None
        else float(np.mean((p.mean - p.true_mean) ** 2)),
        "predicted_clicks_ratio": float(p.mean @ n / p.clicks.sum()) if p.clicks.sum() > 0
        else None,
        "truth_clicks_ratio": None if p.true_mean is None
        else float(p.mean @ n / (p.true_mean @ n)),
        "ece": reliability_bins(p.mean, p.clicks, n, bins).ece,
        "nll": float(-log_prob.mean()),
        "nll_density": float(-_ctr_log_density(mix, y, n).mean()) if gaussian else None,
        "mass_below_zero": None if mix is None else float(mix.mass_below_zero().mean()),
    }


def _density_metrics(p: Predictions, seed: int) -> dict[str, Any]:
    """PIT, coverage, interval width and data stddev of a density model."""
    mix = p.mixture
    pit, lower, upper, width = _pit(p)
    pit_randomised = lower + np.random.default_rng(seed).random(len(pit)) * (upper - lower)
    data_stddev = mix.stddev()
    metrics = dict(
        coverage_50=_coverage(pit, 0.25, 0.75),
        coverage_90=_coverage(pit, 0.05, 0.95),
        coverage_50_randomised=_coverage(pit_randomised, 0.25, 0.75),
        coverage_90_randomised=_coverage(pit_randomised, 0.05, 0.95),
        mean_interval_width_90=float(np.mean(width)),
        mean_data_stddev=float(data_stddev.mean()),
        stddev_corr_truth=None, stddev_spearman_truth=None,
        pit=pit, pit_randomised=pit_randomised)
    if p.true_stddev is not None:
        pearson, spearman = _correlations(data_stddev, p.true_stddev)
        metrics.update(stddev_corr_truth=pearson, stddev_spearman_truth=spearman)
    return metrics


def evaluate(predictions: Predictions, *, seed: int = 0, bins: int = 10) -> dict[str, Any]:
    """Computes the offline metrics of one model's predictions (see `_EXPLANATIONS`).

    PIT. Gaussian kinds: `F(y)` of the continuous `p(y | x, n)`; the observed CTR of a row
    with small `n` is discrete, so this plain PIT is not uniform even for a perfect model.
    The randomised PIT draws `u ~ U(F((c - 0.5) / n), F((c + 0.5) / n))` (0 for `c = 0`
    below, 1 for `c = n` above): each count's continuity-corrected probability spread over
    its interval. Beta kind: the plain PIT is the count CDF `F(c)` of the Beta-Binomial
    mixture, the randomised one `u ~ U(F(c - 1), F(c))`, exactly uniform under a correct
    model for any n (Czado et al., 2009). Prefer `coverage_*_randomised` when many rows
    have small n; for large n both agree.

    Args:
        predictions: the model's `Predictions`.
        seed: seed of the randomised PIT.
        bins: CTR-quantile bins of `ece` (`reliability_bins`).

    Returns:
        A dict of JSON-serialisable numbers (`None` where a metric does not apply: density
        metrics for REG, truth metrics without ground truth), plus the per-row numpy arrays
        named in `PER_ROW_KEYS` (`pit`, `pit_randomised`).
    """
    metrics = _mean_metrics(predictions, bins)
    density = ("coverage_50", "coverage_90", "coverage_50_randomised",
               "coverage_90_randomised", "mean_interval_width_90", "mean_data_stddev",
               "stddev_corr_truth", "stddev_spearman_truth", *PER_ROW_KEYS)
    metrics.update(dict.fromkeys(density))
    if predictions.is_density:
        metrics.update(_density_metrics(predictions, seed))
    return metrics


def calibration_warnings(metrics: Mapping[str, Any]) -> list[str]:
    """One-line messages for calibration problems in `evaluate`'s metrics.

    Fires when `predicted_clicks_ratio` is outside `CLICKS_RATIO_RANGE` (the mean CTR is
    off on average; the message says when so few clicks were observed that the deviation
    is within two Poisson standard errors, `2 / sqrt(clicks)`) or `mass_below_zero`
    exceeds `MAX_MASS_BELOW_ZERO` (a Gaussian mixture puts probability on negative CTRs).
    An optional `metrics["model"]` names the kind.

    Returns:
        The messages, empty when the metrics look calibrated or are missing.
    """
    model = f"the {metrics['model'].upper()} model" if metrics.get("model") else "the model"
    messages = []
    ratio = metrics.get("predicted_clicks_ratio")
    low, high = CLICKS_RATIO_RANGE
    if ratio is not None and not low <= ratio <= high:
        clicks = metrics.get("clicks") or 0
        rows = (f"{metrics.get('examples', 0):,} rows ({clicks:,} clicks in "
                f"{metrics.get('impressions', 0):,} impressions)")
        ece = metrics.get("ece")
        ece_text = "" if ece is None else f", ECE {ece:.2g}"
        noise = 2.0 / math.sqrt(clicks) if clicks > 0 else math.inf   # 2 Poisson SEs
        noise_text = (f" (but with {clicks:,} clicks, +-{noise:.0%} is within count noise)"
                      if abs(ratio - 1.0) < noise else "")
        messages.append(
            f"{model} predicts {ratio:.2f}x the observed clicks on {rows}: its mean CTR is "
            f"miscalibrated ({'over' if ratio > 1 else 'under'}-predicts by "
            f"{abs(ratio - 1):.0%}{ece_text}){noise_text}; check that train and eval data "
            "match (regime, sampling) before using its CTRs for ranking or bidding.")
    mass = metrics.get("mass_below_zero")
    if mass is not None and mass > MAX_MASS_BELOW_ZERO:
        messages.append(
            f"{mass:.1%} (>{MAX_MASS_BELOW_ZERO:.0%}) of {model}'s predicted CTR distribution "
            "lies below 0: a Gaussian mixture fits this low CTR badly (intervals and "
            "Thompson samples are distorted); consider --kind bbddn.")
    return messages
