"""Evaluation reports: `metrics.json`, `summary.md` with plots, and comparison tables.

`write_evaluation_report` writes what `tfddn evaluate` leaves in `RUN/evaluation/`
(`write_report` the same from in-memory `Predictions`);
`compare_runs` turns several runs' metrics into the markdown tables of docs/RESULTS.md.
The metrics themselves are `tfddn.evaluation.evaluate`'s.

Example:
    >>> metrics = tfddn.evaluation.evaluate(predictions)
    >>> write_report(metrics, predictions, "runs/ddn/evaluation", title="DDN")
    >>> print(compare_runs({"DDN": ddn_metrics, "BBDDN": bbddn_metrics}))
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np

from tfddn.evaluation import PER_ROW_KEYS, Predictions, calibration_warnings, reliability_bins
from tfddn.streaming_evaluation import PIT_BINS, EvaluationResult

__all__ = ["compare_runs", "write_evaluation_report", "write_report"]


_EXPLANATIONS = {
    "examples": "eval rows (aggregated (target, context) rows)",
    "impressions": "total impressions over the eval rows",
    "clicks": "total clicks over the eval rows",
    "mse": "MSE of predicted mean vs empirical CTR clicks/n (paper's offline metric)",
    "mse_weighted": "impression-weighted MSE vs empirical CTR",
    "mse_truth": "MSE of predicted mean vs the generator's true mean CTR",
    "predicted_clicks_ratio": "sum(mean * n) / sum(clicks); 1 = calibrated on average",
    "truth_clicks_ratio": "sum(mean * n) / sum(true mean * n): the clicks ratio against the "
                          "generator's expected clicks (no click noise)",
    "ece": "impression-weighted mean \\|predicted - observed CTR\\| over CTR-quantile bins "
           "(reliability diagram); > 0 from click noise alone (~0.8 x the bins' standard "
           "error) on small eval sets",
    "nll": "mean -log P(clicks \\| x, n), exact Binomial measurement model for every kind "
           "(REG Binomial(n, mean); MDN/DDN components moment-matched to Betas). Since "
           "issue #10; the former `nll` is `nll_density`",
    "nll_density": "MDN/DDN: mean -log p(y \\| x, n) of y = clicks/n, data mixture "
                   "convolved with Gaussian binomial noise (a density: not comparable "
                   "with `nll` or across kinds)",
    "mass_below_zero": "mean predicted probability that the true CTR is < 0 (0 for BBDDN)",
    "coverage_50": "fraction of rows with PIT in [0.25, 0.75] (MDN/DDN: F(y); BBDDN: count "
                   "CDF F(clicks))",
    "coverage_90": "fraction of rows with PIT in [0.05, 0.95] (as coverage_50)",
    "coverage_50_randomised": "coverage_50 with the randomised PIT (fair for small n)",
    "coverage_90_randomised": "coverage_90 with the randomised PIT (fair for small n)",
    "mean_interval_width_90": "mean width of the central 90% predictive interval of y "
                              "(BBDDN: count quantiles / n)",
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


def _summary(title: str, table: Mapping[str, Any], warnings: list[str],
             plot_paths: list[str]) -> str:
    lines = [f"# {title}", "", "| metric | value | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | {_format(value)} | {_EXPLANATIONS.get(key, '')} |"
              for key, value in table.items()]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {message}" for message in warnings]
    lines += [""] + [f"![{os.path.splitext(os.path.basename(path))[0]}]"
                     f"({os.path.basename(path)})" for path in plot_paths]
    return "\n".join(lines) + "\n"


def write_report(metrics: Mapping[str, Any], predictions: Predictions, out_dir: str,
                 title: str, bins: int = 10) -> dict[str, str]:
    """`write_evaluation_report` of in-memory predictions and `evaluate`'s metrics.

    Returns:
        The written files by name (`metrics`, `summary`, `calibration`, `pit`, `truth`).
    """
    p = predictions
    edges = np.linspace(0.0, 1.0, PIT_BINS + 1)

    def histogram(key):
        return None if metrics.get(key) is None else np.histogram(metrics[key], edges)[0]

    result = EvaluationResult(
        metrics=dict(metrics),
        reliability=reliability_bins(p.mean, p.clicks, p.impressions, bins, p.true_mean),
        family=p.family if p.is_density else None, pit_histogram=histogram("pit"),
        pit_randomised_histogram=histogram("pit_randomised"), mean=p.mean,
        true_mean=p.true_mean, true_stddev=p.true_stddev,
        data_stddev=p.mixture.stddev() if p.is_density else None)
    return write_evaluation_report(metrics, result, out_dir, title)


def write_evaluation_report(metrics: Mapping[str, Any], result: EvaluationResult,
                            out_dir: str, title: str) -> dict[str, str]:
    """Writes `metrics.json`, `summary.md` and the plots of `tfddn.plots` into `out_dir`.

    Args:
        metrics: the metrics to write (`result.metrics`, perhaps with `model` and
            `warnings`); per-row arrays (`PER_ROW_KEYS`) are left out.
        result: the data of the plots (`StreamingEvaluation.result()`).
        out_dir, title: where the files go, and the run's name in the titles.

    `summary.md` lists `metrics["warnings"]` (or `calibration_warnings(metrics)` when that
    key is absent) below the table.

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
    paths.update(plots.plot_report(result, out_dir, title))
    for name in ("pit", "truth"):  # not drawn this time: drop a previous run's stale plot
        stale = os.path.join(out_dir, f"{name}.png")
        if name not in paths and os.path.exists(stale):
            os.remove(stale)
    warnings = metrics.get("warnings")
    warnings = calibration_warnings(metrics) if warnings is None else list(warnings)
    table = {k: v for k, v in scalars.items() if not isinstance(v, (list, tuple, dict))}
    pngs = [path for path in paths.values() if path.endswith(".png")]
    with open(paths["summary"], "w") as fh:
        fh.write(_summary(title, table, warnings, pngs))
    return paths


_COMPARE_COLUMNS = ("mse", "mse_truth", "predicted_clicks_ratio", "ece", "nll",
                    "mass_below_zero", "coverage_50", "coverage_90", "coverage_90_randomised",
                    "mean_interval_width_90", "stddev_corr_truth")
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
