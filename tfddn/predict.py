"""Run a trained model over a split or a raw file: per-row predictions, and evaluation.

`tfddn predict` = `predict_rows`: for every row of a preprocessed split or of a raw file
(CSV/JSONL/Parquet of rows as logged) its raw feature values, for a split also its
`clicks` / `impressions`, then the predicted `ctr_mean`, `data_stddev`, `model_stddev`
(MC dropout, T passes in one batched graph, `tfddn.uncertainty`), `total_stddev` and
quantiles (`q05`, `q50`, `q95`, ...) of the predictive distribution of the true CTR: the
equal-weight mixture of the T passes' mixtures (`tfddn.distributions.Mixture`
`.flatten_passes`), whose mean is `ctr_mean` and whose stddev is `total_stddev` (law of
total variance; Zeldes et al. 2018, Sec. 3-4). REG predicts no distribution: its rows
have `ctr_mean` and `model_stddev` only. The job streams batch by batch (memory flat in
rows); the same seed, batch size and row order give the same numbers, whether the rows
come from a split or from a file.

`tfddn evaluate` = `evaluate_run`: batch by batch, the model's predictions, joined to the
ground truth, are reduced into a `tfddn.streaming_evaluation.StreamingEvaluation` (memory
nearly flat in rows). It gives the metrics of the in-memory path `predict_split` ->
`attach_ground_truth` -> `tfddn.evaluation.evaluate`. The ground truth of the bundled
generator (`ground_truth.parquet`) is keyed by the raw feature values; examples are
matched on every spec feature (token lists and histories without their padding).

Example:
    >>> predict_rows(PredictConfig(run_dir="runs/ddn", out="eval.parquet"))
    {'rows': 20000, 'out': 'eval.parquet', 'source': 'the eval split of data', ...}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pandas as pd

from tfddn import data, distributions, evaluation, report
from tfddn.errors import UserError
from tfddn.models.config import ModelConfig

__all__ = ["attach_ground_truth", "evaluate_run", "iter_predictions", "predict_rows",
           "predict_split", "prediction_columns", "predictive_quantiles", "quantile_column"]


def predict_split(model, model_config: ModelConfig, data_dir: str, split: str = "eval",
                  batch_size: int = 4096) -> tuple[evaluation.Predictions, pd.DataFrame]:
    """Predictions over a whole split, plus the raw feature values of every row, in memory
    (several KB a row: `evaluate_run` streams instead).

    A density head's packed output becomes a `tfddn.distributions.Mixture` of the model's
    family (Gaussian for MDN / DDN, Beta for BBDDN); the predicted mean is its mean.
    """
    spec = data.load_data_spec(data_dir)
    _check_not_empty(data_dir, split)
    ds = data.make_dataset(data.split_files(data_dir, split), spec,
                           data.InputConfig(batch_size=batch_size, shuffle=False))
    columns = {f.name: [] for f in spec.features}
    parts = {k: [] for k in ("clicks", "impressions", "out")}
    for features, labels in ds:
        out = model(features, training=False)
        parts["out"].append(np.asarray(out, dtype=np.float64))
        parts["clicks"].append(labels["clicks"].numpy())
        parts["impressions"].append(labels["impressions"].numpy())
        for f in spec.features:
            columns[f.name].append(features[f.name].numpy())
    out = np.concatenate(parts["out"])
    clicks = np.concatenate(parts["clicks"])
    impressions = np.concatenate(parts["impressions"])
    if model_config.is_density:
        mixture = distributions.Mixture.from_params(out, model_config.num_components,
                                                    model_config.family)
        predictions = evaluation.Predictions.from_mixture(clicks, impressions, mixture)
    else:
        predictions = evaluation.Predictions(clicks, impressions, out[:, 0])
    frame = pd.DataFrame({name: _column(spec.feature(name), np.concatenate(values))
                          for name, values in columns.items()})
    return predictions, frame


def _column(feature, values: np.ndarray) -> list:
    """Raw values as hashable Python objects comparable with the ground-truth file."""
    if feature.is_sequence:
        return [tuple(feature.items(row)) for row in values]  # padding dropped
    return [_scalar(v) for v in values]


def _scalar(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (np.floating, float)):
        return float(np.float32(value))
    return int(value) if isinstance(value, np.integer) else value


def attach_ground_truth(predictions: evaluation.Predictions, frame: pd.DataFrame,
                        truth_path: str) -> tuple[evaluation.Predictions, float]:
    """Adds `true_mean`/`true_stddev` from a generator's ground truth file.

    Returns the new predictions and the share of rows that found their truth (rows
    without it would bias the truth metrics, so a share below 1 raises).
    """
    truth = pd.read_parquet(truth_path)
    keys = list(frame.columns)
    for name in keys:
        if pd.api.types.is_float_dtype(frame[name]):  # numeric features: float32 on both sides
            truth[name] = truth[name].astype(np.float32).astype(np.float64)
        else:
            truth[name] = [_scalar_or_tuple(v) for v in truth[name]]
    truth = truth.drop_duplicates(subset=keys)
    merged = frame.merge(truth[keys + ["true_ctr_mean", "true_data_stddev"]], on=keys,
                         how="left", validate="many_to_one")
    found = float(merged["true_ctr_mean"].notna().mean())
    if found < 1.0:
        raise ValueError(f"only {found:.1%} of the rows have a ground-truth entry in "
                         f"{truth_path}; is it the file of the same generated logs?")
    return dataclasses.replace(predictions, true_mean=merged["true_ctr_mean"].to_numpy(),
                               true_stddev=merged["true_data_stddev"].to_numpy()), found


def _scalar_or_tuple(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_scalar(v) for v in value)
    return _scalar(value)


def _batch_predictions(out, clicks, impressions, model_config: ModelConfig
                       ) -> evaluation.Predictions:
    """One batch's `Predictions` from the model's output (packed params or REG)."""
    out = np.asarray(out, dtype=np.float64)
    if not model_config.is_density:
        return evaluation.Predictions(clicks, impressions, out[:, 0])
    mixture = distributions.Mixture.from_params(out, model_config.num_components,
                                                model_config.family)
    return evaluation.Predictions.from_mixture(clicks, impressions, mixture)


def _key_column(feature, values) -> pd.Series:
    """A feature's raw values (as read or as in the ground-truth file) normalised for the
    join: float32 numbers, ints, strings, token lists / histories as the repr of their
    item tuple without padding (`attach_ground_truth`'s matching)."""
    if feature.is_numeric:
        return pd.Series(np.asarray(values, dtype=np.float32).astype(np.float64))
    if feature.is_sequence:
        return pd.Series([repr(tuple(feature.items(v))) for v in values], dtype=object)
    if feature.dtype == "int64":
        return pd.Series(np.asarray(values, dtype=np.int64))
    return pd.Series([_scalar(v) for v in values], dtype=object)


def _key_hashes(spec, columns) -> np.ndarray:
    """uint64 hash of each row's normalised feature values (`_key_column`)."""
    frame = pd.DataFrame({f.name: _key_column(f, columns[f.name]) for f in spec.features})
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


class _GroundTruth:
    """A generator's ground truth, keyed by a 64-bit hash of the raw feature values.

    Read in parquet batches: it holds 24 bytes a tuple (the hash and the two truth
    values) plus pandas' hash table of the hashes, built at the first lookup (measured:
    1.67M tuples, 41 MB held, 182 MB peak while reading). Duplicate keys keep their first
    row, as `attach_ground_truth`. Two different keys share a 64-bit hash with
    probability ~`tuples * rows / 2**64` (1e-7 at 1.3M each).
    """

    def __init__(self, path: str, spec):
        import pyarrow.parquet as pq

        names = [f.name for f in spec.features]
        hashes, values = [], []
        for batch in pq.ParquetFile(path).iter_batches(
                batch_size=65_536, columns=names + ["true_ctr_mean", "true_data_stddev"]):
            frame = batch.to_pandas()
            hashes.append(_key_hashes(spec, {name: frame[name].to_numpy() for name in names}))
            values.append(frame[["true_ctr_mean", "true_data_stddev"]].to_numpy(np.float64))
        index = pd.Index(np.concatenate(hashes))
        first = ~index.duplicated(keep="first")
        self.index = pd.Index(index.to_numpy()[first])
        self.values = np.concatenate(values)[first]
        self.path, self.spec = path, spec

    def attach(self, predictions: evaluation.Predictions, features) -> tuple[
            evaluation.Predictions | None, int]:
        """`predictions` with `true_mean` / `true_stddev` of the batch's `features`, and the
        rows that found their truth (None instead of the predictions unless all did)."""
        columns = {f.name: features[f.name].numpy() for f in self.spec.features}
        position = self.index.get_indexer(_key_hashes(self.spec, columns))
        found = int(np.sum(position >= 0))
        if found < len(position):
            return None, found
        truth = self.values[position]
        return dataclasses.replace(predictions, true_mean=truth[:, 0],
                                   true_stddev=truth[:, 1]), found


def evaluate_run(run_dir: str, data_dir: str, out_dir: str, ground_truth: str | None = None,
                 split: str = "eval", batch_size: int = 4096) -> dict:
    """`tfddn evaluate`: metrics JSON, markdown summary and plots of a trained run.

    Streams: each batch of the split is predicted, joined to its ground truth and reduced
    into a `tfddn.streaming_evaluation.StreamingEvaluation`, so memory is one batch plus
    at most 40 bytes a row (`streaming_evaluation.ROW_BYTES`), and with `ground_truth`
    a few tens of bytes a tuple of that file (`_GroundTruth`). The metrics are those of
    `evaluation.evaluate` on all rows at once (`predict_split` -> `attach_ground_truth`
    -> `evaluate`).

    Returns:
        `evaluation.evaluate`'s scalar metrics plus `model` (the kind) and `warnings`
        (`evaluation.calibration_warnings`, a list of one-line messages).

    Raises:
        ValueError: some rows have no entry in `ground_truth`.
    """
    from tfddn.streaming_evaluation import StreamingEvaluation
    from tfddn.training import load_run

    model, model_config, _ = load_run(run_dir)
    spec = data.load_data_spec(data_dir)
    _check_not_empty(data_dir, split)
    truth = _GroundTruth(ground_truth, spec) if ground_truth else None
    ds = data.make_dataset(data.split_files(data_dir, split), spec,
                           data.InputConfig(batch_size=batch_size, shuffle=False))
    stream, rows, found = StreamingEvaluation(), 0, 0
    for features, labels in ds:
        batch = _batch_predictions(model(features, training=False), labels["clicks"].numpy(),
                                   labels["impressions"].numpy(), model_config)
        rows += len(batch.clicks)
        if truth is not None:
            batch, matched = truth.attach(batch, features)
            found += matched
            if batch is None:
                continue  # reported below, once every row is counted
        stream.update(batch)
    if truth is not None and found < rows:
        raise ValueError(f"only {found / rows:.1%} of the rows have a ground-truth entry in "
                         f"{ground_truth}; is it the file of the same generated logs?")
    result = stream.result()
    metrics = {**result.metrics, "model": model_config.kind}
    metrics["warnings"] = evaluation.calibration_warnings(metrics)
    report.write_evaluation_report(metrics, result, out_dir,
                                   title=f"{model_config.kind.upper()} on {data_dir} ({split})")
    return metrics


def _check_not_empty(data_dir: str, split: str) -> None:
    examples = data.read_metadata(data_dir).get("examples", {}).get(split)
    if examples == 0:
        raise UserError(f"the {split} split of --data_dir {data_dir!r} is empty (0 examples in "
                        "metadata.json): nothing to predict. Use more data, or a larger "
                        "--eval_fraction / --eval_buckets when preprocessing")


# -- `tfddn predict`: per-row predictions -------------------------------------------------

PREDICTION_COLUMNS = ("ctr_mean", "data_stddev", "model_stddev", "total_stddev")
"""The uncertainty columns of a density model's rows (REG: `ctr_mean`, `model_stddev`)."""


def quantile_column(q: float) -> str:
    """The column of quantile level `q`: 0.05 -> `q05`, 0.5 -> `q50`, 0.975 -> `q97.5`."""
    whole, _, fraction = f"{q * 100:.10g}".partition(".")
    return f"q{whole.zfill(2)}" + (f".{fraction}" if fraction else "")


def predictive_quantiles(params, model_config: ModelConfig, quantiles) -> np.ndarray:
    """`[Q, N]` quantiles of each row's predictive distribution of the true CTR.

    Args:
        params: `[T, N, 3K]` outputs of T MC-dropout passes
            (`tfddn.uncertainty.mc_dropout_params`; T = 1: the deterministic pass).
        model_config: a density model's config (K, family).
        quantiles: Q levels in (0, 1).

    The distribution is the equal-weight mixture of the passes' mixtures
    (`Mixture.flatten_passes`): mean `ctr_mean`, stddev `total_stddev`. A Gaussian
    kind's quantiles may fall below 0 where its mixture puts mass there.
    """
    if not model_config.is_density:
        raise ValueError(f"a {model_config.kind} model predicts no distribution: no "
                         f"quantiles. Received: kind={model_config.kind!r}")
    mixture = distributions.Mixture.from_params(params, model_config.num_components,
                                                model_config.family).flatten_passes()
    return mixture.quantile(np.asarray(quantiles, dtype=np.float64)[:, None])


def prediction_columns(model_config: ModelConfig, quantiles=()) -> list[str]:
    """The prediction columns of a model's rows: REG's `ctr_mean`, `model_stddev`; a
    density model's `PREDICTION_COLUMNS` and one `quantile_column` per level."""
    if not model_config.is_density:
        return ["ctr_mean", "model_stddev"]
    return [*PREDICTION_COLUMNS, *(quantile_column(q) for q in quantiles)]


def _predictions(model, model_config: ModelConfig, features, config) -> dict[str, np.ndarray]:
    """The prediction columns of one batch of model inputs."""
    from tfddn.uncertainty import decompose_params, mc_dropout_params

    params = mc_dropout_params(model, features, config.mc_samples)
    parts = {k: v.numpy() for k, v in decompose_params(params, model_config).items()}
    if not model_config.is_density:
        return {"ctr_mean": parts["ctr_mean"], "model_stddev": parts["model_stddev"]}
    out = {key: parts[key] for key in PREDICTION_COLUMNS}
    levels = predictive_quantiles(params.numpy(), model_config, config.quantiles)
    out.update({quantile_column(q): row for q, row in zip(config.quantiles, levels)})
    return out


def _split_batches(spec, data_dir: str, config):
    """`(raw feature columns, labels, model inputs)` of every batch of the split."""
    examples = data.read_metadata(data_dir).get("examples", {}).get(config.split)
    if examples == 0:
        raise UserError(f"the {config.split} split of --data_dir {data_dir!r} is empty (0 "
                        "examples in metadata.json): nothing to predict")
    ds = data.make_dataset(data.split_files(data_dir, config.split), spec,
                           data.InputConfig(batch_size=config.batch_size, shuffle=False))
    for features, labels in ds:
        raw = {}
        for f in spec.features:
            values = features[f.name].numpy()
            if f.is_sequence:
                raw[f.name] = [f.items(row) for row in values]
            elif f.is_numeric:  # float32, as the model sees it (a CSV's shortest repr)
                raw[f.name] = values
            else:
                raw[f.name] = [_scalar(v) for v in values]
        raw.update({key: labels[key].numpy().astype(np.int64)
                    for key in ("clicks", "impressions")})
        if "cpc" in labels:
            raw["cpc"] = labels["cpc"].numpy()
        yield raw, features


def _file_batches(spec, path: str, config):
    """`(raw feature columns + kept columns, model inputs)` of every batch of a raw file."""
    from tfddn.tables import feature_columns, iter_table

    offset = 0
    for frame in iter_table(path, config.batch_size, spec):
        missing = [c for c in config.keep_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"--keep_columns {missing} are not columns of {path}. "
                             f"Received columns: {list(frame.columns)}")
        try:
            columns = feature_columns(spec, frame)
        except ValueError as error:
            raise ValueError(f"{path} (rows from {offset}): {error}") from None
        offset += len(frame)
        raw = dict(columns)
        raw.update({c: frame[c].to_numpy() for c in config.keep_columns})
        yield raw, data.features_from_columns(spec, columns)


def _load(config):
    """`(model, model_config, spec, data_dir)` of a `PredictConfig`, dropout seeded."""
    from tfddn.training import load_run
    from tfddn.uncertainty import seed_dropout

    model, model_config, summary = load_run(config.run_dir)
    data_dir = config.data_dir or summary.get("train", {}).get("data_dir")
    if not data_dir:
        raise ValueError(f"run {config.run_dir!r} names no data_dir: pass --data_dir")
    seed_dropout(model, config.seed)
    return model, model_config, data.load_data_spec(data_dir), data_dir


def _frames(config, model, model_config, spec, data_dir) -> Iterator[pd.DataFrame]:
    batches = (_file_batches(spec, config.input, config) if config.input
               else _split_batches(spec, data_dir, config))
    for raw, features in batches:
        yield pd.DataFrame({**raw, **_predictions(model, model_config, features, config)})


def iter_predictions(config) -> Iterator[pd.DataFrame]:
    """`predict_rows`'s rows as frames of at most `config.batch_size` rows (in memory:
    `pd.concat(iter_predictions(config))`).

    Args:
        config: a `tfddn.configs.PredictConfig` (`out` is not used).
    """
    yield from _frames(config, *_load(config))


def predict_rows(config) -> dict:
    """`tfddn predict`: writes the per-row predictions (module docstring) to `config.out`.

    Args:
        config: a `tfddn.configs.PredictConfig`; `out`'s extension picks CSV (token
            lists / histories joined by the spec's separator, as logged), JSONL or
            Parquet (lists).

    Returns:
        `{"rows", "out", "source", "predictions"}` (`predictions`: the prediction
        columns, `prediction_columns`).

    Raises:
        ValueError: a bad input file (the message names the column, row and value), an
            empty split or file.
    """
    from tfddn.tables import TableWriter, table_format

    table_format(config.out)  # a bad --out before any work
    model, model_config, spec, data_dir = _load(config)
    with TableWriter(config.out, spec) as out:
        for frame in _frames(config, model, model_config, spec, data_dir):
            out.write(frame)
        if out.rows == 0:
            raise ValueError(f"no rows to predict in {config.input or data_dir}")
    source = config.input or f"the {config.split} split of {data_dir}"
    return {"rows": out.rows, "out": config.out, "source": source,
            "predictions": prediction_columns(model_config, config.quantiles)}
