"""Candidation (`tfddn rank`): the top-N targets of every context, from a model.

A candidation job scores the candidate targets of every context with the model's
predicted CTR distribution and keeps each context's top N by a policy (`tfddn.policy`:
greedy, UCB on data / model / total stddev, Thompson, ...), ranking by expected revenue
(score x CPC; CPC 1 when the candidates have none).

**Candidate sets** (`candidate_sets`): by default every candidate competes in every
context. A `context_key` (columns of both files, e.g. a campaign or site id) gives each
context only the candidates with its values; a pairs table of (context id, candidate id)
lists each context's candidates explicitly. A context without candidates gets no rows.

**Predictions** come from either

* a **loaded run** (`LoadedModel`): T MC-dropout passes in one batched graph
  (`tfddn.uncertainty.mc_dropout_params`), the mixtures kept for Thompson, or
* a **served model** (`tfddn.served.ServedModel`): the `mc_dropout` signature of a TF
  Serving (or `tfddn serve`) endpoint over REST or gRPC, `serving_default`'s mixture for
  Thompson (one deterministic pass); its spec comes from the server
  (`tfddn.served.served_spec`).

Inputs are tables (CSV, JSONL or Parquet, `tfddn.tables`) of raw values: candidates hold
the spec's target features (and optionally `cpc`), contexts the context features. Token
lists may be lists or strings joined by the spec's separator.

Example:
    >>> sets = candidate_sets(candidates, contexts, spec, context_key=("site_id",))
    >>> ranked = rank(LoadedModel("runs/ddn", mc_samples=16), spec, candidates, contexts,
    ...               make_policy(PolicyConfig("ucb", c=1.0)), top_n=10, sets=sets)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tfddn.policy import CandidatePredictions, Policy
from tfddn.policy import top_n as top_indices
from tfddn.served import ServedModel
from tfddn.spec import FeatureSpec
from tfddn.tables import feature_columns, read_table

__all__ = ["SCORE_COLUMNS", "LoadedModel", "ServedModel", "candidate_sets", "mc_predictions",
           "rank", "read_table", "row_keys", "scoring_chunks"]

_MAX_ROWS = 8192  # rows per model call
SCORE_COLUMNS = ("ctr_mean", "data_stddev", "model_stddev", "total_stddev", "score")
"""The score columns of every ranked row; `score` is the policy's (x CPC), the sort key."""


