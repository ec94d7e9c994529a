"""Evaluation plots: calibration (reliability), PIT histogram, predictions vs ground truth.

Figures are built with `matplotlib.figure.Figure` and written by the Agg canvas, so no
pyplot state or GUI backend is touched (safe in servers, tests and threads).

Example:
    >>> metrics = evaluation.evaluate(preds)
    >>> plots.plot_report(metrics, preds, "runs/ddn/eval", title="DDN")
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_calibration", "plot_pit", "plot_report", "plot_truth"]

_SCATTER_MAX_POINTS = 5_000


def _save(fig: Figure, path: str) -> str:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _diagonal(ax, *arrays) -> None:
    lo = min(float(np.min(a)) for a in arrays)
    hi = max(float(np.max(a)) for a in arrays)
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="y = x")


def plot_calibration(predictions, path: str, title: str = "", bins: int = 20) -> str:
    """Reliability diagram: rows binned by quantile of the predicted mean.

    Per bin, all impression-weighted: x = predicted CTR (predicted clicks / impressions),
    y = empirical CTR (sum clicks / sum impressions) and, with ground truth, the true
    mean CTR. A calibrated model lies on the diagonal.
    """
    p = predictions
    edges = np.unique(np.quantile(p.mean, np.linspace(0, 1, bins + 1)))
    last = max(len(edges) - 2, 0)
    index = np.clip(np.searchsorted(edges, p.mean, side="right") - 1, 0, last)
    count = np.bincount(index)
    used = count > 0
    impressions = np.bincount(index, p.impressions)[used]
    predicted = np.bincount(index, p.mean * p.impressions)[used] / impressions
    empirical = np.bincount(index, p.clicks)[used] / impressions
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    _diagonal(ax, predicted, empirical)
    ax.plot(predicted, empirical, "o-", label="empirical CTR (impression-weighted)")
    if p.true_mean is not None:
        true = np.bincount(index, p.true_mean * p.impressions)[used] / impressions
        ax.plot(predicted, true, "s:", alpha=0.8, label="true mean CTR (impression-weighted)")
    ax.set(xlabel="predicted mean CTR (impression-weighted bin average)", ylabel="observed CTR",
           title=f"{title} calibration ({used.sum()} quantile bins)".strip())
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_pit(pit: np.ndarray, path: str, title: str = "", bins: int = 20,
             pit_randomised: np.ndarray | None = None) -> str:
    """PIT histogram (density) with the uniform line; flat means calibrated, U-shaped
    means over-confident, hump-shaped means under-confident."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    edges = np.linspace(0, 1, bins + 1)
    ax.hist(pit, bins=edges, density=True, alpha=0.5, label="PIT F(y)")
    if pit_randomised is not None:
        ax.hist(pit_randomised, bins=edges, density=True, histtype="step", linewidth=1.5,
                label="randomised PIT")
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="uniform")
    ax.set(xlabel="PIT", ylabel="density", xlim=(0, 1), title=f"{title} PIT".strip())
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
    fig = Figure(figsize=(5.5 * len(panels), 5))
    for i, (x, y, xlabel, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        _scatter(ax, x, y, "rows per hexagon")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{ylabel} vs truth")
    if title:  # one figure title: per-panel titles with the run name overlap
        fig.suptitle(title)
    return _save(fig, path)


def plot_report(metrics: Mapping[str, Any], predictions, out_dir: str,
                title: str = "") -> dict[str, str]:
    """Writes `calibration.png`, `pit.png` (density models) and `truth.png` (with truth).

    Returns:
        The written PNG paths by name.
    """
    from tfddn.evaluation import predicted_data_stddev

    p = predictions
    paths = {"calibration": plot_calibration(p, os.path.join(out_dir, "calibration.png"),
                                             title)}
    if metrics.get("pit") is not None:
        paths["pit"] = plot_pit(metrics["pit"], os.path.join(out_dir, "pit.png"), title,
                                pit_randomised=metrics.get("pit_randomised"))
    data_stddev = (predicted_data_stddev(p.weights, p.means, p.stddevs)
                   if p.is_density else None)
    truth = plot_truth(p, os.path.join(out_dir, "truth.png"), title, data_stddev)
    if truth is not None:
        paths["truth"] = truth
    return paths
