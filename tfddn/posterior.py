"""Exploration by posterior: a model's CTR distribution as the prior, a pair's own clicks as
the evidence (issue #11).

For one (target, context) pair a density model predicts a distribution of its CTR: a Beta
mixture (BBDDN), a Gaussian mixture moment-matched to Betas (MDN / DDN), T MC-dropout
passes flattened into one mixture (`tfddn.distributions.Mixture`). The clicks and
impressions the pair collects after the model's data ends are Binomial evidence, and the
posterior is exact and cheap (`Mixture.posterior`: `Beta(a + c, b + n - c)` per component,
weights times their Beta-Binomial evidence). A new target starts at the model's prior and
narrows as its own clicks arrive, within the day, with no retraining; the posterior
policies (`tfddn.policy.PosteriorThompson`, `PosteriorUCB`) rank by it.

Two things the model's prior does not settle are fitted here by empirical Bayes:

- **How much to trust the prior** (`strength`): every component's concentration times
  `strength` (`Mixture.with_strength`); the model's stddev is taken at face value at 1.
- **How much a pair's earlier days say about today** (`decay`): the realised CTR of a pair
  moves from day to day (the data noise), and the model holds a pair's own history only in
  part (features, OOV for rare ids), so the counts of `age` days ago enter with weight
  `decay ** age` (0: today's counts only, 1: all days alike).

`fit_evidence` picks both on a grid by maximising the Beta-Binomial marginal likelihood
of a day's counts under the prior updated with the discounted earlier days, i.e. how well
the posterior *predicted* counts it had not seen (Robbins 1956; Casella 1985).

`PairCounts` is the counts interface, keyed by (target, context) columns: in memory in the
simulator, a CSV / JSONL / Parquet file for `tfddn rank --counts FILE`.

References:
    Kaufmann, Cappe, Garivier. "On Bayesian upper confidence bounds for bandit problems",
    AISTATS 2012.
    Chapelle, Li. "An empirical evaluation of Thompson sampling", NIPS 2011.
    Casella. "An introduction to empirical Bayes data analysis", Am. Stat. 39, 1985.

Example:
    >>> counts = PairCounts.read("counts.csv")              # target_id, publisher_id, ...
    >>> clicks, impressions = counts.lookup(candidate_rows)
    >>> fit = fit_evidence(prior, [(c1, n1), (c2, n2)], clicks, impressions)
    >>> posterior = prior.with_strength(fit.strength).posterior(c, n)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tfddn.distributions import Mixture

__all__ = ["COUNT_COLUMNS", "DECAYS", "STRENGTHS", "EvidenceFit", "PairCounts",
           "discounted", "fit_evidence", "pooled_prior"]

COUNT_COLUMNS = ("clicks", "impressions")
STRENGTHS = tuple(float(s) for s in 2.0 ** np.arange(-4, 5))
"""Prior strengths tried by `fit_evidence`: 1/16 .. 16 (1 = the model at face value)."""
DECAYS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""History decays tried by `fit_evidence` (weight of a count `age` days old: decay^age)."""


