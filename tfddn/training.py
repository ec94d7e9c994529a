"""`tfddn train`: fit a REG, MDN, DDN or BBDDN model on Beam-preprocessed TFRecords.

A run directory holds everything a later stage needs:

    RUN/model.keras      the trained model (custom layers registered under "tfddn")
    RUN/config.json      {"model": ModelConfig, "train": TrainConfig, "data": metadata}
    RUN/history.json     per-epoch losses and metrics
    RUN/logs/            TensorBoard
    RUN/backup/          BackupAndRestore state: rerun the same command after a kill to resume
                         (`tfddn.resume`: the history and early stopping resume too; other
                         settings are refused, `--restart` discards the backup)

`model.keras`, `history.json` and then `config.json` are each written atomically;
`config.json` last, so a run directory with it is complete.

Gradient steps read the train split; early stopping and keras-tuner's objective read the
validation split that `beam.preprocess` writes (a hash of each key, `--validation_fraction`),
so every example is read once per epoch and progress bars know their totals. Data
preprocessed before that split existed is divided at training time instead, by a hash of
each example, into "fit" and "validation" parts (`TrainConfig.validation_fraction`). The
eval split (the last day, by default) is kept for `tfddn evaluate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from scipy import special

from tfddn import data, distributions, multi_worker
from tfddn.errors import UserError
from tfddn.losses import loss_for
from tfddn.models.builder import build_model
from tfddn.configs import TrainConfig
from tfddn.models.config import ModelConfig
from tfddn.resume import ResumableEarlyStopping, check_backup, write_json_atomic
from tfddn.warm_start import warm_start

__all__ = ["EpochData", "TrainConfig", "TrainingData", "compile_model",
           "fit_and_validation_datasets", "validation_split_examples",
           "keras_dataset", "load_run", "load_training_data", "new_model", "train"]

@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Everything about a preprocessed directory that building a model needs."""

    spec: object
    metadata: dict
    vocabularies: dict
    numeric_stats: dict

    @property
    def train_ctr(self) -> float:
        clicks, impressions = self.metadata["clicks"]["train"], self.metadata["impressions"]["train"]
        return clicks / impressions if impressions else 0.03


def load_training_data(data_dir: str) -> TrainingData:
    spec = data.load_data_spec(data_dir)
    metadata = data.read_metadata(data_dir)
    vocabularies = {}
    for f in spec.vocabulary_features:
        values = data.load_vocabulary(data_dir, f.name)
        vocabularies[f.name] = [int(v) for v in values] if f.dtype == "int64" else values
    return TrainingData(spec, metadata, vocabularies, metadata.get("numeric_stats", {}))


def _targets(features, labels):
    """(features, labels dict) -> (features, y) with y = [ctr, impressions, clicks] per row."""
    return features, tf.stack([labels["ctr"], labels["impressions"],
                               tf.cast(labels["clicks"], labels["ctr"].dtype)], axis=-1)


def keras_dataset(data_dir: str, spec, split: str, batch_size: int, subset: str = "all",
                  shuffle: bool = False, seed: int | None = None,
                  validation_fraction: float = 0.1) -> tf.data.Dataset:
    """A split as `(features, y)` batches for `keras.Model.fit` / `evaluate`."""
    config = data.InputConfig(batch_size=batch_size, shuffle=shuffle, seed=seed, subset=subset,
                              validation_fraction=validation_fraction)
    return data.make_dataset(data.split_files(data_dir, split), spec, config).map(
        _targets, num_parallel_calls=tf.data.AUTOTUNE)


class EpochData(NamedTuple):
    """What `fit` reads: the fit data, the validation data (None: none) and the batches
    of an epoch (None: until the data ends; Keras then shows `n/Unknown` in epoch 1)."""

    fit: tf.data.Dataset
    validation: tf.data.Dataset | None
    steps_per_epoch: int | None
    validation_examples: int | None


def validation_split_examples(metadata: dict) -> int | None:
    """Examples of the validation split written at preprocess time; None for data
    preprocessed without one (`--validation_fraction 0`, or before it existed): training
    then holds out a hash subset of the train split (`TrainConfig.validation_fraction`)."""
    if not metadata.get("split", {}).get("validation_fraction"):
        return None
    return metadata.get("examples", {}).get("validation")


