"""Attention over the browsing history and over feature interactions (Naor et al.).

Naor et al. debug a large recommender by looking at *where the model looks*: which
item of the user's browsing history it relies on for a given target, and which
feature pairs it combines. Both are attention layers whose weights are outputs, so
`tfddn.models.builder.attention_model` can read them off a trained (or loaded) model.

* `SequenceItemEmbedding`: a history of raw item ids -> one embedding per item and the
  padding mask (the per-item variant of `SequenceEmbedding`, same vocabulary, OOV and
  padding conventions, so it is a drop-in `encode_<feature>` layer).
* `HistoryAttention`: the history pooled into one vector with target-aware attention
  (the query is the target's representation, as in DIN): item `i` of the history gets
  `a_i = softmax_i(e_i . W t / sqrt(d))` over the non-padding items, and the pooled
  vector is `sum_i a_i e_i`. A fully padded history gives zero weights and the zero
  vector (never NaN).
* `FieldInteractionAttention`: multi-head self-attention over the field embeddings
  (AutoInt-style), residual, flattened; the map `[batch, heads, fields, fields]` says
  which fields each field attends to.

References:
    Naor et al., "Debugging large scale deep recommender systems using uncertainty
    estimations and attention" (attention over browsing history and feature
    interactions). Zhou et al. 2018, "Deep Interest Network" (target-aware history
    attention). Song et al. 2019, "AutoInt" (self-attention over field embeddings).

Example:
    >>> items, mask = SequenceItemEmbedding(["a1", "a2"], embedding_dim=4)(history)
    >>> pooled, weights = HistoryAttention()(target_vector, items, mask)
"""

from __future__ import annotations

import math

import keras
from keras import ops

from tfddn.layers.features import SequenceEmbedding

__all__ = ["FieldInteractionAttention", "HistoryAttention", "SequenceItemEmbedding"]

_MASKED_SCORE = -1e9  # scores are computed in float32, so this cannot overflow


def _positive_int(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive integer. "
                         f"Received: {name}={value!r}")
    return value


@keras.saving.register_keras_serializable(package="tfddn")
class SequenceItemEmbedding(SequenceEmbedding):
    """A padded list of raw values -> one embedding per item plus the padding mask.

    Same arguments, vocabulary, OOV row and training-time OOV replacement as
    `SequenceEmbedding`; instead of the mean it returns the items, so that an
    attention layer can pool them. Padded positions have zero vectors.

    Call arguments:
        inputs: raw values, shape `(batch, max_length)`, padded with `""` / `-1`.
        training: OOV replacement happens only when True.
        force_oov: if True, every non-padding item is treated as OOV.

    Input shape: `(batch, max_length)`.
    Output shape: `(batch, max_length, embedding_dim)` and a bool mask
    `(batch, max_length)`, True on non-padding items.
    """

    def call(self, inputs, training=False, force_oov=False):
        ids = self.indices(inputs, training=training)
        mask = ids > 0
        if force_oov:
            ids = ops.where(mask, ops.ones_like(ids), ids)
        vectors = self.embedding(ids) * ops.expand_dims(ops.cast(mask, self.compute_dtype), -1)
        return vectors, mask

    def compute_output_spec(self, inputs, training=False, force_oov=False):
        shape = tuple(inputs.shape)
        return (keras.KerasTensor((*shape, self.embedding_dim), dtype=self.compute_dtype),
                keras.KerasTensor(shape, dtype="bool"))


