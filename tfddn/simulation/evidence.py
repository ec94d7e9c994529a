"""What the posterior policies of a simulation know about each pair, day by day (issue #11).

A posterior policy (`posterior_ts`, `posterior_ucb`) ranks by each (target, context)
pair's posterior CTR: its prior updated with the pair's own counts. In the simulator the
counts are

- the **earlier rounds of today** (the allocator's running counters, exact), and
- the pair's **earlier days** (the last `window` days' logs, read through the
  `tfddn.posterior.PairCounts` interface), each weighted `decay ** age`, on top of a
  prior that was retrained on them: the model sees a pair's history only through its
  features and, for rare ids, not at all (OOV).

The prior is the model's predictive distribution (`prior="model"`), or for the model-free
baselines the same Beta for every pair: flat `Beta(1, 1)` (`"flat"`) or the pooled CTR of
the window with one pseudo-click (`"global"`, `tfddn.posterior.pooled_prior`).

`strength` and `decay` are fixed by the configuration or, when None, fitted after every
day by empirical Bayes (`tfddn.posterior.fit_evidence`): the strength and decay under
which the day's prior, updated with the earlier days, best predicted the day's counts;
they serve the next day. Day 1 (nothing to fit yet: day 0 was random and the first model
is trained on it) uses strength 1 and decay 0.5. The flat prior is never rescaled.

Example:
    >>> evidence = Evidence(prior="model", strength=None, decay=None, window=7, seed=0)
    >>> seen_clicks, seen = evidence.seen(day, pool, contexts)      # [M, C] each
    >>> evidence.add_day(day, frame, shown_predictions)             # logs + fit
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfddn.policy import CandidatePredictions
from tfddn.posterior import (DECAYS, STRENGTHS, PairCounts, discounted, fit_evidence,
                             pooled_prior)

__all__ = ["PRIORS", "Evidence"]

PRIORS = ("model", "flat", "global")
KEYS = ("target", "publisher", "device")
DEFAULT_STRENGTH, DEFAULT_DECAY = 1.0, 0.5
MAX_FIT_PAIRS = 6000


class Evidence:
    """Counts, prior strength and history decay of a simulation's posterior policy.

    Args:
        prior: one of `PRIORS`.
        strength: fixed prior strength (> 0) or None (fitted each day).
        decay: fixed history decay in [0, 1] or None (fitted each day).
        window: earlier days whose counts are evidence.
        seed: seeds the subsample of pairs a fit uses (at most `MAX_FIT_PAIRS`).
    """

    def __init__(self, prior: str, strength: float | None, decay: float | None,
                 window: int, seed: int):
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}. Received: prior={prior!r}")
        self.prior, self.window, self.seed = prior, window, seed
        self.fit_strength = strength is None and prior != "flat"
        self.fit_decay = decay is None
        self.strength = (1.0 if prior == "flat" else DEFAULT_STRENGTH) if strength is None \
            else float(strength)
        self.decay = DEFAULT_DECAY if decay is None else float(decay)
        self.frames: dict[int, PairCounts] = {}
        self.fits: dict[int, dict] = {}

    # Counts -------------------------------------------------------------------------------

    def _history(self, day: int, rows: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
        """`(clicks, impressions)` of `rows`' pairs 1, 2, ... `window` days before `day`."""
        zeros = np.zeros(len(rows))
        return [self.frames[d].lookup(rows) if d in self.frames else (zeros, zeros)
                for d in range(day - 1, day - self.window - 1, -1)]

    def seen(self, day: int, pool: np.ndarray, contexts: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
        """`[M, C]` discounted clicks and impressions of every context x live target before
        `day`."""
        m, c = len(contexts), len(pool)
        rows = pd.DataFrame({"target": np.tile(pool, m),
                             "publisher": np.repeat(contexts[:, 0], c),
                             "device": np.repeat(contexts[:, 1], c)})
        clicks, impressions = discounted(self._history(day, rows), self.decay)
        return clicks.reshape(m, c), impressions.reshape(m, c)

    def _pooled(self, day: int, rows: int):
        frames = [self.frames[d].table for d in range(day - self.window, day) if d in self.frames]
        if not frames:
            return pooled_prior([], [], rows)
        table = pd.concat(frames)
        return pooled_prior(table["clicks"], table["impressions"], rows)

    def model_free(self, day: int, cpc: np.ndarray) -> CandidatePredictions | None:
        """The flat or global prior of every candidate as predictions (None for "model")."""
        if self.prior == "model":
            return None
        c = len(cpc)
        if self.prior == "flat":
            mean, concentration = 0.5, 2.0
        else:
            beta = self._pooled(day, 1)
            mean, concentration = float(beta.means[0, 0]), float(beta.scales[0, 0])
        stddev = np.sqrt(mean * (1.0 - mean) / (concentration + 1.0))
        return CandidatePredictions(ctr_mean=np.full(c, mean), data_stddev=np.full(c, stddev),
                                    model_stddev=np.zeros(c), cpc=cpc)

    # The day's logs and the fit ---------------------------------------------------------

    def add_day(self, day: int, frame: pd.DataFrame,
                shown: CandidatePredictions | None = None) -> dict | None:
        """Stores `day`'s counts (`frame`: target, publisher, device, impressions, clicks)
        and refits strength and decay for the next day.

        Args:
            shown: the day's prior predictions of `frame`'s rows, in order (None for the
                model-free priors and when there was no model).

        Returns:
            The fit (`EvidenceFit.as_dict()`), or None when nothing was fitted.
        """
        counts = PairCounts(frame[list(KEYS) + ["clicks", "impressions"]], KEYS)
        fit = None
        if (self.fit_strength or self.fit_decay) and (shown is not None or self.prior != "model"):
            fit = self._fit(day, frame, shown)
            self.fits[day] = fit
        self.frames[day] = counts
        for old in [d for d in self.frames if d <= day - self.window]:
            del self.frames[old]
        return fit

    def _fit(self, day: int, frame: pd.DataFrame, shown: CandidatePredictions | None) -> dict:
        pick = np.random.default_rng([self.seed, 0xF17, day]).permutation(len(frame))
        pick = np.sort(pick[:MAX_FIT_PAIRS])
        rows = frame[list(KEYS)].iloc[pick].reset_index(drop=True)
        if shown is not None:
            prior = shown.prior().take(pick)
        elif self.prior == "global":
            prior = self._pooled(day, len(rows))
        else:  # flat: Beta(1, 1)
            prior = pooled_prior([1.0], [2.0], len(rows))
        if not self.frames and self.prior == "global":  # day 0: its own pooled CTR
            prior = pooled_prior(frame["clicks"], frame["impressions"], len(rows))
        if self.fit_decay:
            history, decays = self._history(day, rows), DECAYS
        else:
            history, decays = [discounted(self._history(day, rows), self.decay)], (1.0,)
        result = fit_evidence(prior, history, frame["clicks"].to_numpy()[pick],
                              frame["impressions"].to_numpy()[pick],
                              strengths=STRENGTHS if self.fit_strength else (self.strength,),
                              decays=decays)
        if self.fit_strength:
            self.strength = result.strength
        if self.fit_decay:
            self.decay = result.decay
        return {**result.as_dict(), "strength": self.strength, "decay": self.decay}