class PairCounts:
    """Clicks and impressions per key (e.g. target_id, publisher_id, device).

    Args:
        frame: one row per observation, the key columns and `clicks`, `impressions`
            (finite, `0 <= clicks <= impressions`; fractional counts are allowed, as
            discounted history is); repeated keys are summed.
        keys: the key columns; None: every column but the counts.

    Keys are compared as strings, so `12` in a CSV matches `"12"` in a Parquet file.
    """

    def __init__(self, frame: pd.DataFrame, keys: Sequence[str] | None = None):
        missing = [c for c in COUNT_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"counts need columns {list(COUNT_COLUMNS)}; missing {missing}. "
                             f"Received columns: {list(frame.columns)}")
        keys = [c for c in frame.columns if c not in COUNT_COLUMNS] if keys is None else list(keys)
        absent = [k for k in keys if k not in frame.columns]
        if not keys or absent:
            raise ValueError(f"counts need at least one key column, all present; missing "
                             f"{absent}. Received columns: {list(frame.columns)}")
        values = {}
        for name in COUNT_COLUMNS:
            column = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64)
            if not np.all(np.isfinite(column)) or np.any(column < 0):
                bad = int(np.flatnonzero(~np.isfinite(column) | (column < 0))[0])
                raise ValueError(f"counts column {name!r} must hold finite numbers >= 0; "
                                 f"row {bad} has {frame[name].iloc[bad]!r}")
            values[name] = column
        over = np.flatnonzero(values["clicks"] > values["impressions"] * (1 + 1e-9))
        if len(over):
            raise ValueError(f"counts need clicks <= impressions; row {int(over[0])} has "
                             f"{values['clicks'][over[0]]:g} > {values['impressions'][over[0]]:g}")
        table = pd.DataFrame({k: frame[k].astype(str).to_numpy() for k in keys})
        table = table.assign(**values).groupby(keys, sort=False)[list(COUNT_COLUMNS)].sum()
        self.keys = tuple(keys)
        self.table = table

    @classmethod
    def read(cls, path: str, keys: Sequence[str] | None = None) -> PairCounts:
        """Counts from a `.csv`, `.jsonl` or `.parquet` file (refused by name if unreadable)."""
        from tfddn.candidation import read_table

        try:
            frame = read_table(path)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read counts file {path}: {error}") from None
        try:
            return cls(frame, keys)
        except ValueError as error:
            raise ValueError(f"counts file {path}: {error}") from None

    def __len__(self) -> int:
        return len(self.table)

    def lookup(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """`(clicks, impressions)` `[len(rows)]` of each row's key; 0 for unseen keys."""
        missing = [k for k in self.keys if k not in rows.columns]
        if missing:
            raise ValueError(f"rows lack the counts' key columns {missing}. "
                             f"Received columns: {list(rows.columns)}")
        keys = [rows[k].astype(str).to_numpy() for k in self.keys]
        index = (pd.Index(keys[0], name=self.keys[0]) if len(keys) == 1
                 else pd.MultiIndex.from_arrays(keys, names=self.keys))
        found = self.table.reindex(index).fillna(0.0)
        return (found["clicks"].to_numpy(np.float64),
                found["impressions"].to_numpy(np.float64))


def discounted(history: Sequence[tuple[np.ndarray, np.ndarray]], decay: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """`sum_age decay^age (clicks, impressions)` of `history[age - 1]` (yesterday first)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1]. Received: decay={decay!r}")
    if not history:
        raise ValueError("history needs at least one day (zeros for none)")
    clicks = sum(decay ** (age + 1) * np.asarray(c, np.float64)
                 for age, (c, _) in enumerate(history))
    impressions = sum(decay ** (age + 1) * np.asarray(n, np.float64)
                      for age, (_, n) in enumerate(history))
    return clicks, impressions


@dataclasses.dataclass(frozen=True)
class EvidenceFit:
    """The result of `fit_evidence`.

    Attributes:
        strength, decay: the maximiser on the grid.
        log_likelihood: `[len(strengths), len(decays)]` mean log marginal likelihood per
            pair of the fitted counts.
        strengths, decays: the grid.
        pairs: pairs the fit used.
    """

    strength: float
    decay: float
    log_likelihood: np.ndarray
    strengths: tuple[float, ...]
    decays: tuple[float, ...]
    pairs: int

    def as_dict(self) -> dict:
        i, j = (self.strengths.index(self.strength), self.decays.index(self.decay))
        face = (self.log_likelihood[self.strengths.index(1.0), j]
                if 1.0 in self.strengths else float("nan"))
        return {"strength": self.strength, "decay": self.decay, "pairs": self.pairs,
                "log_likelihood": float(self.log_likelihood[i, j]),
                "log_likelihood_at_strength_1": float(face)}


def fit_evidence(prior: Mixture, history: Sequence[tuple[np.ndarray, np.ndarray]],
                 clicks, impressions, strengths: Sequence[float] = STRENGTHS,
                 decays: Sequence[float] = DECAYS) -> EvidenceFit:
    """Prior strength and history decay that best predict `clicks` of `impressions`.

    Maximises, over the grid, the mean over pairs of
    `log P(clicks | impressions, prior.with_strength(s).posterior(discounted(history, d)))`,
    the Beta-Binomial marginal likelihood (exact for a Beta mixture). Ties go to the
    first grid point (the weaker prior, the shorter memory).

    Args:
        prior: `[N, K]` mixture of each pair's CTR before any of its counts.
        history: `(clicks [N], impressions [N])` of the pair 1, 2, ... days before the
            fitted day; `[]` fits the strength alone.
        clicks, impressions: `[N]` the fitted day's counts.
        strengths, decays: the grid.
    """
    strengths, decays = tuple(float(s) for s in strengths), tuple(float(d) for d in decays)
    if not strengths or not decays:
        raise ValueError("strengths and decays need at least one value each")
    if not history:
        history, decays = [(np.zeros_like(np.asarray(clicks, np.float64)),) * 2], (0.0,)
    table = np.full((len(strengths), len(decays)), -np.inf)
    for j, decay in enumerate(decays):
        seen_clicks, seen = discounted(history, decay)
        for i, strength in enumerate(strengths):
            posterior = prior.with_strength(strength).posterior(seen_clicks, seen)
            table[i, j] = float(np.mean(posterior.count_log_prob(clicks, impressions)))
    i, j = np.unravel_index(np.argmax(table), table.shape)
    return EvidenceFit(strength=strengths[i], decay=decays[j], log_likelihood=table,
                       strengths=strengths, decays=decays, pairs=int(np.size(clicks)))


def pooled_prior(clicks, impressions, rows: int) -> Mixture:
    """`[rows, 1]` the same Beta for every pair: mean the pooled CTR `sum c / sum n`
    (0.5 without impressions), one pseudo-click (`alpha = 1`); `fit_evidence` scales it."""
    n = float(np.sum(impressions))
    mean = float(np.clip(np.sum(clicks) / n if n > 0 else 0.5, 1e-4, 0.5))
    return Mixture(np.ones((rows, 1)), np.full((rows, 1), mean),
                   np.full((rows, 1), 1.0 / mean), "beta")
