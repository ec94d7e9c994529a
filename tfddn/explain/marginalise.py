"""Marginalising a categorical feature out at the input (Naor et al., saliency).

Naor et al. measure how much a prediction relies on a feature by "removing" it and
watching the uncertainty. Two ways to remove a categorical feature:

- `"oov"`: the value becomes unknown, so the learned OOV embedding stands in for it
  (Zeldes et al. 2018 train that row on rare values and on a random `oov_rate` share);
- `"mean"`: the value becomes the frequency-weighted average embedding of the feature
  (`fit_mean_embeddings` computes it from the training impressions once).

Both are done on the *raw* input, by replacing the value with a reserved sentinel
(`tfddn.layers.features.oov_sentinel` / `mean_sentinel`) that the embedding layers
recognise; in a token list or history every non-padding item is replaced. So the
same code works through any encoder (attention included), the Keras model and an
exported SavedModel, and only the chosen feature's encoding changes.

`expand` builds all marginalised copies of a batch at once, block-major:

    rows [0, B)            the batch as is
    rows [(j+1)B, (j+2)B)  the batch with variant j = (method, feature) marginalised

A variant may name a *group* of features joined by `+` (`"publisher_id+publisher_topic"`):
every member is marginalised in that copy. Single-feature ratios understate a feature
the rest of the row can stand in for (a publisher's topic, given the publisher); a
group removes the information from every place it lives (docs/RESULTS.md, issue #5).

Example:
    >>> fit_mean_embeddings(model, data_dir)            # once, for method "mean"
    >>> batch = expand(features, spec, [("oov", "advertiser_id"), ("mean", "title")])
    >>> params = model(batch)                           # [3 * B, 3K]
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfddn import data
from tfddn.layers.features import CategoricalEmbedding, mean_sentinel, oov_sentinel
from tfddn.spec import FeatureSpec

__all__ = ["GROUP_SEPARATOR", "MEAN", "METHODS", "OOV", "embedding_layers", "expand",
           "fit_mean_embeddings", "group_members", "marginalise", "require_mean_embeddings",
           "saliency_features"]

OOV = "oov"
MEAN = "mean"
METHODS = (OOV, MEAN)
_ENCODER_PREFIX = "encode_"  # `tfddn.models.builder` names a feature's layer encode_<name>
GROUP_SEPARATOR = "+"


def group_members(name: str) -> tuple[str, ...]:
    """`"a+b"` -> `("a", "b")`; a single feature name -> `(name,)`."""
    return tuple(name.split(GROUP_SEPARATOR))


def saliency_features(spec: FeatureSpec, names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The features that can be marginalised (categorical, token list, history), checked.

    Args:
        spec: the feature spec.
        names: a subset in the caller's order, each a feature or a `+`-joined group;
            default every vocabulary feature in spec order.
    """
    allowed = [f.name for f in spec.vocabulary_features]
    if names is None:
        return tuple(allowed)
    bad = [n for n in names if not all(m in allowed for m in group_members(n))]
    if bad or not names:
        raise ValueError(f"saliency features must be categorical, token or history features "
                         f"of the spec {allowed}. Received: {list(names)}")
    return tuple(names)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}. Received: method={method!r}")


def marginalise(values: tf.Tensor, feature, method: str = OOV) -> tf.Tensor:
    """`values` of one feature with every value (non-padding item) replaced by the
    sentinel of `method`.

    Args:
        values: raw values `(B,)`, or `(B, max_length)` for a token list / history.
        feature: the `tfddn.spec.Feature`.
        method: `"oov"` or `"mean"`.
    """
    _check_method(method)
    if not feature.has_vocabulary:
        raise ValueError(f"only categorical, token and history features can be "
                         f"marginalised. Received: {feature.name!r} ({feature.role})")
    values = tf.convert_to_tensor(values)
    sentinel = oov_sentinel(feature.dtype) if method == OOV else mean_sentinel(feature.dtype)
    filled = tf.fill(tf.shape(values), tf.constant(sentinel, values.dtype))
    if not feature.is_sequence:
        return filled
    return tf.where(tf.equal(values, tf.constant(feature.pad, values.dtype)), values, filled)


def expand(features: dict, spec: FeatureSpec,
           variants: Sequence[tuple[str, str]]) -> dict[str, tf.Tensor]:
    """The batch followed by one marginalised copy per `(method, feature)` variant.

    Args:
        features: raw feature tensors by name, batch size B.
        spec: the feature spec.
        variants: `(method, feature name or +-joined group)` pairs, V of them.

    Returns:
        Raw features with batch size `(V + 1) * B`, block-major (module docstring).
    """
    for method, name in variants:
        _check_method(method)
        saliency_features(spec, [name])
    out = {}
    for name, values in features.items():
        values = tf.convert_to_tensor(values)
        blocks = [marginalise(values, spec.feature(name), method)
                  if name in group_members(target) else values
                  for method, target in variants]
        out[name] = tf.concat([values, *blocks], axis=0)
    return out


def embedding_layers(model: keras.Model) -> dict[str, CategoricalEmbedding]:
    """Feature name -> its embedding layer, found anywhere in the (nested) model."""
    found = {}
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, CategoricalEmbedding):
            found[layer.name.removeprefix(_ENCODER_PREFIX)] = layer
        stack.extend(getattr(layer, "layers", ()))
    return found


def fit_mean_embeddings(model: keras.Model, data_dir: str, split: str = "train",
                        batch_size: int = 4096) -> dict[str, float]:
    """Sets every embedding layer's `mean_embedding` from one pass over a split.

    Each value (each token / history item) is weighted by the impressions of its
    rows; values without a row of their own weigh on the OOV row (Naor et al.'s
    frequency-weighted mean embedding). Call it after training; the weights are saved
    with the model.

    Args:
        model: a `tfddn.models.build_model` model.
        data_dir: a preprocessed directory (`tfddn preprocess`).
        split: the split to count, the training data by default.
        batch_size: examples per read.

    Returns:
        Feature name -> the impressions counted (a value in a token list counts once
        per occurrence).
    """
    layers = embedding_layers(model)
    if not layers:
        raise ValueError("the model has no CategoricalEmbedding layer")
    counts = {name: np.zeros(layer.embedding.input_dim) for name, layer in layers.items()}
    spec = data.load_data_spec(data_dir)
    dataset = data.make_dataset(data.split_files(data_dir, split), spec,
                                data.InputConfig(batch_size=batch_size, shuffle=False))
    for features, labels in dataset:
        for name, layer in layers.items():
            if name in features:
                counts[name] += layer.row_counts(features[name], labels["impressions"])
    missing = [name for name, c in counts.items() if c.sum() <= 0]
    if missing:
        raise ValueError(f"no training values for the embedding layers {missing}: "
                         f"is {data_dir} the data the model was trained on?")
    for name, layer in layers.items():
        layer.set_mean_embedding(counts[name])
    return {name: float(c.sum()) for name, c in counts.items()}


def require_mean_embeddings(model: keras.Model, names: Sequence[str]) -> None:
    """Raises unless every feature in `names` has a fitted mean embedding."""
    layers = embedding_layers(model)
    members = [m for n in names for m in group_members(n)]
    unset = [n for n in members if n not in layers or not layers[n].has_mean_embedding]
    if unset:
        raise ValueError(f"no mean embedding for {unset}: run "
                         "tfddn.explain.fit_mean_embeddings(model, data_dir) first")
