"""Offline evaluation of REG / MDN / DDN predictions: MSE, NLL, PIT and interval coverage.

The paper's offline metric is the MSE of the predicted mean against the empirical CTR
`y = clicks / n` (Zeldes et al., Table 1). A density model predicts more than a mean, so
we also score the whole predictive distribution of the *observed* CTR:

    p(y | x, n) = sum_k a_k N(y; m_k, s_k^2 + s_e^2),   s_e^2 = mu (1 - mu) / n,

the data mixture convolved with the Gaussian approximation of the binomial measurement
noise of a row with `n` impressions (Sec. 3.2, DDN; `mu` the mixture mean clipped into
(0, 1)). MDN predictions get the same convolution here, so MDN and DDN are compared on
the same observed-y scale. From it: the mean negative log-likelihood (`nll`), the PIT
`F(y)` (uniform for a calibrated model), the coverage of central 50% / 90% predictive
intervals and the mean width of the 90% interval. With the generator's ground truth we
also report the MSE against the true mean CTR and how well the predicted data
uncertainty tracks the true one (Pearson and Spearman correlation).

All functions are numpy / scipy; the caller runs the model and passes arrays.

References:
    Zeldes et al., "Deep density networks and uncertainty in recommender systems",
    arXiv:1711.02487, Sec. 3.2 and Table 1. Czado, Gneiting and Held, "Predictive model
    assessment for count data", Biometrics 65 (2009): the randomised PIT.

Example:
    >>> preds = Predictions(clicks=c, impressions=n, mean=mu, weights=a, means=m, stddevs=s)
    >>> metrics = evaluate(preds)
    >>> write_report(metrics, preds, "runs/ddn/eval", title="DDN")
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import numpy as np
from scipy import special, stats

__all__ = ["PER_ROW_KEYS", "Predictions", "compare_runs", "evaluate", "measurement_stddev",
           "predicted_data_stddev", "predictive_cdf", "predictive_quantile", "write_report"]

WEIGHT_SUM_TOLERANCE = 1e-4
MU_EPSILON = 1e-6          # the mixture mean is clipped into (MU_EPSILON, 1 - MU_EPSILON)
_MIN_VARIANCE = 1e-18      # floor on a component's predictive variance
PER_ROW_KEYS = ("pit", "pit_randomised")   # per-row arrays in `evaluate`'s result
_MIXTURE = ("weights", "means", "stddevs")


@dataclasses.dataclass(frozen=True)
class Predictions:
    """A model's predictions over the eval rows, with the labels and optional truth.

    Attributes:
        clicks: [N] clicks per row, `0 <= clicks <= impressions`.
        impressions: [N] impressions `n >= 1`.
        mean: [N] the predicted mean CTR (every model kind).
        weights, means, stddevs: [N, K] the data mixture `p(y*|x)` of an MDN / DDN;
            all three `None` for REG.
        true_mean, true_stddev: [N] the generator's true mean CTR and data stddev.

    Arrays are converted to float64 and validated; a `ValueError` names the bad array.
    """

    clicks: np.ndarray
    impressions: np.ndarray
    mean: np.ndarray
    weights: np.ndarray | None = None
    means: np.ndarray | None = None
    stddevs: np.ndarray | None = None
    true_mean: np.ndarray | None = None
    true_stddev: np.ndarray | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                value = np.asarray(value, dtype=np.float64)
                if not np.all(np.isfinite(value)):
                    raise ValueError(f"`{field.name}` has {int((~np.isfinite(value)).sum())} "
                                     f"non-finite values (shape {value.shape}).")
                object.__setattr__(self, field.name, value)
        self._validate()

    def _validate(self) -> None:
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
        if np.any(self.clicks < 0) or np.any(self.clicks > self.impressions):
            raise ValueError("`clicks` must satisfy 0 <= clicks <= impressions; "
                             f"{int(((self.clicks < 0) | (self.clicks > self.impressions)).sum())}"
                             f" rows do not (shape {self.clicks.shape}).")
        given = [name for name in _MIXTURE if getattr(self, name) is not None]
        if given and len(given) != 3:
            missing = sorted(set(_MIXTURE) - set(given))
            raise ValueError(f"A mixture needs `weights`, `means` and `stddevs`; got "
                             f"{given}, missing {missing}.")
        if not given:
            return
        if self.weights.ndim != 2 or self.weights.shape[0] != rows[0]:
            raise ValueError(f"`weights` must have shape (N, K) with N = {rows[0]}; got "
                             f"shape {self.weights.shape}.")
        for name in ("means", "stddevs"):
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
        if np.any(self.stddevs < 0):
            raise ValueError(f"`stddevs` must be >= 0; got min {self.stddevs.min()}.")

    @property
    def is_density(self) -> bool:
        """True for MDN / DDN predictions (a mixture is given)."""
        return self.weights is not None

    @property
    def ctr(self) -> np.ndarray:
        """The empirical CTR `y = clicks / impressions`."""
        return self.clicks / self.impressions


def _mixture_mean(weights, means):
    return np.sum(weights * means, axis=-1)


def predicted_data_stddev(weights, means, stddevs) -> np.ndarray:
    """The std of the data mixture, `sqrt(sum_k a_k (s_k^2 + m_k^2) - mu^2)` (data uncertainty)."""
    weights, means, stddevs = (np.asarray(v, dtype=np.float64) for v in (weights, means, stddevs))
    mu = _mixture_mean(weights, means)
    second = np.sum(weights * (stddevs**2 + means**2), axis=-1)
    return np.sqrt(np.maximum(second - mu**2, 0.0))


def measurement_stddev(weights, means, impressions) -> np.ndarray:
    """`s_e = sqrt(mu (1 - mu) / n)`, `mu` the mixture mean clipped into (0, 1) (Sec. 3.2)."""
    mu = np.clip(_mixture_mean(np.asarray(weights, float), np.asarray(means, float)),
                 MU_EPSILON, 1.0 - MU_EPSILON)
    return np.sqrt(mu * (1.0 - mu) / np.asarray(impressions, dtype=np.float64))


def _component_scales(weights, means, stddevs, impressions) -> np.ndarray:
    """[N, K] std of each component of p(y|x,n); the data mixture when impressions is None."""
    variance = np.asarray(stddevs, dtype=np.float64) ** 2
    if impressions is not None:
        variance = variance + measurement_stddev(weights, means, impressions)[:, None] ** 2
    return np.sqrt(np.maximum(variance, _MIN_VARIANCE))


def predictive_cdf(y, weights, means, stddevs, impressions=None) -> np.ndarray:
    """CDF of `p(y|x,n) = sum_k a_k N(y; m_k, s_k^2 + s_e^2)` at `y`.

    Args:
        y: values of shape [..., N] (broadcast against the N rows).
        weights, means, stddevs: [N, K] the data mixture.
        impressions: [N] the rows' n; `None` gives the CDF of the data mixture itself.

    Returns:
        Array of shape [..., N].
    """
    weights, means = np.asarray(weights, float), np.asarray(means, float)
    scales = _component_scales(weights, means, stddevs, impressions)
    z = (np.asarray(y, dtype=np.float64)[..., None] - means) / scales
    return np.clip(np.sum(weights * special.ndtr(z), axis=-1), 0.0, 1.0)


def predictive_quantile(q, weights, means, stddevs, impressions=None,
                        iterations: int = 60) -> np.ndarray:
    """Quantiles of the predictive mixture by vectorised bisection on `predictive_cdf`.

    Args:
        q: probabilities in (0, 1), shape broadcastable to [..., N].
        weights, means, stddevs, impressions: as in `predictive_cdf`.
        iterations: bisection steps; each halves the bracket of width ~24 scales.
    """
    weights, means = np.asarray(weights, float), np.asarray(means, float)
    scales = _component_scales(weights, means, stddevs, impressions)
    q = np.asarray(q, dtype=np.float64)
    shape = np.broadcast_shapes(q.shape, (len(weights),))
    lo = np.broadcast_to(np.min(means - 12 * scales, axis=-1), shape).copy()
    hi = np.broadcast_to(np.max(means + 12 * scales, axis=-1), shape).copy()
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        below = predictive_cdf(mid, weights, means, stddevs, impressions) < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _log_prob(p: Predictions) -> np.ndarray:
    scales = _component_scales(p.weights, p.means, p.stddevs, p.impressions)
    with np.errstate(divide="ignore"):
        log_weights = np.log(p.weights)
    log_pdf = stats.norm.logpdf(p.ctr[:, None], loc=p.means, scale=scales)
    return special.logsumexp(log_weights + log_pdf, axis=-1)


def _randomised_pit(p: Predictions, seed: int) -> np.ndarray:
    n = p.impressions
    mixture = (p.weights, p.means, p.stddevs, n)
    lower = np.where(p.clicks <= 0, 0.0, predictive_cdf((p.clicks - 0.5) / n, *mixture))
    upper = np.where(p.clicks >= n, 1.0, predictive_cdf((p.clicks + 0.5) / n, *mixture))
    return lower + np.random.default_rng(seed).random(len(n)) * (upper - lower)


def _correlations(a, b) -> tuple[float | None, float | None]:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None, None
    return float(np.corrcoef(a, b)[0, 1]), float(stats.spearmanr(a, b).statistic)


def _coverage(pit, low, high) -> float:
    return float(np.mean((pit >= low) & (pit <= high)))


def evaluate(predictions: Predictions, *, seed: int = 0) -> dict[str, Any]:
    """Computes the offline metrics of one model's predictions.

    The observed CTR of a row with small `n` is discrete (`clicks / n`), while the
    predictive distribution is continuous, so the plain PIT `F(y)` is not uniform even
    for a perfect model (with n = 1 it takes two values). The randomised PIT draws
    `u ~ U(F((c - 0.5) / n), F((c + 0.5) / n))` (0 for `c = 0` below, 1 for `c = n`
    above), i.e. spreads each count's predicted probability (continuity-corrected Gaussian
    approximation of the binomial) over its interval; it is uniform under a correct model
    for any n (Czado et al., 2009). Prefer `coverage_*_randomised` when many rows have
    small n; for large n both agree.

    Args:
        predictions: the model's `Predictions`.
        seed: seed of the randomised PIT.

    Returns:
        A dict of JSON-serialisable numbers (`None` where a metric does not apply: density
        metrics for REG, truth metrics without ground truth), plus the per-row numpy arrays
        named in `PER_ROW_KEYS` (`pit`, `pit_randomised`).
    """
    p = predictions
    y, n = p.ctr, p.impressions
    squared_error = (p.mean - y) ** 2
    metrics: dict[str, Any] = {
        "examples": len(y),
        "impressions": int(round(n.sum())),
        "clicks": int(round(p.clicks.sum())),
        "mse": float(squared_error.mean()),
        "mse_weighted": float(np.sum(n * squared_error) / n.sum()),
        "mse_truth": None if p.true_mean is None
        else float(np.mean((p.mean - p.true_mean) ** 2)),
        "predicted_clicks_ratio": float(p.mean @ n / p.clicks.sum()) if p.clicks.sum() > 0
        else None,
    }
    density_keys = ("nll", "coverage_50", "coverage_90", "coverage_50_randomised",
                    "coverage_90_randomised", "mean_interval_width_90", "mean_data_stddev",
                    "stddev_corr_truth", "stddev_spearman_truth", *PER_ROW_KEYS)
    metrics.update(dict.fromkeys(density_keys))
    if not p.is_density:
        return metrics
    mixture = (p.weights, p.means, p.stddevs, n)
    pit = predictive_cdf(y, *mixture)
    pit_randomised = _randomised_pit(p, seed)
    low, high = predictive_quantile(np.array([[0.05], [0.95]]), *mixture)
    data_stddev = predicted_data_stddev(p.weights, p.means, p.stddevs)
    metrics.update(
        nll=float(-_log_prob(p).mean()),
        coverage_50=_coverage(pit, 0.25, 0.75),
        coverage_90=_coverage(pit, 0.05, 0.95),
        coverage_50_randomised=_coverage(pit_randomised, 0.25, 0.75),
        coverage_90_randomised=_coverage(pit_randomised, 0.05, 0.95),
        mean_interval_width_90=float(np.mean(high - low)),
        mean_data_stddev=float(data_stddev.mean()),
        pit=pit, pit_randomised=pit_randomised)
    if p.true_stddev is not None:
        pearson, spearman = _correlations(data_stddev, p.true_stddev)
        metrics.update(stddev_corr_truth=pearson, stddev_spearman_truth=spearman)
    return metrics


_EXPLANATIONS = {
    "examples": "eval rows (aggregated (target, context) rows)",
    "impressions": "total impressions over the eval rows",
    "clicks": "total clicks over the eval rows",
    "mse": "MSE of predicted mean vs empirical CTR clicks/n (paper's offline metric)",
    "mse_weighted": "impression-weighted MSE vs empirical CTR",
    "mse_truth": "MSE of predicted mean vs the generator's true mean CTR",
    "predicted_clicks_ratio": "sum(mean * n) / sum(clicks); 1 = calibrated on average",
    "nll": "mean -log p(y\\|x,n), data mixture convolved with binomial noise (lower is better)",
    "coverage_50": "fraction of rows with y in the central 50% predictive interval",
    "coverage_90": "fraction of rows with y in the central 90% predictive interval",
    "coverage_50_randomised": "coverage_50 with the randomised PIT (fair for small n)",
    "coverage_90_randomised": "coverage_90 with the randomised PIT (fair for small n)",
    "mean_interval_width_90": "mean width of the central 90% predictive interval of y",
    "mean_data_stddev": "mean predicted data stddev (std of the data mixture)",
    "stddev_corr_truth": "Pearson corr. of predicted vs true data stddev",
    "stddev_spearman_truth": "Spearman corr. of predicted vs true data stddev",
}


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, str):
        return value
    return f"{value:.4g}"


def write_report(metrics: Mapping[str, Any], predictions: Predictions, out_dir: str,
                 title: str) -> dict[str, str]:
    """Writes `metrics.json`, `summary.md` and the plots of `tfddn.plots` into `out_dir`.

    Returns:
        The written files by name (`metrics`, `summary`, `calibration`, `pit`, `truth`).
    """
    from tfddn import plots  # matplotlib only when a report is written

    os.makedirs(out_dir, exist_ok=True)
    scalars = {k: v for k, v in metrics.items() if k not in PER_ROW_KEYS}
    paths = {"metrics": os.path.join(out_dir, "metrics.json"),
             "summary": os.path.join(out_dir, "summary.md")}
    with open(paths["metrics"], "w") as fh:
        json.dump(scalars, fh, indent=2, allow_nan=False)
        fh.write("\n")
    paths.update(plots.plot_report(metrics, predictions, out_dir, title))
    for name in ("pit", "truth"):  # not drawn this time: drop a previous run's stale plot
        stale = os.path.join(out_dir, f"{name}.png")
        if name not in paths and os.path.exists(stale):
            os.remove(stale)
    lines = [f"# {title}", "", "| metric | value | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | {_format(value)} | {_EXPLANATIONS.get(key, '')} |"
              for key, value in scalars.items()]
    lines += [""] + [f"![{name}]({os.path.basename(path)})" for name, path in paths.items()
                     if path.endswith(".png")]
    with open(paths["summary"], "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return paths


_COMPARE_COLUMNS = ("mse", "mse_truth", "nll", "coverage_50", "coverage_90",
                    "coverage_90_randomised", "mean_interval_width_90", "stddev_corr_truth")
_RELATIVE_COLUMNS = ("mse", "mse_truth")


def compare_runs(metrics_by_name: Mapping[str, Mapping[str, Any]], baseline: str | None = None,
                 columns: tuple[str, ...] = _COMPARE_COLUMNS) -> str:
    """A markdown table of several runs (rows) for docs/RESULTS.md.

    Columns with no value in any run are dropped. After `mse` and `mse_truth` a column
    gives the relative change vs the `baseline` run (default: the first), e.g. `-12.5%`.
    """
    if not metrics_by_name:
        raise ValueError("compare_runs needs at least one run; got none.")
    baseline = next(iter(metrics_by_name)) if baseline is None else baseline
    if baseline not in metrics_by_name:
        raise ValueError(f"baseline {baseline!r} is not a run; runs: {list(metrics_by_name)}.")
    base = metrics_by_name[baseline]
    header, cells = ["run"], [[name] for name in metrics_by_name]
    for column in columns:
        values = [m.get(column) for m in metrics_by_name.values()]
        if all(v is None for v in values):
            continue
        header.append(column)
        for row, value in zip(cells, values):
            row.append(_format(value))
        if column in _RELATIVE_COLUMNS:
            header.append(f"Δ{column} vs {baseline}")
            reference = base.get(column)
            for row, value in zip(cells, values):
                ok = value is not None and reference not in (None, 0)
                row.append(f"{100 * (value / reference - 1):+.1f}%" if ok else "—")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"
