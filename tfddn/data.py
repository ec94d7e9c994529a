"""tf.data input: Beam-preprocessed TFRecords -> batches of (features, labels).

The layout written by `beam.preprocess` (see that module) is

    DIR/train/part-*.tfrecord.gz   DIR/eval/part-*.tfrecord.gz
    DIR/vocab/<feature>.txt        DIR/metadata.json   DIR/spec.json

Every `tf.train.Example` holds each spec feature under its own name and the labels
under the reserved keys `clicks`, `impressions` (int64) and, when the spec has a
CPC column, `cpc` (float). The parsed batches are what the models consume:

- categorical feature: `(batch,)` string or int64 tensor of raw values (the
  vocabulary lookup happens inside the model so that serving takes raw values);
- numeric feature: `(batch,)` float32;
- token list / history: `(batch, max_length)` padded with `PAD_STRING` (or
  `PAD_INT` for int64 values) and truncated to the spec's `max_length`, keeping the
  first items (histories are stored most recent first);
- labels: `clicks`, `impressions`, the empirical `ctr = clicks / impressions`
  (float32), and `cpc` when present.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from tfddn.spec import PAD_INT, PAD_STRING, Feature, FeatureSpec, load_spec

__all__ = [
    "PAD_INT",
    "PAD_STRING",
    "InputConfig",
    "feature_description",
    "features_from_columns",
    "load_data_spec",
    "load_vocabulary",
    "make_dataset",
    "parse_examples",
    "features_from_raw",
    "parse_features",
    "raw_from_features",
    "raw_signature",
    "read_metadata",
    "split_files",
]



@dataclasses.dataclass(frozen=True)
class InputConfig:
    """How to read a split.

    Attributes:
        batch_size: examples per batch.
        shuffle: shuffle files and examples (training); off gives a deterministic order.
        shuffle_buffer: examples held by the shuffle buffer.
        num_epochs: passes over the data; `None` repeats forever.
        seed: shuffle seed, for reproducible runs.
        drop_remainder: drop the last partial batch.
        subset: `"all"` examples, or a deterministic hash split of them into `"fit"`
            (for gradient steps) and `"validation"` (early stopping and tuning), so
            the eval split stays untouched until evaluation.
        validation_fraction: share of examples in the `"validation"` subset.
    """

    batch_size: int = 1024
    shuffle: bool = True
    shuffle_buffer: int = 10_000
    num_epochs: int | None = 1
    seed: int | None = None
    drop_remainder: bool = False
    subset: str = "all"
    validation_fraction: float = 0.1

    def __post_init__(self):
        if self.subset not in ("all", "fit", "validation"):
            raise ValueError("subset must be 'all', 'fit' or 'validation'. "
                             f"Received: subset={self.subset!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError("validation_fraction must be in (0, 1). "
                             f"Received: validation_fraction={self.validation_fraction}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={self.batch_size}")
        if self.shuffle_buffer < 1:
            raise ValueError("shuffle_buffer must be >= 1. "
                             f"Received: shuffle_buffer={self.shuffle_buffer}")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None. Received: {self.num_epochs}")


def _tf_dtype(feature: Feature) -> tf.DType:
    if feature.is_numeric:
        return tf.float32
    return tf.int64 if feature.dtype == "int64" else tf.string


def feature_description(spec: FeatureSpec, labels: bool = True) -> dict:
    """The `tf.io.parse_example` description of the TFRecords for `spec` (without the
    labels: of the features only, for scoring serialized examples)."""
    desc = {}
    for f in spec.features:
        if f.is_sequence:
            desc[f.name] = tf.io.RaggedFeature(_tf_dtype(f), row_splits_dtype=tf.int64)
        else:
            desc[f.name] = tf.io.FixedLenFeature([], _tf_dtype(f))
    if not labels:
        return desc
    desc["clicks"] = tf.io.FixedLenFeature([], tf.int64)
    desc["impressions"] = tf.io.FixedLenFeature([], tf.int64)
    if spec.cpc:
        desc["cpc"] = tf.io.FixedLenFeature([], tf.float32)
    return desc


def _padded(items: tf.RaggedTensor, f: Feature) -> tf.Tensor:
    """A batch of token lists / histories, padded with `f.pad` or cut to `max_length`."""
    return items.to_tensor(default_value=f.pad, shape=[None, f.max_length])


def _model_inputs(parsed: dict, spec: FeatureSpec) -> dict:
    return {f.name: _padded(parsed[f.name], f) if f.is_sequence else parsed[f.name]
            for f in spec.features}


def raw_signature(spec: FeatureSpec) -> dict[str, tf.TensorSpec]:
    """The exported signatures' inputs: every feature as logged, one value per row (a
    token list / history as one separator-joined string, numbers as numbers)."""
    out = {}
    for f in spec.features:
        dtype = (tf.float32 if f.is_numeric else tf.string if f.is_sequence
                 else tf.as_dtype(f.dtype))
        out[f.name] = tf.TensorSpec([None], dtype, name=f.name)
    return out


def features_from_raw(raw: dict, spec: FeatureSpec) -> dict[str, tf.Tensor]:
    """Raw rows (`raw_signature`) -> the model's inputs, in the graph: each token list /
    history split by its separator, empty items dropped, int64 items parsed, padded or
    cut to `max_length` (as `Feature.items` and `parse_examples` do)."""
    features = {}
    for f in spec.features:
        value = raw[f.name]
        if f.is_sequence:
            items = tf.strings.split(value, sep=f.separator)
            items = tf.ragged.boolean_mask(items, tf.strings.length(items) > 0)
            if f.dtype == "int64":
                items = tf.strings.to_number(items, tf.int64)
            value = _padded(items, f)
        features[f.name] = value
    return features


def raw_from_features(features: dict, spec: FeatureSpec) -> dict[str, tf.Tensor]:
    """The inverse of `features_from_raw`: padded token lists joined back into strings."""
    raw = {}
    for f in spec.features:
        value = tf.convert_to_tensor(features[f.name])
        if f.is_sequence:
            items = tf.ragged.boolean_mask(value, tf.not_equal(value, f.pad))
            if f.dtype == "int64":
                items = tf.strings.as_string(items)
            value = tf.strings.reduce_join(items, axis=-1, separator=f.separator)
        raw[f.name] = value
    return raw


def parse_features(serialized: tf.Tensor, spec: FeatureSpec) -> dict:
    """Parses a batch of serialised examples (no labels needed) into the model inputs."""
    return _model_inputs(tf.io.parse_example(serialized, feature_description(spec, False)),
                         spec)


def parse_examples(serialized: tf.Tensor, spec: FeatureSpec):
    """Parses a batch of serialised examples into `(features, labels)` dicts."""
    parsed = tf.io.parse_example(serialized, feature_description(spec))
    features = _model_inputs(parsed, spec)
    clicks = tf.cast(parsed["clicks"], tf.float32)
    impressions = tf.cast(parsed["impressions"], tf.float32)
    labels = {
        "clicks": clicks,
        "impressions": impressions,
        "ctr": clicks / tf.maximum(impressions, 1.0),
    }
    if spec.cpc:
        labels["cpc"] = parsed["cpc"]
    return features, labels


def features_from_columns(spec: FeatureSpec, columns) -> dict[str, tf.Tensor]:
    """Raw columns (lists, numpy or Arrow arrays by the spec's names) -> model inputs.

    The same tensors `parse_examples` yields: token lists and histories (Python or
    Arrow lists of values) padded or cut to `max_length`; everything else cast to the
    spec's dtype. For scoring rows that never went through TFRecords (candidation,
    the simulator).
    """
    features = {}
    for f in spec.features:
        if f.name not in columns:
            raise ValueError(f"column {f.name!r} of the spec is missing. Received: "
                             f"{sorted(columns)}")
        values = columns[f.name]
        if hasattr(values, "to_pylist"):
            values = values.to_pylist()
        if f.is_sequence:
            ragged = tf.ragged.constant([list(v) for v in values], dtype=_tf_dtype(f),
                                        row_splits_dtype=tf.int64)
            features[f.name] = _padded(ragged, f)
        else:
            features[f.name] = tf.constant(np.asarray(values), dtype=_tf_dtype(f))
    return features


def split_files(data_dir: str, split: str) -> list[str]:
    """The TFRecord shards of `split` ("train", "validation" or "eval") under a
    preprocessed dir."""
    pattern = os.path.join(data_dir, split, "*.tfrecord.gz")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord shards match {pattern}; "
                                "run `tfddn preprocess` first")
    return files


def _in_validation(record: tf.Tensor, fraction: float) -> tf.Tensor:
    """Deterministic membership of a serialised example in the validation subset."""
    return tf.strings.to_hash_bucket_fast(record, 10_000) < int(round(fraction * 10_000))


def make_dataset(files: str | list[str], spec: FeatureSpec,
                 config: InputConfig = InputConfig()) -> tf.data.Dataset:
    """A batched, parsed, prefetched dataset of `(features, labels)`.

    Args:
        files: a glob or a list of gzip TFRecord shards.
        spec: the feature spec the shards were written with.
        config: batching and shuffling.
    """
    if isinstance(files, str):
        files = sorted(tf.io.gfile.glob(files))
    if not files:
        raise FileNotFoundError("make_dataset: no input files")
    ds = tf.data.Dataset.from_tensor_slices(files)
    if config.shuffle:
        ds = ds.shuffle(len(files), seed=config.seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not config.shuffle,
    )
    if config.subset != "all":
        ds = ds.filter(lambda record: _in_validation(record, config.validation_fraction)
                       == (config.subset == "validation"))
    if config.shuffle:
        ds = ds.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
    if config.num_epochs != 1:
        ds = ds.repeat(config.num_epochs)
    ds = ds.batch(config.batch_size, drop_remainder=config.drop_remainder)
    ds = ds.map(lambda s: parse_examples(s, spec), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=not config.shuffle)
    return ds.prefetch(tf.data.AUTOTUNE)


def read_metadata(data_dir: str) -> dict:
    """The `metadata.json` that `beam.preprocess` wrote into `data_dir`.

    Raises:
        FileNotFoundError: `data_dir` is not a finished preprocessing output.
    """
    path = os.path.join(data_dir, "metadata.json")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"--data_dir {data_dir!r} is not a finished `tfddn "
                                f"preprocess` output: it has no metadata.json")
    with tf.io.gfile.GFile(path) as fh:
        return json.load(fh)


def load_data_spec(data_dir: str) -> FeatureSpec:
    """The spec a preprocessed directory was written with."""
    read_metadata(data_dir)  # a clear error for anything but a finished output
    return load_spec(os.path.join(data_dir, "spec.json"))


def load_vocabulary(data_dir: str, feature: str) -> list[str]:
    """The vocabulary of `feature`, most frequent first (OOV is not listed)."""
    with tf.io.gfile.GFile(os.path.join(data_dir, "vocab", f"{feature}.txt")) as fh:
        return [line.rstrip("\n") for line in fh if line.rstrip("\n")]
