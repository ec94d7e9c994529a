"""Feature encoders: raw values in, dense vectors out (vocabulary lookup inside the model).

Clients send raw feature values (strings or integers) exactly as they appear in the
logs; the model itself maps them to indices, so a SavedModel needs no preprocessing
in front of it. Index 0 is a learned **OOV embedding** shared by every value that is
not in the vocabulary (rare in training, or new): Zeldes et al. (2018, Sec. 4) use it
so new targets get a prediction whose model uncertainty is high, and Naor et al. use
it to marginalise a feature out when measuring its saliency.

`oov_rate` replaces a random share of the values by OOV during training only, so the
OOV embedding learns "unknown value" from every kind of value, not only from the rare
ones (which may be systematically different, e.g. new advertisers).

**Marginalising a feature out** (Naor et al.) happens at the *input*, so it works
through any encoder, the Keras model and an exported SavedModel alike: two reserved
raw values are never in a vocabulary (the layers refuse vocabularies containing them):

- `OOV_SENTINEL` (`OOV_SENTINEL_INT` for int64 features) is an ordinary unknown value,
  so it maps to the learned OOV row;
- `MEAN_SENTINEL` (`MEAN_SENTINEL_INT`) maps to the layer's non-trainable
  `mean_embedding`, the frequency-weighted average of the embedding rows, set after
  training with `set_mean_embedding` (see `tfddn.explain.fit_mean_embeddings`).

In a token list or history each item is replaced on its own; padding stays padding.

**Vocabularies are assets, not config.** A layer's `get_config` holds `vocabulary_size`,
never the values (at the paper's scale, hundreds of thousands of strings in the
configs made `model.keras` 146 MB); `save_assets` writes them to `vocabulary.json` in the
`.keras` archive and `load_assets` reads them back. A config from before this change,
with its `vocabulary` list, still loads. For a SavedModel, `vocabulary_files` backs
every lookup table by a text file while `tf.saved_model.save` runs, so the export
carries each vocabulary as a SavedModel asset (`assets/`) instead of graph constants.
"""

from __future__ import annotations

import contextlib
import json
import os

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfddn.spec import PAD_INT, PAD_STRING

__all__ = ["MEAN_SENTINEL", "MEAN_SENTINEL_INT", "OOV_SENTINEL", "OOV_SENTINEL_INT",
           "CategoricalEmbedding", "NumericFeature", "SequenceEmbedding", "mean_sentinel",
           "oov_sentinel", "vocabulary_files"]

OOV_SENTINEL = "\x00tfddn:oov"
"""A string value that is never in a vocabulary: looked up as OOV (marginalisation)."""
MEAN_SENTINEL = "\x00tfddn:mean"
"""A string value that is never in a vocabulary: embedded as the layer's mean embedding."""
OOV_SENTINEL_INT = -(2**62)
"""The int64 counterpart of `OOV_SENTINEL`."""
MEAN_SENTINEL_INT = -(2**62) - 1
"""The int64 counterpart of `MEAN_SENTINEL`."""


def oov_sentinel(dtype_kind: str):
    """The reserved OOV raw value of a `"string"` or `"int64"` feature."""
    return OOV_SENTINEL_INT if dtype_kind == "int64" else OOV_SENTINEL


def mean_sentinel(dtype_kind: str):
    """The reserved mean-embedding raw value of a `"string"` or `"int64"` feature."""
    return MEAN_SENTINEL_INT if dtype_kind == "int64" else MEAN_SENTINEL


_EMPTY_VOCABULARY = {"string": "\x00tfddn:empty-vocabulary", "int64": -(2**62) - 2}
"""The one entry of an empty vocabulary's lookup (Keras lookups refuse an empty one):
a reserved value that never occurs, so every real value is OOV (e.g. a simulated day
on which no target reached `min_count`). It owns one unused table row."""


VOCABULARY_ASSET = "vocabulary.json"
"""A layer's vocabulary in the `.keras` archive: a JSON list (any string survives)."""


