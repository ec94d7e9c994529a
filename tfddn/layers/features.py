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
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["CategoricalEmbedding", "NumericFeature", "SequenceEmbedding"]

_PAD_STRING = ""
_PAD_INT = -1


def _lookup(vocabulary, dtype: str, masked: bool):
    if dtype == "int64":
        return keras.layers.IntegerLookup(
            vocabulary=np.asarray(vocabulary, dtype="int64"), num_oov_indices=1,
            mask_token=_PAD_INT if masked else None, oov_token=-2)
    return keras.layers.StringLookup(vocabulary=list(vocabulary), num_oov_indices=1,
                                     mask_token=_PAD_STRING if masked else None)


def _validate(name, vocabulary, dtype, embedding_dim, oov_rate):
    if dtype not in ("string", "int64"):
        raise ValueError(f"{name}: dtype must be 'string' or 'int64'. Received: dtype={dtype!r}")
    if not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ValueError(f"{name}: embedding_dim must be a positive integer. "
                         f"Received: embedding_dim={embedding_dim!r}")
    if not 0.0 <= oov_rate < 1.0:
        raise ValueError(f"{name}: oov_rate must be in [0, 1). Received: oov_rate={oov_rate!r}")
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError(f"{name}: the vocabulary has duplicate values")


@keras.saving.register_keras_serializable(package="tfddn")
class CategoricalEmbedding(keras.layers.Layer):
    """Raw categorical value -> embedding, with a learned OOV row at index 0.

    Args:
        vocabulary: the in-vocabulary values (OOV is not listed).
        dtype_kind: `"string"` or `"int64"`, the raw value type.
        embedding_dim: size of the embedding.
        oov_rate: share of values replaced by OOV while training.
        seed: seed of the OOV replacement.

    Call arguments:
        inputs: raw values, shape `(batch,)`.
        training: OOV replacement happens only when True.
        force_oov: if True, every value is treated as OOV (marginalisation).

    Input shape: `(batch,)`. Output shape: `(batch, embedding_dim)`.
    """

    def __init__(self, vocabulary, dtype_kind="string", embedding_dim=8, oov_rate=0.0,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        vocabulary = [int(v) for v in vocabulary] if dtype_kind == "int64" else [
            str(v) for v in vocabulary]
        _validate(self.name, vocabulary, dtype_kind, embedding_dim, oov_rate)
        self.vocabulary = vocabulary
        self.dtype_kind = dtype_kind
        self.embedding_dim = embedding_dim
        self.oov_rate = float(oov_rate)
        self.seed = seed
        self.lookup = _lookup(vocabulary, dtype_kind, masked=False)
        self.embedding = keras.layers.Embedding(len(vocabulary) + 1, embedding_dim,
                                                name="embedding")
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def input_size(self) -> int:
        """Rows of the embedding table: the vocabulary plus OOV."""
        return len(self.vocabulary) + 1

    def indices(self, inputs, training=False):
        ids = self.lookup(inputs)
        if training and self.oov_rate > 0:
            drop = keras.random.uniform(ops.shape(ids), seed=self.seed_generator) < self.oov_rate
            ids = ops.where(drop, ops.zeros_like(ids), ids)
        return ids

    def build(self, input_shape):
        self.embedding.build(tuple(input_shape))
        self.built = True

    def call(self, inputs, training=False, force_oov=False):
        ids = self.indices(inputs, training=training)
        if force_oov:
            ids = ops.zeros_like(ids)
        return self.embedding(ids)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.embedding_dim)

    def get_config(self):
        base_config = super().get_config()
        config = {"vocabulary": self.vocabulary, "dtype_kind": self.dtype_kind,
                  "embedding_dim": self.embedding_dim, "oov_rate": self.oov_rate,
                  "seed": self.seed}
        return {**base_config, **config}


@keras.saving.register_keras_serializable(package="tfddn")
class SequenceEmbedding(CategoricalEmbedding):
    """A padded list of raw values (title tokens, a browsing history) -> mean embedding.

    Padding (`""`, or `-1` for int64) is masked; out-of-vocabulary items share the
    OOV embedding. An all-padding row pools to the zero vector.

    Input shape: `(batch, max_length)`. Output shape: `(batch, embedding_dim)`.
    """

    def __init__(self, vocabulary, dtype_kind="string", embedding_dim=8, oov_rate=0.0,
                 seed=None, **kwargs):
        super().__init__(vocabulary, dtype_kind, embedding_dim, oov_rate, seed, **kwargs)
        # Index 0 is the padding mask, 1 the OOV row, the vocabulary from 2.
        self.lookup = _lookup(self.vocabulary, dtype_kind, masked=True)
        self.embedding = keras.layers.Embedding(len(self.vocabulary) + 2, embedding_dim,
                                                name="embedding")

    def indices(self, inputs, training=False):
        ids = self.lookup(inputs)
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