@keras.saving.register_keras_serializable(package="tfddn")
class HistoryAttention(keras.layers.Layer):
    """Target-aware attention pooling of a browsing history (Naor et al., DIN).

    The query is the target's representation `t` (e.g. the concatenated target
    feature embeddings), projected to the item size `d` by a learned `W`; item `i`
    scores `s_i = e_i . W t / sqrt(d)`, the weights are a softmax over the
    non-padding items only, and the output is `sum_i a_i e_i`. Scores and weights are
    computed in float32 (also under mixed precision).

    Weights that sum to 1 say *which* item matches the target best, not *whether* any
    does (DIN drops the softmax for that reason). With `return_relevance`, the layer
    also returns the attention-weighted score `r = sum_i a_i s_i` (a soft maximum of
    the scores, 0 for an all-padding row): a history holding an item that matches the
    target scores high, so the network can use the match itself, not only the pooled
    item (docs/RESULTS.md, issue #5).

    Args:
        use_bias: whether the query projection has a bias.
        return_relevance: also return `r`, shape `(batch, 1)`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        query: the target representation, `(batch, query_dim)`.
        items: item embeddings, `(batch, max_length, d)`.
        padding_mask: `(batch, max_length)`, True (or 1) on real items; None means
            no padding.

    Output shape:
        `(pooled, weights)`: `(batch, d)` and `(batch, max_length)`, and with
        `return_relevance` also `relevance` `(batch, 1)`. The weights are exactly 0 on
        padding and sum to 1 over the real items; an all-padding row has all-zero
        weights, a zero pooled vector and relevance 0.
    """

    def __init__(self, use_bias=True, return_relevance=False, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("use_bias", use_bias), ("return_relevance", return_relevance)):
            if not isinstance(value, bool):
                raise TypeError(f"{self.name}: {name} must be a bool. Received: "
                                f"{name}={value!r}")
        self.use_bias = use_bias
        self.return_relevance = return_relevance
        self.query_projection = None

    def build(self, query_shape, items_shape=None, padding_mask_shape=None):
        if items_shape is None or len(items_shape) != 3 or items_shape[-1] is None:
            raise ValueError(f"{self.name}: items must have shape (batch, max_length, d) "
                             f"with a known d. Received: items_shape={items_shape}")
        self.query_projection = keras.layers.Dense(items_shape[-1], use_bias=self.use_bias,
                                                   name="query_projection")
        self.query_projection.build(tuple(query_shape))
        self.built = True

    def call(self, query, items, padding_mask=None):
        keys = ops.cast(items, "float32")
        projected = ops.cast(self.query_projection(query), "float32")
        scores = ops.einsum("bld,bd->bl", keys, projected) / math.sqrt(keys.shape[-1])
        if padding_mask is None:
            mask = ops.ones_like(scores)
        else:
            mask = ops.cast(ops.cast(padding_mask, "bool"), "float32")
        raw = ops.where(mask > 0, scores, 0.0)
        scores = ops.where(mask > 0, scores, _MASKED_SCORE)
        scores = scores - ops.stop_gradient(ops.max(scores, axis=-1, keepdims=True))
        exp = ops.exp(scores) * mask  # an all-padding row: every term is 0
        total = ops.sum(exp, axis=-1, keepdims=True)
        weights = exp / ops.where(total > 0, total, 1.0)
        pooled = ops.cast(ops.einsum("bl,bld->bd", weights, keys), self.compute_dtype)
        if not self.return_relevance:
            return pooled, weights
        relevance = ops.sum(weights * raw, axis=-1, keepdims=True)
        return pooled, weights, ops.cast(relevance, self.compute_dtype)

    def compute_output_shape(self, query_shape, items_shape=None, padding_mask_shape=None):
        shapes = (query_shape[0], items_shape[-1]), (query_shape[0], items_shape[1])
        return (*shapes, (query_shape[0], 1)) if self.return_relevance else shapes

    def get_config(self):
        base_config = super().get_config()
        config = {"use_bias": self.use_bias, "return_relevance": self.return_relevance}
        return {**base_config, **config}


@keras.saving.register_keras_serializable(package="tfddn")
class FieldInteractionAttention(keras.layers.Layer):
    """Multi-head self-attention over field embeddings, residual, flattened (AutoInt).

    Every field (a categorical, token or history feature's embedding, or a projected
    numeric feature) attends to every field; the output is
    `flatten(fields + MultiHeadAttention(fields, fields))`, and the attention map
    `[batch, heads, fields, fields]` (rows sum to 1) shows which feature pairs the
    model combines (Naor et al.).

    Args:
        num_heads: attention heads.
        key_dim: size of each head's queries and keys; None uses the field size.
        dropout: dropout on the attention weights while training.
        seed: seed of that dropout.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list of `F` field tensors, each `(batch, d)` with the same `d`.
        training: dropout on the attention weights only when True.

    Output shape:
        `(outputs, scores)`: `(batch, F * d)` and `(batch, num_heads, F, F)`.
    """

    def __init__(self, num_heads=2, key_dim=None, dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        _positive_int(self.name, "num_heads", num_heads)
        if key_dim is not None:
            _positive_int(self.name, "key_dim", key_dim)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{self.name}: dropout must be in [0, 1). "
                             f"Received: dropout={dropout!r}")
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.dropout = float(dropout)
        self.seed = seed
        self.attention = None

    def build(self, inputs_shape):
        dims = {tuple(shape)[-1] for shape in inputs_shape}
        if len(inputs_shape) < 2 or len(dims) != 1 or None in dims:
            raise ValueError(f"{self.name}: needs at least 2 fields of one known size. "
                             f"Received shapes: {list(inputs_shape)}")
        (dim,) = dims
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads, self.key_dim or dim, dropout=self.dropout, seed=self.seed,
            name="multi_head_attention")
        fields_shape = (inputs_shape[0][0], len(inputs_shape), dim)
        self.attention.build(fields_shape, fields_shape)
        self.built = True

    def call(self, inputs, training=False):
        fields = ops.stack(inputs, axis=1)
        attended, scores = self.attention(fields, fields, return_attention_scores=True,
                                          training=training)
        outputs = fields + attended
        return ops.reshape(outputs, (-1, outputs.shape[1] * outputs.shape[2])), scores

    def compute_output_shape(self, inputs_shape):
        batch, fields, dim = inputs_shape[0][0], len(inputs_shape), inputs_shape[0][-1]
        return (batch, fields * dim), (batch, self.num_heads, fields, fields)

    def get_config(self):
        base_config = super().get_config()
        config = {"num_heads": self.num_heads, "key_dim": self.key_dim,
                  "dropout": self.dropout, "seed": self.seed}
        return {**base_config, **config}