def fit_and_validation_datasets(config: TrainConfig, spec, metadata: dict | None = None
                                ) -> EpochData:
    """The shuffled fit data and the fixed validation data of an epoch.

    With the validation split of `beam.preprocess` (`--validation_fraction`), fit reads
    the whole train split once per epoch, `steps_per_epoch` batches from the example
    count in `metadata.json`, so progress bars know their totals and no example is read
    only to be filtered out. Older data: the "fit" and "validation" hash subsets of the
    train split (`config.validation_fraction`), each epoch reading both.
    """
    held_out = None if metadata is None else validation_split_examples(metadata)
    if held_out is None:
        fit_ds = keras_dataset(config.data_dir, spec, "train", config.batch_size, subset="fit",
                               shuffle=True, seed=config.seed,
                               validation_fraction=config.validation_fraction)
        val_ds = keras_dataset(config.data_dir, spec, "train", config.batch_size,
                               subset="validation",
                               validation_fraction=config.validation_fraction)
        return EpochData(fit_ds, val_ds, None, None)
    fit_ds = keras_dataset(config.data_dir, spec, "train", config.batch_size, shuffle=True,
                           seed=config.seed).repeat()  # `steps_per_epoch` batches = one pass
    steps = math.ceil(metadata["examples"]["train"] / config.batch_size)
    val_ds = (keras_dataset(config.data_dir, spec, "validation", config.batch_size)
              if held_out else None)
    return EpochData(fit_ds, val_ds, steps, held_out)


def predicted_mean(y_pred, config: ModelConfig):
    """The predicted mean CTR of a REG output or of packed mixture params."""
    if not config.is_density:
        return y_pred[:, 0]
    return distributions.mixture_mean(y_pred, config.num_components, config.family)


def _mse_metric(config: ModelConfig):
    def mse(y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        return tf.square(predicted_mean(y_pred, config) - y_true[:, 0])

    return keras.metrics.MeanMetricWrapper(mse, name="mse")


def compile_model(model: keras.Model, config: ModelConfig) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=1.0),
                  loss=loss_for(config.kind, config.num_components),
                  metrics=[_mse_metric(config)])
    return model


def _strategy(cluster: multi_worker.Cluster | None = None) -> tf.distribute.Strategy:
    """`MultiWorkerMirroredStrategy` for a `TF_CONFIG` cluster of several tasks
    (`tfddn.multi_worker`), else all local GPUs when there are several, else the default
    (one GPU or the CPU)."""
    if cluster is not None:
        return multi_worker.strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def new_model(training_data: TrainingData, config: ModelConfig, seed: int | None) -> keras.Model:
    model = build_model(training_data.spec, training_data.vocabularies,
                        training_data.numeric_stats, config,
                        initial_mean=training_data.train_ctr, seed=seed)
    return compile_model(model, config)


def _callbacks(config: TrainConfig, out_dir: str, resumable: bool = True) -> list:
    """NaN guard, backup (unless not `resumable`), early stopping that survives a resume
    (after the backup, which restores the weights it reads), TensorBoard; in `out_dir`."""
    backup = os.path.join(out_dir, "backup")
    return [
        keras.callbacks.TerminateOnNaN(),
        *([keras.callbacks.BackupAndRestore(backup)] if resumable else []),
        ResumableEarlyStopping(backup, config.patience),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")),
    ]


def check_training_data(training_data: TrainingData, data_dir: str) -> None:
    """Refuses a train split a CTR model cannot learn from, saying why.

    Raises:
        UserError: no train examples, no clicks at all, or every impression clicked.
    """
    meta = training_data.metadata
    examples, clicks = meta["examples"]["train"], meta["clicks"]["train"]
    impressions = meta["impressions"]["train"]
    where = f"--data_dir {data_dir!r}: the train split"
    held_out = meta["examples"].get("validation", 0)
    if (not examples or not impressions) and held_out:
        raise UserError(f"{where} is empty: all {held_out} training examples went to the "
                        "validation split (too few keys for --validation_fraction "
                        f"{meta['split'].get('validation_fraction')}); preprocess with a "
                        "smaller --validation_fraction, or 0 to hold out at training time")
    if not examples or not impressions:
        raise UserError(f"{where} is empty (rows_read {meta.get('rows_read')}, rejected "
                        f"{meta.get('rows_rejected')}); see its dead_letter/ and metadata.json")
    if clicks == 0 or clicks == impressions:
        which = "0 clicks" if clicks == 0 else "a click for every impression"
        raise UserError(f"{where} has {which} ({clicks:,} of {impressions:,}): every CTR is "
                        f"{0 if clicks == 0 else 1}, so there is nothing to learn a CTR from. "
                        "Check the spec's clicks/impressions (or clicked) columns")