def _lookup(vocabulary, dtype: str, masked: bool):
    if len(vocabulary) == 0:
        vocabulary = [_EMPTY_VOCABULARY[dtype]]
    if dtype == "int64":
        return keras.layers.IntegerLookup(
            vocabulary=np.asarray(vocabulary, dtype="int64"), num_oov_indices=1,
            mask_token=PAD_INT if masked else None, oov_token=-2)
    return keras.layers.StringLookup(vocabulary=list(vocabulary), num_oov_indices=1,
                                     mask_token=PAD_STRING if masked else None)


class _MeanIndexEmbedding(keras.layers.Embedding):
    """`keras.layers.Embedding` whose index `input_dim` (one past the table) returns
    the owning layer's `mean_embedding` (no weights of its own beyond the table, so
    saved models keep their layout). Every subclass of `CategoricalEmbedding` that
    embeds `self.indices(...)` with `self.embedding` gets the mean embedding for free.
    """

    def __init__(self, input_dim, output_dim, mean_embedding, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        self._mean_embedding = mean_embedding  # a callable: not tracked as a weight

    def call(self, inputs):
        is_mean = ops.equal(inputs, self.input_dim)
        vectors = super().call(ops.where(is_mean, ops.zeros_like(inputs), inputs))
        mean = ops.cast(self._mean_embedding(), vectors.dtype)
        return ops.where(ops.expand_dims(is_mean, -1), mean, vectors)


def _validate(name, vocabulary, dtype, embedding_dim, oov_rate):
    if dtype not in ("string", "int64"):
        raise ValueError(f"{name}: dtype must be 'string' or 'int64'. Received: dtype={dtype!r}")
    if not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ValueError(f"{name}: embedding_dim must be a positive integer. "
                         f"Received: embedding_dim={embedding_dim!r}")
    if not 0.0 <= oov_rate < 1.0:
        raise ValueError(f"{name}: oov_rate must be in [0, 1). Received: oov_rate={oov_rate!r}")
    _validate_vocabulary(name, vocabulary, dtype)


def _normalise(vocabulary, dtype):
    return [int(v) for v in vocabulary] if dtype == "int64" else [str(v) for v in vocabulary]


def _validate_vocabulary(name, vocabulary, dtype):
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError(f"{name}: the vocabulary has duplicate values")
    reserved = {oov_sentinel(dtype), mean_sentinel(dtype)} & set(vocabulary)
    if reserved:
        raise ValueError(f"{name}: the vocabulary contains the reserved marginalisation "
                         f"value(s) {sorted(map(repr, reserved))}")


@keras.saving.register_keras_serializable(package="tfddn")
class CategoricalEmbedding(keras.layers.Layer):
    """Raw categorical value -> embedding, with a learned OOV row at index 0.

    Args:
        vocabulary: the in-vocabulary values (OOV is not listed). None only when a saved
            layer is restored from its config: the values then come from the model's
            assets (`load_assets`), and until then the layer refuses to look anything up.
        dtype_kind: `"string"` or `"int64"`, the raw value type.
        embedding_dim: size of the embedding.
        oov_rate: share of values replaced by OOV while training.
        seed: seed of the OOV replacement.
        vocabulary_size: the number of values, what `get_config` stores in place of them.

    Call arguments:
        inputs: raw values, shape `(batch,)`; `oov_sentinel(dtype_kind)` is OOV,
            `mean_sentinel(dtype_kind)` gets `mean_embedding`.
        training: OOV replacement happens only when True.
        force_oov: if True, every value is treated as OOV (marginalisation).

    Input shape: `(batch,)`. Output shape: `(batch, embedding_dim)`.

    Weights: `embedding/embeddings` (trainable, row 0 = OOV), `mean_embedding` and
    `mean_embedding_impressions` (non-trainable; zero until `set_mean_embedding`).
    """

    # Embedding rows before the OOV row that hold padding: 1 makes the lookup map the
    # padding value to index 0, OOV to 1 and the vocabulary from 2 (`SequenceEmbedding`).
    _padding_rows = 0

    def __init__(self, vocabulary=None, dtype_kind="string", embedding_dim=8, oov_rate=0.0,
                 seed=None, vocabulary_size=None, **kwargs):
        super().__init__(**kwargs)
        if vocabulary is None and vocabulary_size is None:
            raise ValueError(f"{self.name}: pass a vocabulary (or, when restoring a saved "
                             "layer whose vocabulary is an asset, its vocabulary_size)")
        if vocabulary is not None:
            vocabulary = _normalise(vocabulary, dtype_kind)
        _validate(self.name, vocabulary or [], dtype_kind, embedding_dim, oov_rate)
        size = len(vocabulary) if vocabulary is not None else int(vocabulary_size)
        if vocabulary_size is not None and size != vocabulary_size:
            raise ValueError(f"{self.name}: the vocabulary has {size} values. Received: "
                             f"vocabulary_size={vocabulary_size}")
        self.vocabulary = vocabulary  # None until `load_assets` when built from a config
        self.vocabulary_size = size
        self.dtype_kind = dtype_kind
        self.embedding_dim = embedding_dim
        self.oov_rate = float(oov_rate)
        self.seed = seed
        self.lookup = _lookup(vocabulary or [], dtype_kind, masked=self._padding_rows > 0)
        self.embedding = _MeanIndexEmbedding(  # an empty vocabulary keeps one unused row
            self._padding_rows + max(size, 1) + 1, embedding_dim,
            lambda: self.mean_embedding, name="embedding")
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def input_size(self) -> int:
        """Rows of the embedding table: the vocabulary plus OOV."""
        return max(self.vocabulary_size, 1) + 1

    def indices(self, inputs, training=False):
        ids = self._lookup_ids(inputs)
        if training and self.oov_rate > 0:
            drop = keras.random.uniform(ops.shape(ids), seed=self.seed_generator) < self.oov_rate
            ids = ops.where(drop, ops.zeros_like(ids), ids)
        return ids

    def _lookup_ids(self, inputs):
        """Vocabulary indices; the mean sentinel -> `embedding.input_dim` (mean row)."""
        if self.vocabulary is None:
            raise ValueError(f"{self.name}: the vocabulary is not loaded (the layer was "
                             "built from a config alone); load the model with "
                             "keras.saving.load_model, which reads it from the assets")
        ids = self.lookup(inputs)
        sentinel = tf.constant(mean_sentinel(self.dtype_kind), dtype=inputs.dtype)
        return tf.where(tf.equal(inputs, sentinel),
                        tf.cast(self.embedding.input_dim, ids.dtype), ids)

    def build(self, input_shape):
        self.embedding.build(tuple(input_shape))
        self.mean_embedding = self.add_weight(
            shape=(self.embedding_dim,), initializer="zeros", trainable=False,
            name="mean_embedding")
        self.mean_embedding_impressions = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="mean_embedding_impressions")
        self.built = True

    def call(self, inputs, training=False, force_oov=False):
        ids = self.indices(inputs, training=training)
        if force_oov:
            ids = ops.zeros_like(ids)
        return self.embedding(ids)

    @property
    def has_mean_embedding(self) -> bool:
        """Whether `set_mean_embedding` has been called (and saved with the model)."""
        return self.built and float(self.mean_embedding_impressions.numpy()) > 0

    def row_counts(self, values, weights=None) -> np.ndarray:
        """Weight (e.g. impressions) per embedding row of a batch of raw values.

        Args:
            values: raw values shaped like the layer's input.
            weights: per-example weights `(batch,)` (default 1); padding counts nothing.

        Returns:
            float64 array `(embedding rows,)`, unknown values summed in the OOV row.
        """
        ids = np.asarray(self.indices(tf.convert_to_tensor(values), training=False))
        w = np.ones(ids.shape[:1]) if weights is None else np.asarray(weights, np.float64)
        w = np.broadcast_to(w.reshape(w.shape + (1,) * (ids.ndim - 1)), ids.shape)
        used = (ids >= self._padding_rows) & (ids < self.embedding.input_dim)
        return np.bincount(ids[used], weights=w[used], minlength=self.embedding.input_dim)

    def set_mean_embedding(self, counts) -> np.ndarray:
        """Sets `mean_embedding = sum_i c_i E_i / sum_i c_i` over the embedding rows.

        With `counts` the training impressions per row (`row_counts`), this is the
        frequency-weighted mean embedding of Naor et al., the OOV row weighted by the
        impressions of the values too rare for a row of their own.

        Args:
            counts: non-negative weights, one per embedding row (the padding row of a
                sequence feature is ignored).

        Returns:
            The new mean embedding, shape `(embedding_dim,)`.
        """
        if not self.built:
            raise ValueError(f"{self.name}: build the layer (call the model once) before "
                             "set_mean_embedding")
        counts = np.array(counts, dtype=np.float64)  # a copy: padding rows are zeroed
        rows = self.embedding.input_dim
        if counts.shape != (rows,) or not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise ValueError(f"{self.name}: counts must be {rows} finite non-negative "
                             f"weights. Received: counts.shape={counts.shape}")
        counts[:self._padding_rows] = 0.0
        total = counts.sum()
        if total <= 0:
            raise ValueError(f"{self.name}: counts sum to {total}; nothing to average")
        table = np.asarray(self.embedding.embeddings.numpy(), dtype=np.float64)
        mean = counts @ table / total
        self.mean_embedding.assign(mean.astype(self.mean_embedding.dtype))
        self.mean_embedding_impressions.assign(total)
        return mean

    def load_own_variables(self, store):
        # Models saved before the mean embedding existed have no own variables: keep
        # the zero (unset) mean embedding instead of refusing to load them.
        if len(store.keys()) == 0:
            return
        super().load_own_variables(store)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.embedding_dim)

    def save_assets(self, dir_path):
        """Writes the vocabulary to `dir_path/vocabulary.json` (the `.keras` archive)."""
        if self.vocabulary is None:
            raise ValueError(f"{self.name}: cannot save a layer whose vocabulary was "
                             "never loaded")
        with open(os.path.join(dir_path, VOCABULARY_ASSET), "w", encoding="utf-8") as fh:
            json.dump(self.vocabulary, fh)  # ASCII with escapes: any str survives

    def load_assets(self, dir_path):
        """Reads the vocabulary that `save_assets` wrote. A model saved before the
        vocabulary was an asset has none: its config carried the values."""
        path = os.path.join(dir_path, VOCABULARY_ASSET) if dir_path else None
        if path is None or not os.path.exists(path):
            if self.vocabulary is None:
                raise ValueError(f"{self.name}: the saved model has neither a vocabulary "
                                 f"asset ({VOCABULARY_ASSET}) nor a vocabulary in its config")
            return
        with open(path, encoding="utf-8") as fh:
            vocabulary = _normalise(json.load(fh), self.dtype_kind)
        _validate_vocabulary(self.name, vocabulary, self.dtype_kind)
        if len(vocabulary) != self.vocabulary_size:
            raise ValueError(f"{self.name}: {path} holds {len(vocabulary)} values, the "
                             f"config says vocabulary_size={self.vocabulary_size}")
        if vocabulary:  # an empty one keeps the placeholder lookup (`_EMPTY_VOCABULARY`)
            self.lookup.set_vocabulary(np.asarray(vocabulary, dtype="int64")
                                       if self.dtype_kind == "int64" else vocabulary)
        self.vocabulary = vocabulary

    def vocabulary_file_lines(self) -> list[str]:
        """The lookup's values as lines of a text vocabulary file (`vocabulary_files`)."""
        if self.vocabulary is None:
            raise ValueError(f"{self.name}: the vocabulary is not loaded")
        values = self.vocabulary or [_EMPTY_VOCABULARY[self.dtype_kind]]
        if self.dtype_kind == "int64":
            return [str(v) for v in values]
        bad = [v for v in values if "\n" in v or "\r" in v]
        if bad:
            raise ValueError(f"{self.name}: vocabulary values with a line break cannot go "
                             f"into a text vocabulary file: {bad[:3]!r}")
        return list(values)

    def get_config(self):
        base_config = super().get_config()
        config = {"vocabulary_size": self.vocabulary_size, "dtype_kind": self.dtype_kind,
                  "embedding_dim": self.embedding_dim, "oov_rate": self.oov_rate,
                  "seed": self.seed}
        return {**base_config, **config}


