"""Candidation (`tfddn rank`): the top-N targets of every context, from a model.

A candidation job scores every candidate target in every context with the model's
predicted CTR distribution and keeps each context's top N by a policy
(`tfddn.policy`: greedy, UCB on data / model / total stddev, Thompson, ...), ranking by
expected revenue (score x CPC; CPC 1 when the candidates have none). The predictions
come from either

* a **loaded run** (`LoadedModel`): T MC-dropout passes in one batched graph
  (`tfddn.uncertainty.mc_dropout_params`), the mixtures kept for Thompson, or
* a **served model** (`ServedModel`): the `mc_dropout` signature of a TF Serving (or
  `tfddn serve`) endpoint over REST or gRPC, and `serving_default`'s mixture for
  Thompson (one deterministic pass).

Inputs are tables (CSV, JSONL or Parquet) of raw values: candidates hold the spec's
target features (and optionally `cpc`), contexts the context features. Token lists may
be lists or strings joined by the spec's separator.

Example:
    >>> ranked = rank(LoadedModel("runs/ddn", mc_samples=16), spec, candidates, contexts,
    ...               make_policy(PolicyConfig("ucb", c=1.0)), top_n=10)
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tfddn.distributions import Mixture
from tfddn.policy import CandidatePredictions, Policy
from tfddn.spec import FeatureSpec

__all__ = ["LoadedModel", "ServedModel", "mc_predictions", "rank", "read_table"]

_MAX_ROWS = 8192  # rows per model call


def read_table(path: str) -> pd.DataFrame:
    """A CSV, JSONL/JSON-lines or Parquet file as a DataFrame (by extension)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        return pd.read_parquet(path)
    if ext in (".jsonl", ".json"):
        return pd.read_json(path, lines=True)
    if ext == ".csv":
        return pd.read_csv(path, keep_default_na=False)
    raise ValueError(f"unknown table format {ext!r}: use .csv, .jsonl or .parquet. "
                     f"Received: {path}")


def _columns(spec: FeatureSpec, frame: pd.DataFrame) -> dict[str, list]:
    """Raw columns by feature name; token lists / histories as lists (`Feature.items`)."""
    out = {}
    for f in spec.features:
        values = frame[f.name].tolist()
        out[f.name] = [f.items(v) for v in values] if f.is_sequence else values
    return out


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

    def predict(self, spec: FeatureSpec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        out, params = mc_predictions(self.model, self.model_config, spec,
                                     _columns(spec, frame), self.mc_samples)
        if self.model_config.is_density:
            out["mixture"] = params
            out["num_components"] = self.model_config.num_components
            out["family"] = self.model_config.family
        return out


class ServedModel:
    """Predictions of a served model (`mc_dropout` signature; mixture from serving_default)."""

    def __init__(self, client, transport: str = "rest", mixture: bool = False):
        self.client, self.transport, self.mixture = client, transport, mixture

    @staticmethod
    def columns(spec: FeatureSpec, frame: pd.DataFrame) -> dict[str, list]:
        """`frame`'s features as the signatures take them: as logged (`Feature.raw`)."""
        columns = _columns(spec, frame)
        for f in spec.features:
            if f.is_sequence:
                columns[f.name] = [f.raw(v) for v in columns[f.name]]
        return columns

    def predict(self, spec: FeatureSpec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        columns = self.columns(spec, frame)
        out = self.client.predict(columns, "mc_dropout", transport=self.transport)
        if self.mixture:
            default = self.client.predict(columns, "serving_default", transport=self.transport)
            weights = np.asarray(default["mixture_weights"], dtype=np.float64)
            family = "beta" if "mixture_concentrations" in default else "gaussian"
            scales = default["mixture_concentrations" if family == "beta" else "mixture_stddevs"]
            out["mixture"] = Mixture(weights, default["mixture_means"], scales,
                                     family).params()[None]
            out["num_components"] = weights.shape[-1]
            out["family"] = family
        return out


def rank(source, spec: FeatureSpec, candidates: pd.DataFrame, contexts: pd.DataFrame,
         policy: Policy, top_n: int = 10, rng: np.random.Generator | None = None,
         counts=None) -> pd.DataFrame:
    """The top `top_n` candidates of every context, best first.

    Args:
        source: `LoadedModel` or `ServedModel` (anything with `predict(spec, frame)`).
        spec: the feature spec (target features in `candidates`, context features in
            `contexts`).
        candidates: one row per target; an optional `cpc` column (default 1).
        contexts: one row per context.
        policy: how to rank (`tfddn.policy.make_policy`).
        top_n: list length (at most the number of candidates).
        rng: randomness of Thompson / epsilon-greedy (default: seeded 0).
        counts: optional `tfddn.posterior.PairCounts`, the clicks and impressions of
            (candidate, context) pairs since the model's data ends: evidence of the
            posterior policies (`posterior_ts`, `posterior_ucb`), looked up by its key
            columns in each candidate x context row (unseen pairs: 0 and 0).

    Returns:
        One row per (context, rank): `context` (row index into `contexts`), the context
        columns, `rank` (1 = best), the candidate's columns, `ctr_mean`, `data_stddev`,
        `model_stddev`, `total_stddev`; with `counts` also `clicks` and `impressions`.
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
    n = min(top_n, len(candidates))
    cpc = (candidates["cpc"].to_numpy(np.float64) if "cpc" in candidates
           else np.ones(len(candidates)))
    per_call = max(1, _MAX_ROWS // len(candidates))
    parts = []
    for lo in range(0, len(contexts), per_call):
        block = contexts.iloc[lo:lo + per_call].reset_index(drop=True)
        # Every candidate x context row with all columns of both (the counts' keys may be
        # any of them); the model sees the spec's features.
        cross = pd.concat([candidates] * len(block), ignore_index=True)
        cross = cross.assign(**{c: np.repeat(block[c].to_numpy(), len(candidates))
                                for c in block.columns})
        scored = source.predict(spec, cross[target_cols + context_cols])
        if counts is not None:
            pair_clicks, pair_impressions = counts.lookup(cross)
        size = len(candidates)
        for j in range(len(block)):
            rows = slice(j * size, (j + 1) * size)
            mixture = scored.get("mixture")
            predictions = CandidatePredictions(
                ctr_mean=scored["ctr_mean"][rows], data_stddev=scored["data_stddev"][rows],
                model_stddev=scored["model_stddev"][rows], cpc=cpc,
                mixture=None if mixture is None else mixture[:, rows],
                num_components=scored.get("num_components", 1),
                family=scored.get("family", "gaussian"),
                clicks=None if counts is None else pair_clicks[rows],
                impressions=None if counts is None else pair_impressions[rows])
            top = policy.select(predictions, 1, rng, slots=n)[0]
            chosen = candidates.iloc[top].reset_index(drop=True)
            frame = pd.DataFrame({"context": lo + j, "rank": np.arange(1, n + 1)})
            for c in context_cols:
                frame[c] = block[c].iloc[j]
            frame = pd.concat([frame, chosen], axis=1)
            for key in ("ctr_mean", "data_stddev", "model_stddev"):
                frame[key] = scored[key][rows][top]
            frame["total_stddev"] = predictions.total_stddev[top]
            if counts is not None:
                frame["clicks"] = predictions.clicks[top]
                frame["impressions"] = predictions.impressions[top]
            parts.append(frame)
    return pd.concat(parts, ignore_index=True)
