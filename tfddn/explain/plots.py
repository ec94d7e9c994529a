"""Figures of `tfddn explain`: importance violins, saliency heat maps, attention maps.

Built with `matplotlib.figure.Figure` and the Agg canvas, like `tfddn.plots` (no pyplot
state, safe in servers and tests). Ratios are drawn on a log2 axis: 0 is "no effect",
+1 doubles the stddev, -1 halves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from tfddn.plots import _save

__all__ = ["plot_attention", "plot_importance", "plot_saliency"]

_TINY = 1e-12


def _log2(ratios) -> np.ndarray:
    return np.log2(np.maximum(np.asarray(ratios, dtype=np.float64), _TINY))


def plot_importance(ratios: Mapping[str, np.ndarray], names: Sequence[str], path: str,
                    title: str = "") -> str:
    """One violin per feature and panel (`{panel title: [N, F] ratios}`), medians marked.

    Features are ordered by the median of the first panel, largest first.
    """
    first = _log2(next(iter(ratios.values())))
    order = np.argsort(-np.median(first, axis=0), kind="stable")
    fig = Figure(figsize=(max(6.0, 0.9 * len(names) + 2), 3.8 * len(ratios)))
    for i, (panel, values) in enumerate(ratios.items()):
        ax = fig.add_subplot(len(ratios), 1, i + 1)
        logs = _log2(values)[:, order]
        positions = np.arange(1, len(order) + 1)
        spread = np.ptp(logs, axis=0) > 0  # a KDE needs spread; constant columns are lines
        if spread.any():
            ax.violinplot(logs[:, spread], positions=positions[spread], showextrema=False)
        medians = np.median(logs, axis=0)
        ax.scatter(positions, medians, marker="_", s=400, color="black", zorder=3,
                   label="median")
        for x, m in zip(positions, medians):
            ax.annotate(f"{2 ** m:.3f}", (x, m), textcoords="offset points", xytext=(8, 4),
                        fontsize=7)
        ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(positions, [names[j] for j in order], rotation=30, ha="right")
        ax.set(ylabel="log2(after / before)", title=panel)
        ax.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_saliency(panels: Mapping[str, np.ndarray], names: Sequence[str],
                  row_labels: Sequence[str], path: str, title: str = "") -> str:
    """Heat maps `{panel title: [rows, F] ratios}` of log2 ratios, one cell per
    (row, feature), annotated with the ratio; red = the stddev grows without the feature."""
    fig = Figure(figsize=(max(6.0, 0.9 * len(names) + 2), (0.45 * len(row_labels) + 1.6)
                          * len(panels)))
    for i, (panel, values) in enumerate(panels.items()):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        logs = _log2(values)
        bound = max(float(np.abs(logs).max()), 0.1)
        image = ax.imshow(logs, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        for (r, c), value in np.ndenumerate(np.asarray(values)):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(row_labels)), row_labels)
        ax.set_title(panel)
        fig.colorbar(image, ax=ax, label="log2 ratio")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _matrix(weights: np.ndarray) -> np.ndarray:
    """One row's attention as a 2-D array: leading axes (heads) averaged."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 1:
        return weights[np.newaxis]
    return weights.reshape((-1,) + weights.shape[-2:]).mean(axis=0)


def plot_attention(weights: np.ndarray, row_labels: Sequence[str], path: str,
                   title: str = "", axis_labels: Sequence[str] | None = None,
                   cell_labels: Sequence[Sequence[str]] | None = None) -> str:
    """Attention weights `[rows, ...]` of one attention output, a heat map per row.

    `[rows, L]` (attention over L history items) is one map with a line per row;
    `[rows, heads, F, F]` (attention between fields) is one F x F map per row, the
    heads averaged. `axis_labels` name the attended positions / fields; `cell_labels`
    `[rows][L]` (e.g. the history items) are written into the cells of a `[rows, L]` map.
    """
    weights = np.asarray(weights, dtype=np.float64)
    panels = [weights] if weights.ndim == 2 else [_matrix(w) for w in weights]
    titles = [title] if weights.ndim == 2 else [f"{title} {label}".strip()
                                                 for label in row_labels]
    fig = Figure(figsize=(max(5.0, 0.6 * panels[0].shape[-1] + 2.5) * min(len(panels), 3),
                          (0.45 * panels[0].shape[0] + 2.0) * -(-len(panels) // 3)))
    for i, (matrix, panel_title) in enumerate(zip(panels, titles)):
        ax = fig.add_subplot(-(-len(panels) // 3), min(len(panels), 3), i + 1)
        image = ax.imshow(matrix, cmap="viridis", aspect="auto")
        if weights.ndim == 2 and cell_labels is not None:
            for (r, c), value in np.ndenumerate(matrix):
                ax.text(c, r, f"{cell_labels[r][c]}\n{value:.2f}", ha="center",
                        va="center", fontsize=6, color="white")
        if axis_labels is not None and len(axis_labels) == matrix.shape[-1]:
            ax.set_xticks(range(matrix.shape[-1]), axis_labels, rotation=45, ha="right",
                          fontsize=7)
        ylabels = row_labels if weights.ndim == 2 else axis_labels
        if ylabels is not None and len(ylabels) == matrix.shape[0]:
            ax.set_yticks(range(matrix.shape[0]), ylabels, fontsize=7)
        ax.set_title(panel_title, fontsize=9)
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return _save(fig, path)