def _has_examples(dataset, known: int, limit: int = 100_000) -> bool:
    """Whether a hash-filtered subset is non-empty; counted only for small splits."""
    if known > limit:
        return True  # a 1-in-10 hash subset of > 100K keys is never empty
    return any(True for _ in dataset.take(1))


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _warm_start(model: keras.Model, run_dir: str | None) -> dict | None:
    """Warm-starts `model` from the run in `run_dir` (`tfddn.warm_start`); None if unset."""
    if not run_dir:
        return None
    previous, _, _ = load_run(run_dir)
    return warm_start(model, previous)


def train(config: TrainConfig, model_config: ModelConfig, callbacks: tuple = ()) -> dict:
    """Fits a model and saves the run. Returns the run summary (also in config.json).

    Rerunning the same call after an interruption resumes from the last finished epoch
    (`keras.callbacks.BackupAndRestore` in `RUN/backup`). `callbacks` are added to the
    standard ones (NaN guard, early stopping, backup, TensorBoard). With
    `config.warm_start_from`, the new model starts from that run's weights
    (`tfddn.warm_start.warm_start`) and the summary's `"warm_start"` is its report.

    When `TF_CONFIG` names a cluster of several tasks, every task runs this call with
    the same arguments under `MultiWorkerMirroredStrategy` (`tfddn.multi_worker`):
    `config.batch_size` is the global batch, each task reads its shard of the data, only
    the chief writes `config.run_dir` and shows progress (the others write into a
    temporary directory that they delete), and a killed run starts over (no backup).

    Raises:
        FloatingPointError: the loss became NaN or infinite (nothing is saved).
    """
    cluster = multi_worker.cluster_from_env()
    strategy = _strategy(cluster)  # first: collective ops are set up before any TF op
    if cluster is None or cluster.is_chief:
        return _train(config, model_config, callbacks, strategy, cluster, config.run_dir)
    with tempfile.TemporaryDirectory(prefix=f"tfddn-{cluster.task.replace(':', '')}-") as tmp:
        return _train(config, model_config, callbacks, strategy, cluster, tmp)


def _distributed_epoch(strategy: tf.distribute.Strategy, config: TrainConfig, spec,
                       metadata: dict) -> EpochData:
    """`fit_and_validation_datasets` for a multi-worker strategy: per-replica batches of
    `batch_size / replicas` from each task's shard (`multi_worker.sharded_records`), so
    one epoch stays `ceil(train examples / batch_size)` global steps."""
    held_out = validation_split_examples(metadata)
    if held_out is None:
        raise UserError(f"--data_dir {config.data_dir!r} has no validation split: "
                        "multi-worker training needs one (known steps per epoch and a "
                        "shardable validation set); preprocess with --validation_fraction")
    batch = multi_worker.per_replica_batch_size(config.batch_size,
                                                strategy.num_replicas_in_sync)

    def split(name: str, shuffle: bool):
        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            ds = multi_worker.sharded_records(data.split_files(config.data_dir, name), context)
            if shuffle:
                ds = ds.shuffle(data.InputConfig.shuffle_buffer, seed=config.seed).repeat()
            ds = ds.batch(batch).map(lambda s: _targets(*data.parse_examples(s, spec)),
                                     num_parallel_calls=tf.data.AUTOTUNE)
            return ds.prefetch(tf.data.AUTOTUNE)
        return strategy.distribute_datasets_from_function(dataset_fn)

    return EpochData(split("train", shuffle=True),
                     split("validation", shuffle=False) if held_out else None,
                     math.ceil(metadata["examples"]["train"] / config.batch_size), held_out)


