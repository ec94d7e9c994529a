"""Run a trained model over a preprocessed split and line its predictions up with truth.

`tfddn evaluate` = `predict_split` -> `attach_ground_truth` -> `tfddn.evaluation`.
The ground truth of the bundled generator (`ground_truth.parquet`) is keyed by the
raw feature values; examples are matched on every spec feature (token lists and
histories without their padding).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tfddn import data, distributions, evaluation, report
from tfddn.errors import UserError
from tfddn.models.config import ModelConfig

__all__ = ["attach_ground_truth", "evaluate_run", "predict_split"]


def predict_split(model, model_config: ModelConfig, data_dir: str, split: str = "eval",
                  batch_size: int = 4096) -> tuple[evaluation.Predictions, pd.DataFrame]:
    """Predictions over a whole split, plus the raw feature values of every row.

    A density head's packed output becomes a `tfddn.distributions.Mixture` of the model's
    family (Gaussian for MDN / DDN, Beta for BBDDN); the predicted mean is its mean.
    """
    spec = data.load_data_spec(data_dir)
    examples = data.read_metadata(data_dir).get("examples", {}).get(split)
    if examples == 0:
        raise UserError(f"the {split} split of --data_dir {data_dir!r} is empty (0 examples in "
                        "metadata.json): nothing to predict. Use more data, or a larger "
                        "--eval_fraction / --eval_buckets when preprocessing")
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
        pad = data.PAD_INT if feature.dtype == "int64" else data.PAD_STRING.encode()
        return [tuple(_scalar(v) for v in row if v != pad) for row in values]
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


def evaluate_run(run_dir: str, data_dir: str, out_dir: str, ground_truth: str | None = None,
                 split: str = "eval") -> dict:
    """`tfddn evaluate`: metrics JSON, markdown summary and plots of a trained run.

    Returns:
        `evaluation.evaluate`'s metrics plus `model` (the kind) and `warnings`
        (`evaluation.calibration_warnings`, a list of one-line messages).
    """
    from tfddn.training import load_run

    model, model_config, _ = load_run(run_dir)
    predictions, frame = predict_split(model, model_config, data_dir, split)
    if ground_truth:
        predictions, _ = attach_ground_truth(predictions, frame, ground_truth)
    metrics = evaluation.evaluate(predictions)
    metrics["model"] = model_config.kind
    metrics["warnings"] = evaluation.calibration_warnings(metrics)
    report.write_report(metrics, predictions, out_dir,
                            title=f"{model_config.kind.upper()} on {data_dir} ({split})")
    return metrics
