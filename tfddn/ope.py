"""Off-policy evaluation (`tfddn ope`): what a policy would have earned, from logs of another.

A logging policy `pi_b` showed one target `a_i` in each context `x_i` with a known
probability (its *propensity* `pi_b(a_i|x_i)`) and recorded the clicks. The value of a
target policy `pi` (greedy, UCB, Thompson, ... of `tfddn.policy` on a model's
predictions) is its expected CTR per impression, `V(pi) = E_x[sum_a pi(a|x) q(x, a)]`;
with the importance weight `w_i = pi(a_i|x_i) / pi_b(a_i|x_i)` and the model's predicted
mean CTR `q_hat` as the reward model, the three estimators are Open Bandit Pipeline's
(Saito et al. 2021, `obp.ope.estimators`, per impression; `n_i = 1` gives theirs):

- IPS (`InverseProbabilityWeighting`): `sum_i n_i w_i r_i / sum_i n_i`; unbiased when
  the propensities are right and `pi_b > 0` wherever `pi > 0`.
- SNIPS (`SelfNormalizedInverseProbabilityWeighting`): `sum_i n_i w_i r_i /
  sum_i n_i w_i`; biased but consistent, bounded by the rewards, lower variance.
- DR (`DoublyRobust`): `sum_i n_i (q_hat(x_i, pi) + w_i (r_i - q_hat(x_i, a_i))) /
  sum_i n_i` with `q_hat(x, pi) = sum_a pi(a|x) q_hat(x, a)`; unbiased if either the
  propensities or the reward model are right, lower variance when `q_hat` is good.

Each comes with a percentile bootstrap interval (`obp.utils.
estimate_confidence_interval_by_bootstrap`): log rows are resampled with replacement
and the estimator recomputed. For IPS and DR with `n_i = 1` that is OBP's interval;
SNIPS is renormalised in every resample (OBP keeps the full sample's mean weight, which
ignores the denominator's variance).

Logs format (CSV, JSONL or Parquet; one row per logged recommendation):

- the spec's context features and the shown target's features (token lists as lists
  or separator-joined strings), plus any `--context_key` columns;
- `propensity` (`--propensity_column`): `pi_b(a_i|x_i)` in (0, 1];
- `clicks` and, optionally, `impressions` (default 1): a row may aggregate `n` showings
  of the same target in the same context with the same propensity; its reward is
  `clicks / impressions`, weighted by `impressions`.

`--candidates` lists the targets a policy could show (the spec's target features,
optionally `cpc`): every candidate in every context, or, with `--context_key`, the
candidates whose key columns equal the context's. The shown target of every log row
must be one of its context's candidates (matched on `--target_key`, default all target
features). With `cpc`, revenue per 1000 impressions (RPM) is estimated too, with
rewards `clicks x cpc`. Only the first slot of a list is evaluated.

References:
    Saito, Aihara, Matsutani, Narita. "Open Bandit Dataset and Pipeline: Towards
    Realistic and Reproducible Off-Policy Evaluation", NeurIPS Datasets 2021.
    Dudik, Langford, Li. "Doubly Robust Policy Evaluation and Learning", ICML 2011.
    Swaminathan, Joachims. "The Self-Normalized Estimator for Counterfactual
    Learning", NeurIPS 2015.

Example:
    >>> result = run_ope(OPEConfig(logs="logs.parquet", candidates="cands.parquet",
    ...                            run_dir="runs/ddn", policy=PolicyConfig("ucb")))
    >>> result["estimates"]["dr"]["ctr"]      # {"value": ..., "low": ..., "high": ...}
"""

from __future__ import annotations

import numpy as np

from tfddn.policy import (UCB, CandidatePredictions, EpsilonGreedy, Greedy, Policy,
                          PosteriorUCB, Random)

__all__ = ["ESTIMATORS", "action_probabilities", "bootstrap_interval", "dr",
           "effective_sample_size", "estimate", "ips", "run_ope", "snips"]

ESTIMATORS = ("ips", "snips", "dr")
_BOOTSTRAP_CELLS = 1 << 22  # resampled row indices held at once


