"""Plots of simulation results: RPM and throughput per day; the RPM-throughput trade-off."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_days", "plot_tradeoff"]


def plot_days(results: Sequence[dict], path: str) -> str:
    """RPM, targets throughput and regret per day, one line per simulation result."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for result in results:
        days = [d for d in result["days"] if d["day"] >= 1]
        x = [d["day"] for d in days]
        for ax, key in zip(axes, ("rpm", "throughput", "regret_per_1000")):
            ax.plot(x, [d[key] for d in days], marker="o", ms=3, label=result["label"])
    for ax, title in zip(axes, ("RPM", "targets throughput", "regret per 1000 requests")):
        ax.set_title(title)
        ax.set_xlabel("day")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tradeoff(points: Sequence[dict], path: str,
                  title: str = "RPM vs targets throughput over the UCB weight c") -> str:
    """`points`: dicts with `label`, `rpm`, `rpm_ci`, `throughput`, `throughput_ci` (mean and
    confidence half-widths over seeds); drawn as error bars joined in the given order."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.errorbar([p["throughput"] for p in points], [p["rpm"] for p in points],
                xerr=[p.get("throughput_ci", 0) for p in points],
                yerr=[p.get("rpm_ci", 0) for p in points], marker="o", capsize=3)
    for p in points:
        ax.annotate(p["label"], (p["throughput"], p["rpm"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xlabel("targets throughput (pairs, days 1..D)")
    ax.set_ylabel("RPM")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
