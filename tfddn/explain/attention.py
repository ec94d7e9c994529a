"""Attention weights of a model, when it has attention (Naor et al.).

Naor et al. add attention over the browsing history (which read article made the
prediction) and over feature interactions, and read the weights as explanations.
Whether a model has attention, and how it is wired, is the model builder's business:
this module only asks `tfddn.models.builder.attention_model(model)` for a Keras model
mapping the raw features to `{name: weights [B, ...]}` and returns None when the
builder has no such function or the model has no attention layer.

Example:
    >>> weights = attention_weights(model, features)   # None without attention
    >>> weights["history_attention/history"]            # [batch, max_length]
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfddn.models import builder

__all__ = ["attention_model", "attention_weights", "output_name"]


def attention_model(model: keras.Model) -> keras.Model | None:
    """The builder's attention view of `model`, or None (no attention / no support)."""
    make = getattr(builder, "attention_model", None)
    return None if make is None else make(model)


def _as_dict(outputs) -> dict[str, tf.Tensor]:
    if isinstance(outputs, dict):
        return dict(outputs)
    flat = tf.nest.flatten(outputs)
    return {"attention" if len(flat) == 1 else f"attention_{i}": t for i, t in enumerate(flat)}


def attention_weights(model: keras.Model, features: dict,
                      view: keras.Model | None = None) -> dict[str, tf.Tensor] | None:
    """`{name: weights [B, ...]}` of every attention layer, or None without attention.

    Args:
        model: a `tfddn.models.build_model` model.
        features: raw feature tensors by the spec's names.
        view: a precomputed `attention_model(model)` (saves rebuilding it per call).
    """
    view = attention_model(model) if view is None else view
    if view is None:
        return None
    return _as_dict(view(features, training=False))


def output_name(name: str) -> str:
    """An attention output's name as a signature output key (`/` -> `__`)."""
    return "attention_" + name.replace("/", "__")