def mc_predictions(model, model_config, spec: FeatureSpec, columns,
                   mc_samples: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """T MC-dropout passes over raw columns (lists or Arrow arrays), `_MAX_ROWS` at a time.

    Returns `(decomposition, params)`: the `tfddn.uncertainty.decompose_params` arrays
    `[N]` and the passes' outputs `[T, N, P]` (the mixtures, for Thompson sampling).
    """
    import tensorflow as tf

    from tfddn.data import features_from_columns
    from tfddn.uncertainty import decompose_params, mc_dropout_params

    rows = len(next(iter(columns.values())))
    params = tf.concat([mc_dropout_params(model, features_from_columns(
        spec, {k: v[lo:lo + _MAX_ROWS] for k, v in columns.items()}), mc_samples)
        for lo in range(0, rows, _MAX_ROWS)], axis=1)
    parts = {k: v.numpy() for k, v in decompose_params(params, model_config).items()}
    return parts, params.numpy()


class LoadedModel:
    """Predictions of a trained run (`tfddn train` / `tune`), T MC-dropout passes."""

    def __init__(self, run_dir: str, mc_samples: int = 16):
        from tfddn.training import load_run

        self.model, self.model_config, self.summary = load_run(run_dir)
        self.mc_samples = mc_samples

    @property
    def data_dir(self) -> str:
        """The preprocessed directory the run was trained on (its spec is the model's)."""
        return self.summary["train"]["data_dir"]

    def spec(self) -> FeatureSpec:
        """The spec of the run's training data."""
        from tfddn.data import load_data_spec

        return load_data_spec(self.data_dir)

    def predict(self, spec: FeatureSpec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        out, params = mc_predictions(self.model, self.model_config, spec,
                                     feature_columns(spec, frame), self.mc_samples)
        if self.model_config.is_density:
            out["mixture"] = params
            out["num_components"] = self.model_config.num_components
            out["family"] = self.model_config.family
        return out


def row_keys(frame: pd.DataFrame, columns: Sequence[str], spec: FeatureSpec | None) -> np.ndarray:
    """One string per row naming its values of `columns`, so that a CSV cell equals the
    same Parquet cell (token lists joined as logged, numbers as floats)."""
    features = {f.name: f for f in spec.features} if spec is not None else {}
    key = None
    for column in columns:
        feature, values = features.get(column), frame[column].reset_index(drop=True)
        if feature is not None and feature.is_sequence:
            part = values.map(feature.raw).astype(str)
        elif feature is not None and feature.is_numeric:
            part = pd.to_numeric(values).astype(np.float64).map(repr)
        else:
            part = values.astype(str)
        key = part if key is None else key + "\x1f" + part
    return key.to_numpy()


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lack the columns {missing}. "
                         f"Received columns: {list(frame.columns)}")


def _ids(frame: pd.DataFrame, column: str | None, what: str) -> pd.Index:
    """Row ids of `frame` as strings (row numbers when `column` is None), all distinct."""
    ids = pd.Index(np.arange(len(frame)).astype(str) if column is None
                   else frame[column].astype(str).to_numpy())
    if ids.has_duplicates:
        raise ValueError(f"the {what} ids in column {column!r} must be distinct; "
                         f"{ids[ids.duplicated()][0]!r} repeats")
    return ids


def candidate_sets(candidates: pd.DataFrame, contexts: pd.DataFrame,
                   spec: FeatureSpec | None = None, context_key: Sequence[str] = (),
                   pairs: pd.DataFrame | None = None, context_id: str | None = None,
                   candidate_id: str = "target_id") -> list[np.ndarray]:
    """The candidates (row numbers of `candidates`, ascending) of every context.

    Args:
        candidates, contexts: the two tables.
        spec: compares feature columns as logged (token lists joined, numbers as
            floats); other key columns are compared as strings (`12` in a CSV equals
            `"12"` in a Parquet file).
        context_key: columns of both tables; a context's candidates are the rows with its
            values. Empty (and no `pairs`): every candidate in every context.
        pairs: one row per (context, candidate) pair, columns `context_id` (or `context`,
            the row number in `contexts`, when `context_id` is None) and `candidate_id`;
            repeated pairs count once.
        context_id: column of `contexts` and `pairs` naming each context (distinct).
        candidate_id: column of `candidates` and `pairs` naming each candidate (distinct).

    Raises:
        ValueError: both `context_key` and `pairs`; a column is missing; ids repeat; a
            pair names an unknown context or candidate (the message shows it).
    """
    if context_key and pairs is not None:
        raise ValueError(f"give a context key or a pairs table, not both. Received: "
                         f"context_key={list(context_key)} and {len(pairs)} pairs")
    if pairs is not None:
        return _pair_sets(candidates, contexts, pairs, context_id, candidate_id)
    if not context_key:
        return [np.arange(len(candidates))] * len(contexts)
    context_key = list(dict.fromkeys(context_key))
    _require(candidates, context_key, "the candidates")
    _require(contexts, context_key, "the contexts")
    groups = pd.Series(np.arange(len(candidates))).groupby(
        row_keys(candidates, context_key, spec)).indices
    empty = np.zeros(0, np.int64)
    return [np.sort(groups.get(key, empty)) for key in row_keys(contexts, context_key, spec)]


def _pair_sets(candidates, contexts, pairs, context_id, candidate_id) -> list[np.ndarray]:
    context_column = context_id or "context"
    _require(pairs, [context_column, candidate_id], "the pairs")
    _require(candidates, [candidate_id], "the candidates")
    if context_id is not None:
        _require(contexts, [context_id], "the contexts")
    context_ids = _ids(contexts, context_id, "context")
    candidate_ids = _ids(candidates, candidate_id, "candidate")
    wanted = {"context": pairs[context_column].astype(str).to_numpy(),
              "candidate": pairs[candidate_id].astype(str).to_numpy()}
    rows = {"context": context_ids.get_indexer(wanted["context"]),
            "candidate": candidate_ids.get_indexer(wanted["candidate"])}
    for what, column in (("context", context_column), ("candidate", candidate_id)):
        unknown = np.flatnonzero(rows[what] < 0)
        if len(unknown):
            raise ValueError(f"the pairs name {len(unknown)} unknown {what}(s) in column "
                             f"{column!r}, e.g. {wanted[what][unknown[0]]!r} (pairs row "
                             f"{int(unknown[0])})")
    found = pd.DataFrame(rows).drop_duplicates()
    groups = found.groupby("context")["candidate"].apply(np.sort)
    empty = np.zeros(0, np.int64)
    return [np.asarray(groups.get(i, empty), np.int64) for i in range(len(contexts))]


def scoring_chunks(sets: Sequence[np.ndarray]):
    """Ranges of contexts whose candidates add up to at most `_MAX_ROWS` (or one context)."""
    start = 0
    while start < len(sets):
        stop, size = start + 1, len(sets[start])
        while stop < len(sets) and size + len(sets[stop]) <= _MAX_ROWS:
            size, stop = size + len(sets[stop]), stop + 1
        yield start, stop
        start = stop


def rank(source, spec: FeatureSpec, candidates: pd.DataFrame, contexts: pd.DataFrame,
         policy: Policy, top_n: int = 10, rng: np.random.Generator | None = None,
         counts=None, sets: Sequence[np.ndarray] | None = None) -> pd.DataFrame:
    """The top `top_n` candidates of every context, best first.

    Args:
        source: `LoadedModel` or `ServedModel` (anything with `predict(spec, frame)`).
        spec: the feature spec (target features in `candidates`, context features in
            `contexts`).
        candidates: one row per target; an optional `cpc` column (default 1).
        contexts: one row per context.
        policy: how to rank (`tfddn.policy.make_policy`).
        top_n: list length (at most the size of a context's candidate set).
        rng: randomness of Thompson / epsilon-greedy (default: seeded 0).
        counts: optional `tfddn.posterior.PairCounts`, the clicks and impressions of
            (candidate, context) pairs since the model's data ends: evidence of the
            posterior policies (`posterior_ts`, `posterior_ucb`), looked up by its key
            columns in each candidate x context row (unseen pairs: 0 and 0).
        sets: each context's candidates (`candidate_sets`); None: every candidate.

    Returns:
        One row per (context, rank): `context` (row number in `contexts`), `rank` (1 =
        best), the context's columns, the candidate's columns (a column of both shown
        once, the context's value), then `SCORE_COLUMNS`: the model's `ctr_mean`,
        `data_stddev` (0 for REG), `model_stddev`, `total_stddev` and the policy's
        `score` (x CPC) that ordered the list; with `counts` also `clicks` and
        `impressions`. Contexts without candidates have no rows.
    """
    rng = rng or np.random.default_rng(0)
    target_cols = [f.name for f in spec.features if f.tower == "target"]
    context_cols = [f.name for f in spec.features if f.tower == "context"]
    missing = ([f"candidates.{c}" for c in target_cols if c not in candidates]
               + [f"contexts.{c}" for c in context_cols if c not in contexts])
    if missing:
        raise ValueError(f"columns missing for the spec's features: {missing}")
    if len(candidates) == 0 or len(contexts) == 0:
        raise ValueError(f"need at least one candidate and one context. Received: "
                         f"{len(candidates)} candidates, {len(contexts)} contexts")
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise ValueError(f"top_n must be an integer >= 1. Received: top_n={top_n!r}")
    candidates, contexts = candidates.reset_index(drop=True), contexts.reset_index(drop=True)
    sets = [np.arange(len(candidates))] * len(contexts) if sets is None else list(sets)
    if len(sets) != len(contexts):
        raise ValueError(f"sets must hold one candidate set per context ({len(contexts)}). "
                         f"Received: {len(sets)} sets")
    cpc = (pd.to_numeric(candidates["cpc"]).to_numpy(np.float64) if "cpc" in candidates
           else np.ones(len(candidates)))
    shown = [c for c in candidates.columns if c not in contexts.columns]
    parts = []
    for start, stop in scoring_chunks(sets):
        chosen = np.concatenate(sets[start:stop]).astype(np.int64)
        owner = np.repeat(np.arange(start, stop), [len(s) for s in sets[start:stop]])
        if not len(chosen):
            continue
        # Every (context, candidate) row with the columns of both (the counts' keys may be
        # any of them; a column of both takes the context's value); the model sees the
        # spec's features.
        cross = candidates.iloc[chosen].reset_index(drop=True)
        cross = cross.assign(**{c: contexts[c].to_numpy()[owner] for c in contexts.columns})
        scored = source.predict(spec, cross[target_cols + context_cols])
        pair_counts = counts.lookup(cross) if counts is not None else None
        offset = 0
        for i in range(start, stop):
            rows = slice(offset, offset + len(sets[i]))
            offset = rows.stop
            if rows.start == rows.stop:
                continue
            parts.append(_ranked(scored, rows, sets[i], cpc, pair_counts, policy, rng,
                                 min(top_n, len(sets[i])), i, contexts, candidates[shown]))
    if not parts:
        raise ValueError(f"no context has a candidate ({len(contexts)} contexts, "
                         f"{len(candidates)} candidates): check the context key or pairs")
    return pd.concat(parts, ignore_index=True)


def _ranked(scored, rows, members, cpc, pair_counts, policy, rng, n, context, contexts,
            shown) -> pd.DataFrame:
    """One context's list: its predictions, the policy's scores, the top `n` rows."""
    mixture = scored.get("mixture")
    predictions = CandidatePredictions(
        ctr_mean=scored["ctr_mean"][rows], data_stddev=scored["data_stddev"][rows],
        model_stddev=scored["model_stddev"][rows], cpc=cpc[members],
        mixture=None if mixture is None else mixture[:, rows],
        num_components=scored.get("num_components", 1),
        family=scored.get("family", "gaussian"),
        clicks=None if pair_counts is None else pair_counts[0][rows],
        impressions=None if pair_counts is None else pair_counts[1][rows])
    scores = policy.scores(predictions, rng)  # one request: what `select` ranks by
    top = top_indices(scores, n)
    frame = pd.DataFrame({"context": context, "rank": np.arange(1, n + 1)})
    for c in contexts.columns:
        frame[c] = [contexts[c].iloc[context]] * n
    frame = pd.concat([frame, shown.iloc[members[top]].reset_index(drop=True)], axis=1)
    frame["ctr_mean"] = predictions.ctr_mean[top]
    frame["data_stddev"] = predictions.data_stddev[top]
    frame["model_stddev"] = predictions.model_stddev[top]
    frame["total_stddev"] = predictions.total_stddev[top]
    frame["score"] = scores[top]
    if pair_counts is not None:
        frame["clicks"] = predictions.clicks[top]
        frame["impressions"] = predictions.impressions[top]
    return frame
