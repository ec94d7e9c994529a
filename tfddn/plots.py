"""Evaluation plots: reliability diagram, PIT histogram, predictions vs ground truth.

Figures are built with `matplotlib.figure.Figure` and written by the Agg canvas, so no
pyplot state or GUI backend is touched (safe in servers, tests and threads).

Example:
    >>> result = stream.result()   # tfddn.streaming_evaluation.StreamingEvaluation
    >>> plots.plot_report(result, "runs/ddn/eval", title="DDN")
"""

from __future__ import annotations

import os
import textwrap

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_pit", "plot_pit_histogram", "plot_reliability", "plot_report", "plot_truth"]

_SCATTER_MAX_POINTS = 5_000
_PIT_MAX_DENSITY = 3.0


def _save(fig: Figure, path: str) -> str:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _diagonal(ax, *arrays) -> None:
    lo = min(float(np.min(a)) for a in arrays)
    hi = max(float(np.max(a)) for a in arrays)
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="y = x")


def _axis_limits(values: np.ndarray, errors: np.ndarray) -> tuple[bool, float, float]:
    """(log scale?, lo, hi): log when all values are > 0 and span more than a decade."""
    lo, hi = float(values.min()), float(values.max())
    if lo > 0 and hi / lo > 10:
        return True, lo / 1.5, hi * 1.5
    return False, 0.0, 1.08 * float(np.max(values + np.max(errors, initial=0.0)))


def _plain_log_ticks(axis) -> None:
    """Plain tick labels at 1, 2 and 5 x 10^k (0.002, 0.005, 0.01, ...) on a log axis."""
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def plot_reliability(reliability, path: str, title: str = "") -> str:
    """Reliability diagram of the mean CTR from `evaluation.reliability_bins`.

    One point per CTR-quantile bin, ordered by prediction: x = impression-weighted mean
    predicted CTR, y = observed CTR with error bars of 1.96 binomial standard errors and,
    with ground truth, the bin's true mean CTR. A calibrated model lies on the diagonal.
    Both axes are logarithmic when the CTRs span more than a decade, else linear from 0.
    The title gives the ECE (absolute and relative to the overall CTR) and the ratio of
    predicted to observed clicks.
    """
    r = reliability
    error = 1.96 * r.stderr
    values = [r.predicted, r.observed] + ([] if r.true_ctr is None else [r.true_ctr])
    log, lo, hi = _axis_limits(np.concatenate(values), error)
    below = np.minimum(error, 0.9 * r.observed) if log else error  # stay > 0 on a log axis
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1,
            label="y = x (calibrated)")
    ax.errorbar(r.predicted, r.observed, yerr=[below, error], fmt="o", capsize=3,
                label="observed CTR ± 1.96 SE")
    if r.true_ctr is not None:
        ax.plot(r.predicted, r.true_ctr, "s:", mfc="none", alpha=0.8, label="true mean CTR")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            _plain_log_ticks(axis)
    ctr = float(r.observed @ r.impressions / r.impressions.sum())
    relative = f" ({r.ece / ctr:.0%} of CTR)" if ctr > 0 else ""
    heading = textwrap.fill(f"{title} reliability, {len(r.predicted)} CTR-quantile bins",
                            60, break_on_hyphens=False, break_long_words=False).strip()
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="mean predicted CTR of the bin",
           ylabel="observed CTR of the bin (clicks / impressions)",
           title=f"{heading}\nECE {r.ece:.2g}{relative}, predicted/observed clicks "
                 f"{r.clicks_ratio:.3f}")
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_pit(pit: np.ndarray, path: str, title: str = "", bins: int = 20,
             pit_randomised: np.ndarray | None = None, label: str = "PIT F(y)") -> str:
    """PIT histogram (density) with the uniform line; flat means calibrated, U-shaped
    means over-confident, hump-shaped means under-confident.

    With `pit_randomised`, the density axis stops at `_PIT_MAX_DENSITY` so that the
    randomised PIT stays readable next to the plain PIT of few-count rows (mostly one
    value, e.g. `F(0)` when most rows have no click); the clipped bars are labelled.
    """
    edges = np.linspace(0, 1, bins + 1)
    randomised = None if pit_randomised is None else np.histogram(pit_randomised, edges)[0]
    return plot_pit_histogram(np.histogram(pit, edges)[0], path, title, randomised, label)


