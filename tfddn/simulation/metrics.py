"""Exploration metrics: RPM, regret, targets throughput and confidence intervals.

Zeldes et al. (2018, Sec. 5) compare exploration policies online with two numbers:

- **RPM**, revenue per mille: `1000 x revenue / recommendations`, revenue = clicks x CPC;
  it measures what exploration costs (or earns) now.
- **Targets throughput**: how many (target, context) pairs reach binomial statistical
  significance per day thanks to the policy, i.e. how fast exploration *learns* the
  CTR of new targets. A pair counts for a policy on day d when its CTR becomes
  significant on day d and the policy recommended it more than `threshold` times on
  day d-1 (DESIGN.md, Metrics).

The simulator also knows the true expected CTR, so `regret` (the oracle's minus the
policy's expected revenue per 1000 recommendations) is available without click noise.
It reports RPM three ways (`tfddn.simulation.simulator`): from realised clicks (the
paper's), from the shown pairs' expected CTR (**expected RPM**: no click noise, but a
pair's good or bad day is invisible) and from their realised CTR of the day
(**realised-CTR RPM**, issue #11: no Bernoulli noise, and a policy that finds today's
good pairs within the day, as VW and the posterior policies do, is credited for it).
`mean_ci` and `relative_lift` summarise repeated runs over seeds.

References:
    Zeldes, Theodorakis, Solodnik, Rotman, Chamiel, Friedman. "Deep density networks
    and uncertainty in recommender systems", 2018. arXiv:1711.02487.
    Wilson. "Probable inference, the law of succession, and statistical inference",
    JASA 22, 1927.

Example:
    >>> rpm(clicks, cpc, recommendations=len(shown))
    >>> table = targets_throughput(log, threshold=10)     # index day
    >>> mean, half_width = mean_ci(rpms_over_seeds)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["binomial_significant", "ctr", "mean_ci", "regret", "relative_lift", "rpm",
           "targets_throughput"]

_LOG_COLUMNS = ("pair", "day", "impressions", "clicks")


def rpm(clicks, cpc, recommendations: int) -> float:
    """Revenue per mille, `1000 x sum(clicks x cpc) / recommendations` (Zeldes et al.)."""
    if recommendations <= 0:
        raise ValueError(f"recommendations must be > 0. Received: "
                         f"recommendations={recommendations}")
    revenue = np.sum(np.asarray(clicks, dtype=np.float64) * np.asarray(cpc, np.float64))
    return float(1000.0 * revenue / recommendations)


def ctr(clicks, impressions) -> float:
    """Pooled click-through rate `sum(clicks) / sum(impressions)` (NaN if no impressions)."""
    shown = float(np.sum(impressions))
    return float(np.sum(clicks)) / shown if shown > 0 else math.nan


def regret(policy_expected_revenue, oracle_expected_revenue,
           recommendations: int | None = None) -> float:
    """Expected-revenue regret per 1000 recommendations, oracle minus policy.

    Both arguments are *expected* revenues (true expected CTR x CPC), so the regret
    has no click noise.

    Args:
        policy_expected_revenue: expected revenue of what the policy showed, one value
            per recommendation (or totals, with `recommendations`).
        oracle_expected_revenue: the same for the oracle, same shape.
        recommendations: divide the summed difference by this; None: the number of
            elements (per-recommendation inputs).
    """
    policy = np.asarray(policy_expected_revenue, dtype=np.float64)
    oracle = np.asarray(oracle_expected_revenue, dtype=np.float64)
    if policy.shape != oracle.shape:
        raise ValueError(f"policy and oracle revenues must have the same shape. Received: "
                         f"{policy.shape} and {oracle.shape}")
    count = policy.size if recommendations is None else recommendations
    if count <= 0:
        raise ValueError(f"recommendations must be > 0. Received: {count}")
    return float(1000.0 * np.sum(oracle - policy) / count)


def binomial_significant(clicks, impressions, alpha: float = 0.05,
                         relative_width: float = 0.5) -> np.ndarray:
    """Whether each observed CTR `clicks / impressions` is statistically significant.

    Zeldes et al. count pairs that "reached binomial statistical significance" without
    giving the test; this is our choice: the two-sided `1 - alpha` Wilson score interval
    of the binomial proportion must have half-width <= `relative_width x` the point
    estimate, and there must be at least one click. The half-width is

        z / (1 + z^2/n) * sqrt(p (1 - p) / n + z^2 / (4 n^2)),   z = Phi^-1(1 - alpha/2),

    so e.g. 20 clicks / 200 impressions is significant at the defaults (0.0419 <= 0.05)
    and 10 / 100 is not (0.0596). Zero impressions are not significant.

    Returns:
        A bool array of the broadcast shape.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1). Received: alpha={alpha}")
    if not relative_width > 0.0:
        raise ValueError(f"relative_width must be > 0. Received: relative_width={relative_width}")
    x = np.asarray(clicks, dtype=np.float64)
    n = np.asarray(impressions, dtype=np.float64)
    if np.any(x < 0) or np.any(x > n):
        raise ValueError("clicks must satisfy 0 <= clicks <= impressions.")
    z = stats.norm.ppf(1.0 - alpha / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / n
        half_width = z / (1.0 + z * z / n) * np.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n))
        return (x >= 1) & (half_width <= relative_width * p)