@keras.saving.register_keras_serializable(package="tfddn")
class SequenceEmbedding(CategoricalEmbedding):
    """A padded list of raw values (title tokens, a browsing history) -> pooled embedding.

    Padding (`""`, or `-1` for int64) is masked; out-of-vocabulary items share the
    OOV embedding and mean-sentinel items take `mean_embedding`, both counted in the
    average. An all-padding row pools to the zero vector.

    Input shape: `(batch, max_length)`. Output shape: `(batch, embedding_dim)`.
    """

    _padding_rows = 1  # index 0 is the padding mask, 1 the OOV row, the vocabulary from 2

    def indices(self, inputs, training=False):
        ids = self._lookup_ids(inputs)
        if training and self.oov_rate > 0:
            drop = keras.random.uniform(ops.shape(ids), seed=self.seed_generator) < self.oov_rate
            ids = ops.where(ops.logical_and(drop, ids > 0), ops.ones_like(ids), ids)
        return ids

    def call(self, inputs, training=False, force_oov=False):
        ids = self.indices(inputs, training=training)
        mask = ops.cast(ids > 0, self.compute_dtype)
        if force_oov:
            ids = ops.where(ids > 0, ops.ones_like(ids), ids)
        vectors = self.embedding(ids) * ops.expand_dims(mask, -1)
        count = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
        return ops.sum(vectors, axis=1) / count

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim)