def _train(config: TrainConfig, model_config: ModelConfig, callbacks: tuple,
           strategy: tf.distribute.Strategy, cluster: multi_worker.Cluster | None,
           out_dir: str) -> dict:
    """`train` on one task; everything is written into `out_dir`."""
    writer = cluster is None or cluster.is_chief
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(config.seed)
    training_data = load_training_data(config.data_dir)
    check_training_data(training_data, config.data_dir)
    os.makedirs(out_dir, exist_ok=True)
    backup = os.path.join(out_dir, "backup")
    resuming = check_backup(backup, {
        "model": model_config.to_dict(), "data_dir": os.path.abspath(config.data_dir),
        "batch_size": config.batch_size, "validation_fraction": config.validation_fraction,
        "seed": config.seed, "warm_start_from": config.warm_start_from}, config.restart)
    if cluster is not None and resuming:
        raise UserError(f"{backup} holds an interrupted single-machine run; multi-worker "
                        "training does not resume it: add --restart to discard it")
    spec = training_data.spec
    if cluster is None:
        epoch = fit_and_validation_datasets(config, spec, training_data.metadata)
        val_ds = epoch.validation
    else:
        epoch = _distributed_epoch(strategy, config, spec, training_data.metadata)
        val_ds = keras_dataset(config.data_dir, spec, "validation", config.batch_size)
    if epoch.validation_examples is None:
        validating = _has_examples(val_ds, training_data.metadata["examples"]["train"])
        where = (f"subset ({config.validation_fraction:.0%} of "
                 f"{training_data.metadata['examples']['train']} train examples, by hash)")
    else:
        validating = epoch.validation_examples > 0
        where = "split of --data_dir (0 examples in metadata.json)"
    if not validating and writer:
        _warn(f"the validation {where} is empty: training all {config.epochs} epochs "
              "without early stopping, and the calibration is not measured")
    with strategy.scope():
        model = new_model(training_data, model_config, config.seed)
        warm_start_report = _warm_start(model, config.warm_start_from)
    callbacks = _callbacks(config, out_dir, resumable=cluster is None) + list(callbacks)
    with (multi_worker.keras_workarounds(model, strategy, keras_dataset(
            config.data_dir, spec, "train", config.batch_size).element_spec)
          if strategy.num_replicas_in_sync > 1 else contextlib.nullcontext()):
        model.fit(epoch.fit, validation_data=epoch.validation if validating else None,
                  epochs=config.epochs, steps_per_epoch=epoch.steps_per_epoch,
                  callbacks=callbacks, verbose=config.verbose if writer else 0)
    if cluster is not None:  # no BackupAndRestore to delete it
        shutil.rmtree(backup, ignore_errors=True)
    history = next(c for c in callbacks if isinstance(c, ResumableEarlyStopping)).history
    losses = history.get("loss", [])
    if not losses or not all(math.isfinite(v) for v in losses):
        raise FloatingPointError(
            f"training diverged (loss history {losses}); no model saved. Try a lower "
            "--learning_rate or a larger --min_stddev.")
    mean_calibration = None
    if config.calibrate_mean and model_config.family == "beta":
        mean_calibration = calibrate_mean(model, model_config, keras_dataset(
            config.data_dir, spec, "train", config.batch_size))
    if validating:
        calibration = validation_calibration(model, model_config, val_ds)
        for message in calibration["warnings"] if writer else ():
            _warn(message)
    else:
        calibration = {"validation_examples": 0, "warnings": ["no validation examples"]}
    val_losses = history.get("val_loss")
    summary = {
        "model": model_config.to_dict(),
        "train": dataclasses.asdict(config),
        "epochs_run": len(losses),
        "best_val_loss": float(np.min(val_losses)) if val_losses else None,
        "data": {k: training_data.metadata[k] for k in ("examples", "clicks", "impressions")},
        "calibration": calibration,
    }
    if cluster is not None:
        summary["cluster"] = {"num_workers": cluster.num_workers, "task": cluster.task,
                              "replicas": strategy.num_replicas_in_sync}
    if mean_calibration is not None:
        summary["mean_calibration"] = mean_calibration
    if warm_start_report is not None:
        summary["warm_start"] = warm_start_report
    model_path = os.path.join(out_dir, "model.keras")
    model.save(model_path + ".tmp.keras")  # on every task: saving may read synced variables
    os.replace(model_path + ".tmp.keras", model_path)
    write_json_atomic(os.path.join(out_dir, "history.json"), history)
    write_json_atomic(os.path.join(out_dir, "config.json"), summary)  # last: done
    return summary


