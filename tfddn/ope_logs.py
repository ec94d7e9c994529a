"""The logs side of `tfddn ope`: check logged bandit data, score every logged context's
candidates with a model and a policy, and estimate the policy's value (`tfddn.ope`).

`score_contexts` is also what a simulator's ground truth needs: the target policy's
`pi(a|x)` over any table of contexts (`tfddn.simulation.bandit_logs`).

Example:
    >>> scores = score_contexts(LoadedModel("runs/ddn"), spec, contexts, candidates,
    ...                         make_policy(PolicyConfig("greedy")))
    >>> scores[0].probabilities          # pi(a|x) over context 0's candidates
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd

# `rank`'s candidate sets, row keys (CSV and Parquet cells compare alike) and batching.
from tfddn.candidation import candidate_sets, row_keys, scoring_chunks
from tfddn.ope import action_probabilities, effective_sample_size, estimate
from tfddn.policy import CandidatePredictions, Policy, make_policy
from tfddn.spec import FeatureSpec, load_spec
from tfddn.tables import read_table

__all__ = ["MIN_EFFECTIVE_SAMPLE_SIZE", "ContextScores", "evaluate_logs", "score_contexts"]

MIN_EFFECTIVE_SAMPLE_SIZE = 100
"""Below this many effective impressions the estimates come with a warning."""


@dataclasses.dataclass(frozen=True)
class ContextScores:
    """One context's candidate set as the target policy sees it.

    Attributes:
        candidates: `[C]` rows of the candidates table, ascending.
        probabilities: `[C]` `pi(a|x)` (`tfddn.ope.action_probabilities`).
        ctr_mean: `[C]` the model's predicted mean CTR, DR's reward model `q_hat(x, a)`.
        cpc: `[C]` revenue per click (1 without a `cpc` column).
    """

    candidates: np.ndarray
    probabilities: np.ndarray
    ctr_mean: np.ndarray
    cpc: np.ndarray


def _towers(spec: FeatureSpec, tower: str) -> list[str]:
    return [f.name for f in spec.features if f.tower == tower]


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lack the columns {missing}. "
                         f"Received columns: {list(frame.columns)}")


def score_contexts(source, spec: FeatureSpec, contexts: pd.DataFrame,
                   candidates: pd.DataFrame, policy: Policy, context_key=(),
                   samples: int = 1000, rng: np.random.Generator | None = None
                   ) -> list[ContextScores]:
    """The model's predictions and `pi(a|x)` over the candidate set of every context.

    Args:
        source: anything with `predict(spec, frame)` (`tfddn.candidation.LoadedModel`).
        contexts: one row per context: the spec's context features and `context_key`.
        candidates: one row per candidate: target features, `context_key`, optional `cpc`.
        context_key: columns of both; a context's candidates are the rows with its
            values (empty: every candidate in every context).
        samples: Monte-Carlo draws of a sampling policy's `pi` per context.
    """
    rng = rng or np.random.default_rng(0)
    target_cols, context_cols = _towers(spec, "target"), _towers(spec, "context")
    _require(candidates, target_cols + list(context_key), "the candidates table")
    _require(contexts, context_cols + list(context_key), "the contexts")
    sets = candidate_sets(candidates, contexts, spec, context_key)
    empty = [i for i, rows in enumerate(sets) if len(rows) == 0]
    if empty:
        values = {c: contexts[c].iloc[empty[0]] for c in (context_key or context_cols)}
        raise ValueError(f"{len(empty)} context(s) have no candidates, e.g. {values}: "
                         f"every logged context needs candidates (see --context_key).")
    cpc = (pd.to_numeric(candidates["cpc"]).to_numpy(np.float64) if "cpc" in candidates
           else np.ones(len(candidates)))
    out = []
    for start, stop in scoring_chunks(sets):
        rows = np.concatenate(sets[start:stop])
        owner = np.repeat(np.arange(start, stop), [len(s) for s in sets[start:stop]])
        frame = candidates[target_cols].iloc[rows].reset_index(drop=True)
        for column in context_cols:
            frame[column] = contexts[column].to_numpy()[owner]
        scored = source.predict(spec, frame)
        mixture, offset = scored.get("mixture"), 0
        for i in range(start, stop):
            part = slice(offset, offset + len(sets[i]))
            offset = part.stop
            predictions = CandidatePredictions(
                ctr_mean=scored["ctr_mean"][part], data_stddev=scored["data_stddev"][part],
                model_stddev=scored["model_stddev"][part], cpc=cpc[sets[i]],
                mixture=None if mixture is None else mixture[:, part],
                num_components=scored.get("num_components", 1),
                family=scored.get("family", "gaussian"))
            out.append(ContextScores(sets[i], action_probabilities(policy, predictions, rng,
                                                                   samples),
                                     predictions.ctr_mean, predictions.cpc))
    return out


def _column(logs: pd.DataFrame, column: str, path: str, low: float, low_open: bool,
            high: float = np.inf) -> np.ndarray:
    values = pd.to_numeric(logs[column], errors="coerce").to_numpy(np.float64)
    ok = np.isfinite(values) & (values > low if low_open else values >= low) & (values <= high)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        cell = logs[column].iloc[i]
        cell = cell.item() if isinstance(cell, np.generic) else cell
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high == np.inf else ']'}"
        raise ValueError(f"column {column!r} of {path} must be in {interval}. Received: "
                         f"{column}={cell!r} in row {i} (0-based)")
    return values


def _check_logs(logs: pd.DataFrame, config) -> tuple[np.ndarray, ...]:
    """`(propensity, clicks, impressions)` of every row, or a ValueError naming the row."""
    if len(logs) == 0:
        raise ValueError(f"the logs {config.logs} have no rows.")
    _require(logs, [config.propensity_column, "clicks"], f"the logs {config.logs}")
    propensity = _column(logs, config.propensity_column, config.logs, 0.0, True, 1.0)
    impressions = (_column(logs, "impressions", config.logs, 0.0, True)
                   if "impressions" in logs else np.ones(len(logs)))
    clicks = _column(logs, "clicks", config.logs, 0.0, False)
    if (clicks > impressions).any():
        i = int(np.flatnonzero(clicks > impressions)[0])
        raise ValueError(f"clicks must be <= impressions in every row of {config.logs}. "
                         f"Received: clicks={clicks[i]:g}, impressions={impressions[i]:g} "
                         f"in row {i} (0-based)")
    return propensity, clicks, impressions


def _logged_positions(logs, candidates, target_key, config, spec) -> np.ndarray:
    """Each log row's shown target as a position in its context's candidate set."""
    match = list(dict.fromkeys([*target_key, *config.context_key]))
    candidate_keys = row_keys(candidates, match, spec)
    duplicated = pd.Series(candidate_keys).duplicated()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated)[0])
        raise ValueError(f"candidates row {i} repeats an earlier row's {match}: the shown "
                         f"target of a log row must match one candidate (see --target_key).")
    row_of_key = pd.Series(np.arange(len(candidates)), index=candidate_keys)
    rows = row_of_key.reindex(row_keys(logs, match, spec)).to_numpy()
    if np.isnan(rows).any():
        i = int(np.flatnonzero(np.isnan(rows))[0])
        shown = {c: logs[c].iloc[i] for c in match}
        raise ValueError(f"row {i} (0-based) of {config.logs}: its shown target {shown} is "
                         f"not among its context's candidates in {config.candidates}.")
    rows = rows.astype(np.int64)
    if not config.context_key:
        return rows
    within = pd.Series(np.arange(len(candidates))).groupby(
        row_keys(candidates, config.context_key, spec)).cumcount().to_numpy()
    return within[rows]  # the rank of the row in its context's (ascending) set


def _spec(config, source) -> FeatureSpec:
    if config.spec:
        return load_spec(config.spec)
    if hasattr(source, "spec"):
        return source.spec()
    raise ValueError("the model has no data spec: give --spec (the data's spec.json).")


def evaluate_logs(config, source=None) -> dict:
    """`tfddn.ope.run_ope`'s work (its docstring says what it returns)."""
    if config.out and not config.out.endswith(".json"):
        raise ValueError(f"--out must end in .json. Received: out={config.out!r}")
    if source is None:
        if not config.run_dir:
            raise ValueError("give --run_dir (the policy's model and DR's reward model).")
        from tfddn.candidation import LoadedModel

        from tfddn.uncertainty import seed_dropout

        source = LoadedModel(config.run_dir, config.mc_samples)
        seed_dropout(source.model, config.seed)  # the same masks, the same estimates
    spec = _spec(config, source)
    logs = read_table(config.logs, spec).reset_index(drop=True)
    candidates = read_table(config.candidates, spec).reset_index(drop=True)
    propensity, clicks, impressions = _check_logs(logs, config)
    target_key = list(config.target_key) or _towers(spec, "target")
    context_cols = list(dict.fromkeys(_towers(spec, "context") + list(config.context_key)))
    _require(logs, context_cols + target_key, f"the logs {config.logs}")
    _, first, context_of_row = np.unique(row_keys(logs, context_cols, spec), return_index=True,
                                         return_inverse=True)
    policy = make_policy(config.policy)
    scores = score_contexts(source, spec, logs.iloc[first].reset_index(drop=True), candidates,
                            policy, config.context_key, config.policy_samples,
                            np.random.default_rng(config.seed))
    position = _logged_positions(logs, candidates, target_key, config, spec)
    offsets = np.concatenate([[0], np.cumsum([len(s.candidates) for s in scores])])
    flat = offsets[context_of_row] + position
    pi, q, cpc = (np.concatenate([getattr(s, k) for s in scores])[flat]
                  for k in ("probabilities", "ctr_mean", "cpc"))
    q_policy = np.array([s.probabilities @ s.ctr_mean for s in scores])[context_of_row]
    q_policy_revenue = np.array([s.probabilities @ (s.ctr_mean * s.cpc)
                                 for s in scores])[context_of_row]
    rewards = clicks / impressions
    settings = dict(impressions=impressions, resamples=config.bootstrap,
                    confidence=config.confidence, seed=config.seed)
    ctr = estimate(rewards, propensity, pi, q, q_policy, **settings)
    logged = {"ctr": float(clicks.sum() / impressions.sum())}
    revenue = None
    if "cpc" in candidates:
        revenue = estimate(1000 * rewards * cpc, propensity, pi, 1000 * q * cpc,
                           1000 * q_policy_revenue, **settings)
        logged["rpm"] = float(1000 * (clicks * cpc).sum() / impressions.sum())
    weights = pi / propensity
    ess = effective_sample_size(weights, impressions)
    mean_weight = float((impressions * weights).sum() / impressions.sum())
    stderr = float(weights.std() / np.sqrt(len(weights)))
    warnings = []
    if ess < MIN_EFFECTIVE_SAMPLE_SIZE:
        warnings.append(f"effective sample size {ess:.1f} < {MIN_EFFECTIVE_SAMPLE_SIZE}: few "
                        f"logged recommendations agree with the {policy.name} policy; the "
                        f"estimates and their intervals are unreliable.")
    if abs(mean_weight - 1.0) > max(4 * stderr, 0.05):
        warnings.append(f"the mean importance weight is {mean_weight:.3f} +- {stderr:.3f}, "
                        f"not 1: the propensities may be wrong, or the policy picks "
                        f"candidates the logging policy never shows (IPS and DR are then "
                        f"biased; SNIPS hides it).")
    result = {
        "policy": dataclasses.asdict(config.policy), "rows": len(logs),
        "impressions": float(impressions.sum()), "contexts": len(scores),
        "effective_sample_size": ess, "mean_weight": mean_weight,
        "confidence": config.confidence, "bootstrap": config.bootstrap, "logged": logged,
        "estimates": {name: {"ctr": ctr[name], **({"rpm": revenue[name]} if revenue else {})}
                      for name in ctr},
        "warnings": warnings}
    if config.out:
        with open(config.out + ".tmp", "w") as fh:
            json.dump(result, fh, indent=2)
        os.replace(config.out + ".tmp", config.out)
    return result