@contextlib.contextmanager
def vocabulary_files(model: keras.Model, directory: str):
    """Within the block, every `CategoricalEmbedding` of `model` looks values up in a
    table initialised from a text file (one value per line) written into `directory`.

    `tf.saved_model.save` (`keras.export.ExportArchive.write_out`) run inside the block
    copies each file into the SavedModel's `assets/`, and the served graph initialises
    its tables from them, instead of carrying every vocabulary as constants in
    `saved_model.pb`. The in-memory tables are put back on exit.

    Yields:
        The written files by layer name.
    """
    layers = [layer for layer in model._flatten_layers()  # every nested layer, once
              if isinstance(layer, CategoricalEmbedding)]
    swapped, files = [], {}
    try:
        for layer in layers:
            path = os.path.join(directory, f"{layer.name}.vocabulary.txt")
            with open(path, "w", encoding="utf-8", newline="\n") as fh:
                fh.write("".join(f"{line}\n" for line in layer.vocabulary_file_lines()))
            swapped.append((layer, layer.lookup.lookup_table))
            layer.lookup.set_vocabulary(path)
            files[layer.name] = path
        yield files
    finally:
        for layer, table in swapped:
            layer.lookup.lookup_table = table


@keras.saving.register_keras_serializable(package="tfddn")
class NumericFeature(keras.layers.Layer):
    """A raw number -> `(x - mean) / std` with training-set statistics, shape `(batch, 1)`.

    Args:
        mean: training mean of the feature.
        std: training standard deviation (a zero std is treated as 1).
    """

    def __init__(self, mean=0.0, std=1.0, **kwargs):
        super().__init__(**kwargs)
        if not np.isfinite(mean) or not np.isfinite(std) or std < 0:
            raise ValueError(f"{self.name}: mean and std must be finite, std >= 0. "
                             f"Received: mean={mean}, std={std}")
        self.mean = float(mean)
        self.std = float(std) if std > 0 else 1.0

    def call(self, inputs):
        x = ops.cast(ops.expand_dims(inputs, -1), self.compute_dtype)
        return (x - self.mean) / self.std

    def compute_output_shape(self, input_shape):
        return (*input_shape, 1)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}