def _arrays(rewards, propensities, target_probabilities, impressions):
    rewards = np.asarray(rewards, dtype=np.float64)
    n = rewards.shape
    if rewards.ndim != 1 or n[0] == 0:
        raise ValueError(f"rewards must have shape [N], N >= 1. Received: shape={n}")
    out = {"rewards": rewards}
    for name, value in (("propensities", propensities),
                        ("target_probabilities", target_probabilities),
                        ("impressions", np.ones(n) if impressions is None else impressions)):
        value = np.asarray(value, dtype=np.float64)
        if value.shape != n:
            raise ValueError(f"{name} must have shape {n} like rewards. "
                             f"Received: {name}.shape={value.shape}")
        out[name] = value
    for name, low_open, high in (("propensities", True, 1.0),
                                 ("target_probabilities", False, 1.0),
                                 ("impressions", True, np.inf)):
        value = out[name]
        bad = ~((value > 0 if low_open else value >= 0) & (value <= high))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            interval = f"{'(' if low_open else '['}0, {high:g}{')' if high == np.inf else ']'}"
            raise ValueError(f"{name} must be in {interval}. "
                             f"Received: {name}[{i}]={float(value[i])!r}")
    if not np.isfinite(rewards).all():
        i = int(np.flatnonzero(~np.isfinite(rewards))[0])
        raise ValueError(f"rewards must be finite. Received: rewards[{i}]={float(rewards[i])!r}")
    out["weights"] = out["target_probabilities"] / out["propensities"]
    return out


def _terms(name: str, a: dict, logged_predictions=None, policy_predictions=None):
    """`(numerator [N], denominator [N])`: the estimate is `sum(num) / sum(den)`."""
    n, w, r = a["impressions"], a["weights"], a["rewards"]
    if name == "ips":
        return n * w * r, n
    if name == "snips":
        return n * w * r, n * w
    if name == "dr":
        q_logged = np.broadcast_to(np.asarray(logged_predictions, np.float64), r.shape)
        q_policy = np.broadcast_to(np.asarray(policy_predictions, np.float64), r.shape)
        return n * (q_policy + w * (r - q_logged)), n
    raise ValueError(f"estimator must be one of {ESTIMATORS}. Received: {name!r}")


def _ratio(num: np.ndarray, den: np.ndarray, name: str) -> float:
    total = float(den.sum())
    if total == 0.0:
        raise ValueError(f"{name}: the target policy gives weight 0 to every logged row "
                         "(it never shows what the logging policy showed).")
    return float(num.sum()) / total


def ips(rewards, propensities, target_probabilities, impressions=None) -> float:
    """Inverse propensity scoring per impression (OBP `InverseProbabilityWeighting`).

    Args:
        rewards: `[N]` reward per impression of each row (`clicks / impressions`).
        propensities: `[N]` `pi_b(a_i|x_i)` in (0, 1].
        target_probabilities: `[N]` `pi(a_i|x_i)` in [0, 1].
        impressions: `[N]` row weights `n_i > 0` (default 1).
    """
    a = _arrays(rewards, propensities, target_probabilities, impressions)
    return _ratio(*_terms("ips", a), "ips")


def snips(rewards, propensities, target_probabilities, impressions=None) -> float:
    """Self-normalised IPS (OBP `SelfNormalizedInverseProbabilityWeighting`), args as `ips`."""
    a = _arrays(rewards, propensities, target_probabilities, impressions)
    return _ratio(*_terms("snips", a), "snips")


def dr(rewards, propensities, target_probabilities, logged_predictions, policy_predictions,
       impressions=None) -> float:
    """Doubly robust (OBP `DoublyRobust`; Dudik et al. 2011, Eq. 2).

    Args:
        rewards, propensities, target_probabilities, impressions: as in `ips`.
        logged_predictions: `[N]` the reward model at the logged action, `q_hat(x_i, a_i)`.
        policy_predictions: `[N]` its mean under the target policy, `q_hat(x_i, pi)`.
    """
    a = _arrays(rewards, propensities, target_probabilities, impressions)
    return _ratio(*_terms("dr", a, logged_predictions, policy_predictions), "dr")


def effective_sample_size(weights, impressions=None) -> float:
    """Kish's effective sample size of importance weights, `(sum n w)^2 / sum n w^2`."""
    w = np.asarray(weights, dtype=np.float64)
    n = np.ones_like(w) if impressions is None else np.asarray(impressions, np.float64)
    squares = float((n * w * w).sum())
    return float((n * w).sum()) ** 2 / squares if squares > 0 else 0.0


