"""Streaming summary of a generated log for `world.json` (see `tfddn.generate`).

Besides totals, it records each feature's *true importance*: the variance of its
additive share of the logit (`Marketplace.logit_components`) and, for the data noise,
the variance of the log of its factor of `sigma(x)`. Both are over the sampled
pair-days, so they describe the logs rather than the whole world. Later checks compare
them with the models' saliency (Naor et al.: a feature whose removal changes the
uncertainty most should be one that drives it).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tfddn.marketplace import Marketplace, Requests


class RunSummary:
    """Accumulates counts and first/second moments chunk by chunk."""

    def __init__(self, world: Marketplace):
        self.world = world
        self.pairs = self.impressions = self.clicks = self.small_pairs = 0
        self.true_clicks = 0.0
        self.targets_seen = np.zeros(world.config.targets, dtype=bool)
        self.advertisers_seen = np.zeros(world.config.advertisers, dtype=bool)
        self.publishers_seen = np.zeros(world.config.publishers, dtype=bool)
        self._logit = defaultdict(lambda: np.zeros(3))
        self._noise = defaultdict(lambda: np.zeros(3))
        self._pair_impressions = 0

    def add_rows(self, impressions: int, clicks: int) -> None:
        """Totals of written log rows."""
        self.impressions += impressions
        self.clicks += clicks

    def add_pairs(self, req: Requests, impressions: np.ndarray,
                  true_ctr_mean: np.ndarray) -> None:
        """Pair-level statistics of the pair-days behind the written rows."""
        w = self.world
        self.pairs += len(req)
        self.small_pairs += int((impressions < 10).sum())
        self.targets_seen[req.target] = True
        self.advertisers_seen[w.target_advertiser[req.target]] = True
        self.publishers_seen[req.publisher] = True
        parts = w.logit_components(req)
        logit = w.base_logit + sum(parts.values())
        parts["logit"] = logit
        noise = {k: np.log(v) for k, v in w.noise_components(req).items()}
        noise["log_sigma"] = sum(noise.values())
        for store, values in ((self._logit, parts), (self._noise, noise)):
            for key, v in values.items():
                store[key] += (len(v), float(v.sum()), float(v @ v))
        self.true_clicks += float(true_ctr_mean @ impressions)
        self._pair_impressions += int(impressions.sum())

    @staticmethod
    def _variances(store) -> dict[str, float]:
        out = {}
        for key, (n, s, ss) in store.items():
            out[key] = max(ss / n - (s / n) ** 2, 0.0) if n else 0.0
        return out

    def to_dict(self, rows: int, ground_truth_rows: int) -> dict:
        logit_var = self._variances(self._logit)
        noise_var = self._variances(self._noise)
        total, total_noise = logit_var.pop("logit"), noise_var.pop("log_sigma")
        return {
            "summary": {
                "rows": rows,
                "pairs": self.pairs,
                "total_impressions": self.impressions,
                "total_clicks": self.clicks,
                "mean_empirical_ctr": self.clicks / max(self.impressions, 1),
                "mean_true_ctr": self.true_clicks / max(self._pair_impressions, 1),
                "fraction_rows_impressions_lt_10": self.small_pairs / max(self.pairs, 1),
                "distinct_targets": int(self.targets_seen.sum()),
                "distinct_advertisers": int(self.advertisers_seen.sum()),
                "distinct_publishers": int(self.publishers_seen.sum()),
                "ground_truth_rows": ground_truth_rows,
            },
            "true_importance": {
                "logit_variance": total,
                "features": {k: {"variance": v, "share": v / total if total else 0.0}
                             for k, v in sorted(logit_var.items(), key=lambda kv: -kv[1])},
            },
            "noise_importance": {
                "log_sigma_variance": total_noise,
                "features": {k: {"variance": v, "share": v / total_noise if total_noise
                                 else 0.0}
                             for k, v in sorted(noise_var.items(), key=lambda kv: -kv[1])},
            },
        }