def calibrate_mean(model: keras.Model, config: ModelConfig, dataset) -> dict:
    """Calibration in the large of a BBDDN: one logit shift of every component mean.

    Finds `delta` such that the mixture means with `logit(m_k) + delta` predict exactly
    the observed clicks of `dataset` (`sum(mean x n) = sum(clicks)`, by bisection; the
    predicted clicks grow with delta) and adds it to the head's mean bias, so the saved
    and exported model carry it. The concentrations (and so the shape of each Beta) stay.

    Why: at CTRs of ~1% with most rows n = 1, the log loss barely sees a 20% error of the
    overall level (its cost is ~1e-4 nats a row), so early stopping can keep an epoch
    whose level is off, and a mixture's maximum-likelihood solution does not sum to the
    clicks as a one-component logistic model's does.

    Returns:
        `{"ratio_before", "logit_shift", "clicks", "impressions"}`; `logit_shift` 0 when
        `dataset` has no clicks.
    """
    from tfddn.models.builder import DENSITY_NAME

    params, n, clicks = _outputs_and_counts(model, dataset)
    clicks = float(clicks.sum())
    k, eps = config.num_components, distributions.MEAN_EPSILON
    mixture = distributions.Mixture.from_params(params, k, "beta")
    raw = special.logit(np.clip((mixture.means - eps) / (1.0 - 2.0 * eps), 1e-12, 1 - 1e-12))

    def log_ratio(delta):
        means = eps + (1.0 - 2.0 * eps) * special.expit(raw + delta)
        return math.log(np.sum(mixture.weights * means, axis=1) @ n / clicks)

    report = {"ratio_before": math.exp(log_ratio(0.0)) if clicks > 0 else None,
              "logit_shift": 0.0, "clicks": int(round(clicks)), "impressions": int(n.sum())}
    if clicks <= 0:
        return report
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if log_ratio(mid) < 0 else (lo, mid)
    delta = 0.5 * (lo + hi)
    head = model.get_layer(DENSITY_NAME).get_layer("mixture_head")
    bias = head.bias.numpy()
    bias[k:2 * k] += delta
    head.bias.assign(bias)
    report["logit_shift"] = float(delta)
    return report


def validation_calibration(model: keras.Model, config: ModelConfig, dataset) -> dict:
    """Calibration-in-the-large of a trained model on `dataset` (the validation subset).

    Returns `{"predicted_clicks_ratio": sum(mean x n) / sum(clicks), "mass_below_zero":
    the mean predictive mass of the true CTR below 0 (Gaussian kinds; 0 for BBDDN, None
    for REG), "warnings": tfddn.evaluation.calibration_warnings(...)}`; `train` prints
    the warnings, so a miscalibrated model is never written silently.
    """
    from tfddn.evaluation import calibration_warnings

    params, n, clicks = _outputs_and_counts(model, dataset)
    rows, clicks = len(n), float(clicks.sum())
    mixture = (distributions.Mixture.from_params(params, config.num_components, config.family)
               if config.is_density else None)
    mean = params[:, 0] if mixture is None else mixture.mean()
    mass = None if mixture is None or not rows else float(mixture.mass_below_zero().mean())
    result = {"predicted_clicks_ratio": float(mean @ n) / clicks if clicks > 0 else None,
              "mass_below_zero": mass, "validation_examples": rows}
    result["warnings"] = calibration_warnings({
        **result, "model": config.kind, "examples": rows, "clicks": int(round(clicks)),
        "impressions": int(round(n.sum()))})
    return result


def _outputs_and_counts(model: keras.Model, dataset) -> tuple[np.ndarray, ...]:
    """The deterministic outputs `[N, P]`, impressions `[N]` and clicks `[N]` (float64) of
    `model` over a `keras_dataset` (labels `[ctr, impressions, clicks]`)."""
    outputs, impressions, clicks = [], [], []
    for features, y in dataset:
        outputs.append(np.asarray(model(features, training=False), dtype=np.float64))
        impressions.append(y[:, 1].numpy().astype(np.float64))
        clicks.append(y[:, 2].numpy().astype(np.float64))
    if not outputs:
        return np.zeros((0, 1)), np.zeros(0), np.zeros(0)
    return np.concatenate(outputs), np.concatenate(impressions), np.concatenate(clicks)


def load_run(run_dir: str) -> tuple[keras.Model, ModelConfig, dict]:
    """The trained model of a run directory, its `ModelConfig` and its summary.

    Raises:
        FileNotFoundError: `run_dir` holds no finished training run.
    """
    if not os.path.exists(os.path.join(run_dir, "config.json")):
        raise FileNotFoundError(f"--run_dir {run_dir!r} holds no finished training run (no "
                                "config.json; `tfddn train` writes it last)")
    with open(os.path.join(run_dir, "config.json")) as fh:
        summary = json.load(fh)
    model_config = ModelConfig(**summary["model"])
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    return model, model_config, summary