def targets_throughput(log: pd.DataFrame, threshold: int = 10, alpha: float = 0.05,
                       relative_width: float = 0.5) -> pd.DataFrame:
    """Per-day count of pairs reaching significance, and the policy's throughput.

    A pair *reaches significance on day d* when its cumulative clicks / impressions
    through day d are significant (`binomial_significant`) and through day d-1 were
    not; a pair that loses significance and regains it counts again. Throughput(d)
    counts those of them that the policy recommended more than `threshold` times on
    day d-1, so nothing on the first day of the log counts towards throughput.

    Args:
        log: one row per (pair, day) with columns `pair` (any hashable id of a
            (target, context)), `day` (int), `impressions` (times the policy
            recommended the pair that day), `clicks`; repeated rows are summed.
        threshold: recommendations on day d-1 needed to credit the policy.
        alpha, relative_width: the significance test, see `binomial_significant`.

    Returns:
        A DataFrame indexed by `day` (every day from the log's first to its last) with
        int columns `reached_significance` and `throughput`.
    """
    missing = [c for c in _LOG_COLUMNS if c not in log.columns]
    if missing:
        raise ValueError(f"log is missing columns {missing}. Received: {list(log.columns)}")
    if len(log) == 0:
        empty = pd.DataFrame({"reached_significance": [], "throughput": []}, dtype=np.int64)
        return empty.rename_axis("day")
    codes, _ = pd.factorize(log["pair"])
    rows = (pd.DataFrame({"code": codes, "day": log["day"].to_numpy(np.int64),
                          "impressions": log["impressions"].to_numpy(np.int64),
                          "clicks": log["clicks"].to_numpy(np.int64)})
            .groupby(["code", "day"], sort=True).sum().reset_index())
    if np.any(rows["impressions"] < 0) or np.any(rows["clicks"] < 0) \
            or np.any(rows["clicks"] > rows["impressions"]):
        raise ValueError("log rows must satisfy 0 <= clicks <= impressions.")
    by_pair = rows.groupby("code", sort=False)
    significant = binomial_significant(by_pair["clicks"].cumsum(),
                                       by_pair["impressions"].cumsum(), alpha, relative_width)
    # Cumulative counts only change on days with rows, so "through day d-1" is the
    # pair's previous row (or nothing before its first row).
    first = rows["code"].ne(rows["code"].shift()).to_numpy()
    before = np.concatenate([[False], significant[:-1]]) & ~first
    reached = significant & ~before
    # Recommendations on day d-1: the previous row's, if it is day d-1 of the same pair.
    day = rows["day"].to_numpy()
    yesterday = np.concatenate([[0], rows["impressions"].to_numpy()[:-1]])
    adjacent = ~first & (np.concatenate([[day[0]], day[:-1]]) == day - 1)
    credited = reached & adjacent & (yesterday > threshold)
    days = pd.RangeIndex(day.min(), day.max() + 1, name="day")
    counts = pd.DataFrame({"reached_significance": reached, "throughput": credited,
                           "day": day}).groupby("day").sum()
    return counts.reindex(days, fill_value=0).astype(np.int64)


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """`(mean, half_width)` of a Student-t confidence interval for the mean.

    Half-width `t_{(1+confidence)/2, n-1} x s / sqrt(n)` with the sample stddev `s`
    (ddof 1); NaN for a single value.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("mean_ci needs at least one value.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1). Received: confidence={confidence}")
    mean = float(values.mean())
    if values.size == 1:
        return mean, math.nan
    sem = values.std(ddof=1) / math.sqrt(values.size)
    return mean, float(stats.t.ppf(0.5 + confidence / 2.0, values.size - 1) * sem)


def relative_lift(a: float, b: float) -> float:
    """`a / b - 1`, e.g. the RPM lift of policy a over baseline b."""
    if b == 0:
        raise ValueError(f"relative_lift needs a non-zero baseline. Received: b={b}")
    return float(a) / float(b) - 1.0
