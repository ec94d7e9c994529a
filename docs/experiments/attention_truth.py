"""Does the history attention point at the planted driver? (Naor et al., ground-truth check)

The generator (`tfddn generate --history`) plants at most one article whose topic
equals the target's topic in a user's browsing history; when present it adds
`HISTORY_BOOST` to the true logit, and `ground_truth.parquet` records its position
(`history_driver_position`, -1 if none). This script

1. generates history logs (`tfddn.generate`), preprocesses them (`beam.preprocess.run`),
2. trains a DDN with `history_attention=True` (`tfddn.training.train`),
3. reloads the saved model (`keras.saving.load_model`), reads the attention weights with
   `tfddn.models.builder.attention_model` over the eval split, and
4. for the rows that have a driver, compares the share where the argmax attention position
   is the driver with chance (1 / number of non-padding items, averaged), also for the
   same architecture before training (a control: same code, no learning), and
5. measures how much of the planted effect the model learned at all: the mean change of
   its predicted log-CTR when the driver is replaced by another (off-topic) item of the
   same history, against the true lift (drivers are planted at random, so the difference
   of mean log true CTR between rows with and without a driver estimates it). Attention
   can only point at the driver once the model uses the history.

The driver position is re-derived exactly from the raw values: articles are dealt to
topics round-robin (`a<i>` has topic `i mod topics`), and only the planted item shares
the target's topic. It is cross-checked against `ground_truth.parquet` by joining on every
feature (as `tfddn.predict.attach_ground_truth` does). Prints the numbers and writes
`OUT/attention_truth.json`. A script, not a test.

Example:
    .venv/bin/python docs/experiments/attention_truth.py --out_dir runs/attention_truth \\
        --rows 200000 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from beam import preprocess
from tfddn import data, distributions, training
from tfddn.generate import GenerateConfig, generate
from tfddn.models.builder import attention_model
from tfddn.models.config import ModelConfig

_HISTORY = "history"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", default="runs/attention_truth")
    parser.add_argument("--rows", type=int, default=200_000, help="aggregated log rows")
    parser.add_argument("--regime", default="d2", choices=("d1", "d2"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--kind", default="ddn", choices=("mdn", "ddn"))
    parser.add_argument("--embedding_dim", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=3e-3,
                        help="Adam learning rate (at 1e-3 early stopping ends the run before "
                             "the model picks up the history effect)")
    return parser


def _topic_index(values, pattern: str) -> np.ndarray:
    """`"topic07"` -> 7, `"a123"` -> 123 (element-wise; -1 for padding)."""
    regex = re.compile(pattern)
    out = np.full(np.shape(values), -1, dtype=np.int64)
    for index, value in np.ndenumerate(values):
        text = value.decode() if isinstance(value, bytes) else str(value)
        if text:
            out[index] = int(regex.fullmatch(text).group(1))
    return out


def _derived_driver(history, target_topic, topics: int) -> tuple[np.ndarray, np.ndarray]:
    """(driver position or -1, number of non-padding items) per row, from raw values."""
    article = _topic_index(history, r"a(\d+)")
    real = article >= 0
    same = real & (article % topics == _topic_index(target_topic, r"topic(\d+)")[:, None])
    if np.any(same.sum(axis=1) > 1):
        raise AssertionError("more than one history item shares the target's topic")
    return np.where(same.any(axis=1), same.argmax(axis=1), -1), real.sum(axis=1)


def _without_driver(history: np.ndarray, driver: np.ndarray) -> np.ndarray:
    """The histories with the driver replaced by another (off-topic) item of the row."""
    out, rows = history.copy(), np.flatnonzero(driver >= 0)
    out[rows, driver[rows]] = history[rows, np.where(driver[rows] == 0, 1, 0)]
    return out


def _predicted_mean(model, features, num_components: int) -> np.ndarray:
    return distributions.mixture_mean(model(features, training=False), num_components).numpy()


def collect(model, data_dir: str, topics: int, num_components: int) -> pd.DataFrame:
    """Attention weights of `model` over the eval split, with the derived driver per row.

    Also the model's predicted log-CTR lift from the driver (`model_lift`, NaN on rows
    without one): log mean CTR as is minus with the driver replaced by an off-topic item.
    """
    spec = data.load_data_spec(data_dir)
    attention = attention_model(model)
    ds = data.make_dataset(data.split_files(data_dir, "eval"), spec,
                           data.InputConfig(batch_size=4096, shuffle=False))
    parts = []
    for features, labels in ds:
        weights = attention(features)[f"history_attention/{_HISTORY}"].numpy()
        history = features[_HISTORY].numpy()
        driver, real = _derived_driver(history, features["target_topic"].numpy(), topics)
        rows = np.arange(len(driver))
        counterfactual = {**features, _HISTORY: tf.constant(_without_driver(history, driver))}
        lift = np.log(_predicted_mean(model, features, num_components)
                      / _predicted_mean(model, counterfactual, num_components))
        parts.append(pd.DataFrame({
            "driver": driver, "real_items": real, "argmax": weights.argmax(axis=1),
            "driver_weight": np.where(driver >= 0, weights[rows, np.maximum(driver, 0)], np.nan),
            "max_weight": weights.max(axis=1), "impressions": labels["impressions"].numpy(),
            "model_lift": np.where(driver >= 0, lift, np.nan), "key": _keys(features, spec)}))
    return pd.concat(parts, ignore_index=True)


def _keys(features, spec) -> list[tuple]:
    """Hashable raw feature tuples (padding dropped, floats as float32) for the join."""
    columns = []
    for f in spec.features:
        values = features[f.name].numpy()
        if f.is_sequence:
            columns.append([tuple(v.decode() for v in row if v != b"") for row in values])
        elif f.is_numeric:
            columns.append([float(np.float32(v)) for v in values])
        else:
            columns.append([v.decode() if isinstance(v, bytes) else int(v) for v in values])
    return list(zip(*columns))


def truth_check(frame: pd.DataFrame, truth_path: str, spec) -> dict:
    """Join with `ground_truth.parquet`: driver agreement and the true log-CTR lift.

    Drivers are planted independently of everything else, so the difference of mean
    log true CTR between eval rows with and without a driver estimates the true lift.
    """
    truth = pd.read_parquet(truth_path)
    names = [f.name for f in spec.features]
    for f in spec.features:
        if f.is_sequence:
            truth[f.name] = [tuple(v) for v in truth[f.name]]
        elif f.is_numeric:
            truth[f.name] = truth[f.name].astype(np.float32).astype(np.float64)
    truth = truth.drop_duplicates(subset=names).set_index(names)
    found = truth.reindex(pd.MultiIndex.from_tuples(frame["key"], names=names))
    matched = found["true_ctr_mean"].notna().to_numpy()
    driver = frame["driver"].to_numpy()[matched]
    log_ctr = np.log(found["true_ctr_mean"].to_numpy()[matched])
    return {"rows_joined": float(matched.mean()),
            "driver_agreement": float(np.mean(
                found["history_driver_position"].to_numpy()[matched] == driver)),
            "true_log_ctr_lift": float(log_ctr[driver >= 0].mean()
                                       - log_ctr[driver < 0].mean())}


def summarise(frame: pd.DataFrame) -> dict:
    """Argmax-hits-driver rate vs chance on the rows with a driver (and weight on it)."""
    has = frame[frame["driver"] >= 0]
    hit = float((has["argmax"] == has["driver"]).mean())
    chance = float((1.0 / has["real_items"]).mean())
    return {"rows": len(frame), "rows_with_driver": len(has),
            "argmax_is_driver": hit, "chance": chance, "ratio": hit / chance,
            "mean_weight_on_driver": float(has["driver_weight"].mean()),
            "mean_max_weight_with_driver": float(has["max_weight"].mean()),
            "mean_max_weight_without_driver": float(
                frame.loc[frame["driver"] < 0, "max_weight"].mean()),
            "model_log_ctr_lift": float(has["model_lift"].mean())}


def run(argv=None) -> dict:
    args = _parser().parse_args(argv)
    start, out = time.perf_counter(), os.path.abspath(args.out_dir)
    logs = generate(GenerateConfig(out_dir=os.path.join(out, "logs"), rows=args.rows,
                                   regime=args.regime, history=True, seed=args.seed),
                    progress=False)
    data_dir = os.path.join(out, "data")
    preprocess.run(["--input", logs.logs_path, "--spec", logs.spec_path, "--out_dir", data_dir,
                    "--overwrite"])
    model_config = ModelConfig(kind=args.kind, history_attention=True,
                               embedding_dim=args.embedding_dim,
                               learning_rate=args.learning_rate)
    train_config = training.TrainConfig(data_dir=data_dir, run_dir=os.path.join(out, "run"),
                                        epochs=args.epochs, batch_size=args.batch_size,
                                        seed=args.seed, verbose=2)
    summary = training.train(train_config, model_config)
    trained, _, _ = training.load_run(train_config.run_dir)  # the saved -> loaded model
    untrained = training.new_model(training.load_training_data(data_dir), model_config,
                                   args.seed)
    with open(logs.world_path) as fh:
        topics = json.load(fh)["config"]["topics"]
    spec = data.load_data_spec(data_dir)
    k = model_config.num_components
    frame = collect(trained, data_dir, topics, k)
    result = {
        "command": " ".join([os.path.relpath(sys.argv[0])] + list(argv or sys.argv[1:])),
        "args": vars(args), "epochs_run": summary["epochs_run"],
        "best_val_loss": summary["best_val_loss"],
        "trained": summarise(frame),
        "untrained_control": summarise(collect(untrained, data_dir, topics, k)),
        "ground_truth_check": truth_check(frame, logs.ground_truth_path, spec),
        "seconds": round(time.perf_counter() - start, 1),
    }
    with open(os.path.join(out, "attention_truth.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    for name in ("trained", "untrained_control"):
        r = result[name]
        print(f"{name:18s} argmax == driver {r['argmax_is_driver']:.3f}  chance "
              f"{r['chance']:.3f}  ratio {r['ratio']:.2f}  mean weight on driver "
              f"{r['mean_weight_on_driver']:.3f}  model log-CTR lift from the driver "
              f"{r['model_log_ctr_lift']:.3f}  ({r['rows_with_driver']:,} of "
              f"{r['rows']:,} eval rows have a driver)")
    print(f"ground truth: {result['ground_truth_check']}; {result['seconds']}s")
    return result


if __name__ == "__main__":
    run()