def bootstrap_interval(numerator, denominator=None, resamples: int = 1000,
                       confidence: float = 0.95, seed: int = 0) -> np.ndarray:
    """Percentile bootstrap interval of `sum(num) / sum(den)` over resampled rows.

    With `denominator=None` (a mean of `numerator`) this is OBP's
    `estimate_confidence_interval_by_bootstrap`. Vectorised: up to `_BOOTSTRAP_CELLS`
    resampled indices at a time; the same `seed` resamples the same rows.

    Args:
        numerator: `[..., N]`; leading axes share the resampled rows.
        denominator: `[..., N]` or None (ones).
        resamples: bootstrap resamples, >= 1.
        confidence: interval level in (0, 1).

    Returns:
        `[..., 2]` lower and upper bounds (NaN resamples with a zero denominator ignored).
    """
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) \
            or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1. Received: resamples={resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1). Received: confidence={confidence!r}")
    num = np.asarray(numerator, dtype=np.float64)
    den = np.ones(num.shape[-1]) if denominator is None else np.asarray(denominator, np.float64)
    rows = num.shape[-1]
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // rows)
    stats = []
    for lo in range(0, resamples, chunk):
        idx = rng.integers(0, rows, (min(chunk, resamples - lo), rows))
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append(num[..., idx].sum(-1) / den[..., idx].sum(-1))
    stats = np.concatenate(stats, axis=-1)
    alpha = 1.0 - confidence
    return np.stack([np.nanpercentile(stats, 100 * alpha / 2, axis=-1),
                     np.nanpercentile(stats, 100 * (1 - alpha / 2), axis=-1)], axis=-1)


def estimate(rewards, propensities, target_probabilities, logged_predictions,
             policy_predictions, impressions=None, resamples: int = 1000,
             confidence: float = 0.95, seed: int = 0) -> dict[str, dict[str, float]]:
    """All `ESTIMATORS` with their bootstrap intervals (one set of resampled rows).

    Returns:
        `{"ips": {"value", "low", "high"}, "snips": {...}, "dr": {...}}`.
    """
    a = _arrays(rewards, propensities, target_probabilities, impressions)
    terms = [_terms(name, a, logged_predictions, policy_predictions) for name in ESTIMATORS]
    bounds = bootstrap_interval(np.stack([t[0] for t in terms]),
                                np.stack([t[1] for t in terms]), resamples, confidence, seed)
    return {name: {"value": _ratio(num, den, name), "low": float(low), "high": float(high)}
            for name, (num, den), (low, high) in zip(ESTIMATORS, terms, bounds)}


def action_probabilities(policy: Policy, predictions: CandidatePredictions,
                         rng: np.random.Generator, samples: int = 1000) -> np.ndarray:
    """`[C]` `pi(a|x)`: the probability that `policy` puts each candidate first.

    Exact for the deterministic policies (greedy, UCB, posterior UCB: one-hot on the
    top candidate, ties to the lowest index as in `tfddn.policy.top_n`), epsilon-greedy
    (`(1 - eps) 1[a = greedy] + eps / C`) and random (`1 / C`); otherwise (Thompson,
    posterior Thompson) the share of `samples` seeded draws of the policy's own
    `select` that put each candidate first, an unbiased estimate.
    """
    size = predictions.num_candidates
    if isinstance(policy, Random):
        return np.full(size, 1.0 / size)
    if isinstance(policy, (Greedy, UCB, PosteriorUCB, EpsilonGreedy)):
        best = (Greedy() if isinstance(policy, EpsilonGreedy) else policy).select(
            predictions, 1, rng)[0, 0]
        eps = policy.epsilon if isinstance(policy, EpsilonGreedy) else 0.0
        probabilities = np.full(size, eps / size)
        probabilities[best] += 1.0 - eps
        return probabilities
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1. Received: samples={samples!r}")
    first = policy.select(predictions, samples, rng)[:, 0]
    return np.bincount(first, minlength=size) / samples


def run_ope(config, source=None) -> dict:
    """The off-policy value of `config.policy` on `config.logs` (module docstring).

    Args:
        config: a `tfddn.configs.OPEConfig`.
        source: the model (anything with `predict(spec, frame)`, e.g.
            `tfddn.candidation.LoadedModel`); default `LoadedModel(config.run_dir)`.

    Returns:
        `{"policy", "rows", "impressions", "contexts", "effective_sample_size",
        "mean_weight", "confidence", "bootstrap", "logged": {"ctr"[, "rpm"]},
        "estimates": {estimator: {"ctr"[, "rpm"]: {"value", "low", "high"}}},
        "warnings": [...]}`, also written to `config.out` (JSON) if set.
    """
    from tfddn.ope_logs import evaluate_logs  # the logs' side imports this module

    return evaluate_logs(config, source)