def plot_pit_histogram(counts: np.ndarray, path: str, title: str = "",
                       randomised_counts: np.ndarray | None = None,
                       label: str = "PIT F(y)") -> str:
    """`plot_pit` from PIT counts in equal bins over [0, 1] (`np.histogram`'s), e.g. the
    histograms of `tfddn.streaming_evaluation.StreamingEvaluation`: the same figure."""
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.linspace(0, 1, len(counts) + 1)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    peak = counts.max() * len(counts) / counts.sum()
    clipped = randomised_counts is not None and peak > _PIT_MAX_DENSITY
    ax.hist(edges[:-1], bins=edges, weights=counts, density=True, alpha=0.5,
            label=f"{label} (peak {peak:.3g}, clipped)" if clipped else label)
    if randomised_counts is not None:
        ax.hist(edges[:-1], bins=edges, weights=np.asarray(randomised_counts, np.float64),
                density=True, histtype="step", linewidth=1.5, label="randomised PIT")
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="uniform")
    ax.set(xlabel="PIT", ylabel="density", xlim=(0, 1), title=f"{title} PIT".strip())
    if clipped:
        ax.set_ylim(0, _PIT_MAX_DENSITY)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _scatter(ax, x, y, color_label: str) -> None:
    if len(x) <= _SCATTER_MAX_POINTS:
        ax.scatter(x, y, s=4, alpha=0.4)
    else:
        art = ax.hexbin(x, y, gridsize=60, bins="log", mincnt=1, cmap="viridis")
        ax.figure.colorbar(art, ax=ax, label=color_label)
    _diagonal(ax, x, y)
    ax.legend(loc="upper left", fontsize=8)


def plot_truth(predictions, path: str, title: str = "",
               data_stddev: np.ndarray | None = None) -> str | None:
    """Predicted vs true mean CTR and, given `data_stddev`, predicted vs true data stddev.

    `predictions`: anything with `[N]` arrays `mean`, `true_mean` and `true_stddev` (the
    last two may be None): an `evaluation.Predictions` or a `StreamingEvaluation` result.
    Returns `None` (nothing written) when there is nothing to compare.
    """
    p = predictions
    panels = []
    if p.true_mean is not None:
        panels.append((p.true_mean, p.mean, "true mean CTR", "predicted mean CTR"))
    if p.true_stddev is not None and data_stddev is not None:
        panels.append((p.true_stddev, data_stddev, "true data stddev",
                       "predicted data stddev"))
    if not panels:
        return None
    fig = Figure(figsize=(5.5 * len(panels), 5), layout="constrained")
    for i, (x, y, xlabel, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        _scatter(ax, x, y, "rows per hexagon")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{ylabel} vs truth")
    if title:  # one figure title: per-panel titles with the run name overlap
        fig.suptitle(title)
    return _save(fig, path)


def plot_report(result, out_dir: str, title: str = "") -> dict[str, str]:
    """Writes `calibration.png` (reliability diagram), `pit.png` (density models) and
    `truth.png` (with ground truth).

    Args:
        result: a `tfddn.streaming_evaluation.EvaluationResult`: its `reliability`,
            PIT histograms (None for REG), `family` and the per-row arrays of the truth
            plot.
        out_dir, title: where the PNGs go, and the run's name in their titles.

    Returns:
        The written PNG paths by name.
    """
    paths = {"calibration": plot_reliability(result.reliability,
                                             os.path.join(out_dir, "calibration.png"), title)}
    if result.pit_histogram is not None:
        label = "PIT F(clicks)" if result.family == "beta" else "PIT F(y)"
        paths["pit"] = plot_pit_histogram(result.pit_histogram,
                                          os.path.join(out_dir, "pit.png"), title,
                                          result.pit_randomised_histogram, label)
    truth = plot_truth(result, os.path.join(out_dir, "truth.png"), title, result.data_stddev)
    if truth is not None:
        paths["truth"] = truth
    return paths
