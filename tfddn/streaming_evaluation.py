"""`tfddn.evaluation`'s metrics over batches of rows, memory nearly flat in the rows.

`tfddn.evaluation.evaluate` scores one `Predictions` of all rows at once. `tfddn evaluate`
used to build that object (plus the raw feature values of every row, for the ground-truth
join) and reached 8.8 GB of RSS on 1.29M eval rows. `StreamingEvaluation.update` takes
one batch at a time instead and reduces it into

- sums: impressions, clicks, squared errors (plain, impression-weighted, against the
  truth), predicted and true clicks `sum(mean n)` and `sum(true_mean n)`, count
  log-probabilities (`nll`), CTR log-densities (`nll_density`), `mass_below_zero`,
  90% interval widths and data stddevs;
- counts: rows whose plain and randomised PIT lie in the central 50% and 90% intervals
  (`coverage_*`), and `PIT_BINS`-bin histograms of both PITs (the report's plot);
- per row, only what needs every row at the end, `ROW_BYTES` in all: the predicted mean
  (float64) with impressions and clicks (uint32, exact for whole counts below 2**32,
  else float64): 16 bytes, as `ece`'s CTR-quantile bins need each row's rank among all
  predictions; with ground truth the true mean (8 bytes, the reliability diagram's truth
  line and the truth plot); for a density model with ground truth the predicted and true
  data stddev (16 bytes: Spearman's rank correlation needs every rank). All float64:
  float32 would move near-tied ranks and the correlations by ~1e-6.

So at most 40 bytes a row: 52 MB at 1.3M rows, next to a constant of one batch.

The randomised PIT draws from one `numpy.random.Generator(seed)` in row order, which
gives the same uniforms whether drawn at once or batch by batch, so the result equals
`evaluate(all_rows, seed=seed)` up to the order of float summation.

Example:
    >>> stream = StreamingEvaluation()
    >>> for batch in batches:                    # each a `tfddn.evaluation.Predictions`
    ...     stream.update(batch)
    >>> result = stream.result()
    >>> result.metrics["nll"], result.reliability.ece
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tfddn.evaluation import (Predictions, ReliabilityBins, _correlations, _count_log_prob,
                              _ctr_log_density, _pit, reliability_bins)

__all__ = ["PIT_BINS", "ROW_BYTES", "EvaluationResult", "StreamingEvaluation"]

PIT_BINS = 20
"""Equal bins over [0, 1] of the PIT histograms (`plots.plot_pit`'s default)."""

ROW_BYTES = {"mean, impressions, clicks": 16, "true_mean (with ground truth)": 8,
             "data and true stddev (density model with ground truth)": 16}
"""What `StreamingEvaluation` keeps per row (module docstring)."""

_INTERVALS = {"50": (0.25, 0.75), "90": (0.05, 0.95)}


@dataclasses.dataclass(frozen=True, eq=False)
class EvaluationResult:
    """What a report needs: the metrics and the data behind each plot.

    Attributes:
        metrics: `evaluate`'s scalar metrics (same keys and order, without the per-row
            `PER_ROW_KEYS`).
        reliability: `reliability_bins` of all rows, with `true_ctr` given ground truth.
        family: the mixture family, or None for REG.
        pit_histogram, pit_randomised_histogram: `[PIT_BINS]` counts of the plain and
            randomised PIT (`np.histogram` over `linspace(0, 1, PIT_BINS + 1)`); None
            for REG.
        mean, true_mean: `[N]` predicted and true mean CTR (None without ground truth).
        data_stddev, true_stddev: `[N]` predicted and true data stddev (None unless a
            density model with ground truth).
    """

    metrics: dict[str, Any]
    reliability: ReliabilityBins
    family: str | None = None
    pit_histogram: np.ndarray | None = None
    pit_randomised_histogram: np.ndarray | None = None
    mean: np.ndarray | None = None
    true_mean: np.ndarray | None = None
    data_stddev: np.ndarray | None = None
    true_stddev: np.ndarray | None = None


def _compact_counts(values: np.ndarray) -> np.ndarray:
    """uint32 (4 bytes, exact) for whole counts below 2**32; float64 otherwise."""
    if len(values) and values.max() < 2**32 and np.array_equal(values, np.floor(values)):
        return values.astype(np.uint32)
    return values


class StreamingEvaluation:
    """Accumulates `tfddn.evaluation.evaluate`'s metrics batch by batch (module docstring).

    Args:
        seed: seed of the randomised PIT (as `evaluate`'s).
        bins: CTR-quantile bins of `ece` (as `evaluate`'s).

    Every batch must be of the same kind: all with or all without a mixture (and of one
    family), all with or all without ground truth; a `ValueError` says which differs.
    """

    def __init__(self, *, seed: int = 0, bins: int = 10):
        if bins < 1:
            raise ValueError(f"bins must be >= 1. Received: bins={bins}")
        self.bins = bins
        self._rng = np.random.default_rng(seed)
        self._kind = None  # (family or None, has true_mean, has true_stddev)
        self._sums = dict.fromkeys(
            ("squared_error", "weighted_squared_error", "truth_squared_error",
             "predicted_clicks", "truth_clicks", "log_prob", "log_density",
             "mass_below_zero", "interval_width", "data_stddev"), 0.0)
        self._covered = dict.fromkeys(
            (f"{name}{suffix}" for name in _INTERVALS for suffix in ("", "_randomised")), 0)
        self._edges = np.linspace(0.0, 1.0, PIT_BINS + 1)
        self._histograms = {"pit": np.zeros(PIT_BINS, np.int64),
                            "pit_randomised": np.zeros(PIT_BINS, np.int64)}
        self._rows = {name: [] for name in ("mean", "impressions", "clicks", "true_mean",
                                            "data_stddev", "true_stddev")}

    @property
    def examples(self) -> int:
        """Rows seen so far."""
        return sum(len(chunk) for chunk in self._rows["mean"])

    def _check_kind(self, p: Predictions) -> None:
        kind = (p.family if p.is_density else None, p.true_mean is not None,
                p.true_stddev is not None)
        if self._kind is None:
            self._kind = kind
        elif kind != self._kind:
            names = ("family (None: REG)", "has true_mean", "has true_stddev")
            raise ValueError(f"every batch must be of one kind; this one has {kind}, the "
                             f"first had {self._kind} ({', '.join(names)})")

    def update(self, p: Predictions) -> None:
        """Adds one batch of rows (in row order: the randomised PIT depends on it)."""
        self._check_kind(p)
        s, n, y = self._sums, p.impressions, p.ctr
        squared_error = (p.mean - y) ** 2
        s["squared_error"] += float(squared_error.sum())
        s["weighted_squared_error"] += float(n @ squared_error)
        s["predicted_clicks"] += float(p.mean @ n)
        s["log_prob"] += float(_count_log_prob(p).sum())
        self._rows["mean"].append(p.mean)
        self._rows["impressions"].append(_compact_counts(n))
        self._rows["clicks"].append(_compact_counts(p.clicks))
        if p.true_mean is not None:
            s["truth_squared_error"] += float(((p.mean - p.true_mean) ** 2).sum())
            s["truth_clicks"] += float(p.true_mean @ n)
            self._rows["true_mean"].append(p.true_mean)
        if p.is_density:
            self._update_density(p)

    def _update_density(self, p: Predictions) -> None:
        s, mix = self._sums, p.mixture
        if p.family == "gaussian":
            s["log_density"] += float(_ctr_log_density(mix, p.ctr, p.impressions).sum())
        s["mass_below_zero"] += float(mix.mass_below_zero().sum())
        pit, lower, upper, width = _pit(p)
        pit_randomised = lower + self._rng.random(len(pit)) * (upper - lower)
        for name, (low, high) in _INTERVALS.items():
            self._covered[name] += int(np.sum((pit >= low) & (pit <= high)))
            self._covered[f"{name}_randomised"] += int(
                np.sum((pit_randomised >= low) & (pit_randomised <= high)))
        self._histograms["pit"] += np.histogram(pit, self._edges)[0]
        self._histograms["pit_randomised"] += np.histogram(pit_randomised, self._edges)[0]
        s["interval_width"] += float(width.sum())
        data_stddev = mix.stddev()
        s["data_stddev"] += float(data_stddev.sum())
        if p.true_stddev is not None:
            self._rows["data_stddev"].append(data_stddev)
            self._rows["true_stddev"].append(p.true_stddev)

    def _column(self, name: str) -> np.ndarray | None:
        chunks = self._rows[name]
        return np.concatenate(chunks).astype(np.float64) if chunks else None

    def result(self) -> EvaluationResult:
        """The metrics of all rows so far, and the data of the report's plots.

        Raises:
            ValueError: no rows were added.
        """
        if self._kind is None:
            raise ValueError("no rows were added: nothing to evaluate")
        family, has_truth, _ = self._kind
        s, rows = self._sums, self.examples
        mean, n, clicks = (self._column(name) for name in ("mean", "impressions", "clicks"))
        true_mean = self._column("true_mean")
        reliability = reliability_bins(mean, clicks, n, self.bins, true_mean)
        total_clicks = float(clicks.sum())
        metrics = {
            "examples": rows,
            "impressions": int(round(float(n.sum()))),
            "clicks": int(round(total_clicks)),
            "mse": s["squared_error"] / rows,
            "mse_weighted": s["weighted_squared_error"] / float(n.sum()),
            "mse_truth": s["truth_squared_error"] / rows if has_truth else None,
            "predicted_clicks_ratio": s["predicted_clicks"] / total_clicks
            if total_clicks > 0 else None,
            "truth_clicks_ratio": s["predicted_clicks"] / s["truth_clicks"]
            if has_truth else None,
            "ece": reliability.ece,
            "nll": -s["log_prob"] / rows,
            "nll_density": -s["log_density"] / rows if family == "gaussian" else None,
            "mass_below_zero": s["mass_below_zero"] / rows if family else None,
        }
        metrics.update(self._density_metrics(rows) if family else dict.fromkeys(
            ("coverage_50", "coverage_90", "coverage_50_randomised", "coverage_90_randomised",
             "mean_interval_width_90", "mean_data_stddev", "stddev_corr_truth",
             "stddev_spearman_truth")))
        data_stddev, true_stddev = self._column("data_stddev"), self._column("true_stddev")
        return EvaluationResult(
            metrics=metrics, reliability=reliability, family=family,
            pit_histogram=self._histograms["pit"].copy() if family else None,
            pit_randomised_histogram=self._histograms["pit_randomised"].copy()
            if family else None,
            mean=mean, true_mean=true_mean, data_stddev=data_stddev, true_stddev=true_stddev)

    def _density_metrics(self, rows: int) -> dict[str, Any]:
        covered = {f"coverage_{name}": count / rows for name, count in self._covered.items()}
        metrics = {key: covered[key] for key in ("coverage_50", "coverage_90",
                                                 "coverage_50_randomised",
                                                 "coverage_90_randomised")}
        metrics.update(mean_interval_width_90=self._sums["interval_width"] / rows,
                       mean_data_stddev=self._sums["data_stddev"] / rows,
                       stddev_corr_truth=None, stddev_spearman_truth=None)
        data_stddev, true_stddev = self._column("data_stddev"), self._column("true_stddev")
        if true_stddev is not None:
            pearson, spearman = _correlations(data_stddev, true_stddev)
            metrics.update(stddev_corr_truth=pearson, stddev_spearman_truth=spearman)
        return metrics
