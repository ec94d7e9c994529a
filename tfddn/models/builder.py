"""Builds REG, MDN, DDN and BBDDN Keras models from the feature spec (Zeldes et al. 2018, Sec. 3).

The model is two nested Keras models, so that later stages can reuse the parts:

    inputs (raw values by the spec's names)
      -> feature_encoder: per-feature embeddings / normalised numbers, concatenated
         per tower -> {"target": [batch, d_t], "context": [batch, d_c]}
         (deterministic: no dropout, so MC dropout can compute it once)
         optional attention (Naor et al.; off by default, `ModelConfig` flags):
         - `history_attention`: each history is pooled by `HistoryAttention` with the
           target features as the query (layer `history_attention_<feature>`)
           instead of the mean; its relevance score joins the context tower too;
         - `interaction_attention`: `FieldInteractionAttention` over the field
           embeddings (layer `interaction_attention`) -> an extra output
           {"interaction": [batch, fields * embedding_dim]}
      -> density_network: target tower MLP, context tower MLP (Dense+ReLU+Dropout),
         fusion MLP on their concatenation (and the interaction output), then the head
         - REG: `RegressionHead`, a sigmoid point estimate [batch, 1]
         - MDN / DDN: `MixtureDensityHead`, packed Gaussian mixture params [batch, 3K]
         - BBDDN: `BetaMixtureHead`, packed Beta mixture params [batch, 3K]
         (heads compute in float32 even under a mixed-precision policy)

MDN and DDN share the architecture; they differ only in the loss (DDN convolves
each component with the binomial measurement noise of the row's impressions).

`attention_model(model)` reads the attention weights off a built or loaded model.

Example:
    >>> model = build_model(spec, vocabularies, numeric_stats, ModelConfig(kind="ddn"))
    >>> params = model(features)          # [batch, 3 * num_components]
"""

from __future__ import annotations

import keras

from tfddn.layers.attention import (
    FieldInteractionAttention,
    HistoryAttention,
    SequenceItemEmbedding,
)
from tfddn.layers.features import CategoricalEmbedding, NumericFeature, SequenceEmbedding
from tfddn.layers.heads import BetaMixtureHead, MixtureDensityHead, RegressionHead
from tfddn.models.config import ModelConfig
from tfddn.spec import FeatureSpec

__all__ = [
    "DENSITY_NAME",
    "ENCODER_NAME",
    "HISTORY_ATTENTION_PREFIX",
    "INTERACTION_ATTENTION_NAME",
    "attention_model",
    "build_model",
    "feature_inputs",
]

ENCODER_NAME = "feature_encoder"
DENSITY_NAME = "density_network"
HISTORY_ATTENTION_PREFIX = "history_attention_"
INTERACTION_ATTENTION_NAME = "interaction_attention"
_INTERACTION = "interaction"  # the encoder output holding the interaction-attention vector


def feature_inputs(spec: FeatureSpec) -> dict[str, keras.KerasTensor]:
    """One `keras.Input` per spec feature, named and typed as the raw values."""
    inputs = {}
    for f in spec.features:
        dtype = "float32" if f.is_numeric else f.dtype
        shape = (f.max_length,) if f.is_sequence else ()
        inputs[f.name] = keras.Input(shape=shape, dtype=dtype, name=f.name)
    return inputs


def _encoder_layer(feature, vocabularies, numeric_stats, config, seed):
    name = f"encode_{feature.name}"
    if feature.is_numeric:
        stats = numeric_stats.get(feature.name, {})
        return NumericFeature(stats.get("mean", 0.0), stats.get("std", 1.0), name=name)
    if feature.name not in vocabularies:
        raise KeyError(f"no vocabulary for feature {feature.name!r}")
    if feature.role == "history" and config.history_attention:
        cls = SequenceItemEmbedding  # items + mask, pooled by HistoryAttention below
    else:
        cls = SequenceEmbedding if feature.is_sequence else CategoricalEmbedding
    return cls(vocabularies[feature.name], dtype_kind=feature.dtype,
               embedding_dim=config.embedding_dim, oov_rate=config.oov_rate, seed=seed,
               name=name)


def _concat(parts, name):
    return keras.layers.Concatenate(name=name)(parts) if len(parts) > 1 else parts[0]


def _interaction(spec, encoded, config):
    """Field embeddings (numeric ones projected) -> FieldInteractionAttention output."""
    fields = [keras.layers.Dense(config.embedding_dim, name=f"interaction_project_{f.name}")(
        encoded[f.name]) if f.is_numeric else encoded[f.name] for f in spec.features]
    if len(fields) < 2:
        raise ValueError("interaction_attention needs at least 2 features. "
                         f"Received: {spec.feature_names}")
    flat, _ = FieldInteractionAttention(config.attention_heads,
                                        name=INTERACTION_ATTENTION_NAME)(fields)
    return flat


def _build_encoder(spec, vocabularies, numeric_stats, config, seed) -> keras.Model:
    inputs = feature_inputs(spec)
    encoded, histories, relevances = {}, {}, {}
    for i, f in enumerate(spec.features):
        layer = _encoder_layer(f, vocabularies, numeric_stats, config,
                               None if seed is None else seed + i)
        out = layer(inputs[f.name])
        if isinstance(layer, SequenceItemEmbedding):
            histories[f.name] = out
        else:
            encoded[f.name] = out
    towers = {tower: [f.name for f in spec.features if f.tower == tower]
              for tower in ("target", "context")}
    target = _concat([encoded[name] for name in towers["target"]], "target_features")
    for name, (items, mask) in histories.items():  # the query is the target (Naor et al.)
        # The pooled item says which item matches, the relevance whether one does;
        # both go to the context tower (the pooled item alone is the field that
        # interaction attention sees).
        encoded[name], _, relevances[name] = HistoryAttention(
            return_relevance=True, name=f"{HISTORY_ATTENTION_PREFIX}{name}")(target, items, mask)
    outputs = {"target": target,
               "context": _concat([encoded[name] for name in towers["context"]]
                                  + [relevances[name] for name in towers["context"]
                                     if name in relevances], "context_features")}
    if config.interaction_attention:
        outputs[_INTERACTION] = _interaction(spec, encoded, config)
    return keras.Model(inputs, outputs, name=ENCODER_NAME)


def _mlp(x, units, dropout, prefix, seed):
    for i, n in enumerate(units):
        x = keras.layers.Dense(n, activation="relu", name=f"{prefix}_dense_{i}")(x)
        if dropout > 0:  # distinct seeds: equal seeds would give equal masks
            x = keras.layers.Dropout(dropout, seed=None if seed is None else seed + i,
                                     name=f"{prefix}_dropout_{i}")(x)
    return x


def _build_density_network(dims, config, initial_mean, seed) -> keras.Model:
    inputs = {name: keras.Input(shape=(dim,), name=name) for name, dim in dims.items()}
    seeds = [None if seed is None else seed + offset for offset in (1000, 2000, 3000)]
    target = _mlp(inputs["target"], config.tower_units, config.dropout, "target_tower",
                  seeds[0])
    context = _mlp(inputs["context"], config.tower_units, config.dropout, "context_tower",
                   seeds[1])
    extra = [inputs[_INTERACTION]] if _INTERACTION in inputs else []
    x = keras.layers.Concatenate(name="fusion_input")([target, context, *extra])
    x = _mlp(x, config.fusion_units, config.dropout, "fusion", seeds[2])
    if config.kind == "bbddn":
        out = BetaMixtureHead(config.num_components, min_concentration=config.min_concentration,
                              initial_mean=initial_mean,
                              initial_stddev=max(0.5 * initial_mean, 1e-3),
                              name="mixture_head", dtype="float32")(x)
    elif config.is_density:
        out = MixtureDensityHead(config.num_components, min_stddev=config.min_stddev,
                                 initial_mean=initial_mean, name="mixture_head",
                                 dtype="float32")(x)
    else:
        out = RegressionHead(initial_mean=initial_mean, name="regression_head",
                             dtype="float32")(x)
    return keras.Model(inputs, out, name=DENSITY_NAME)


def build_model(spec: FeatureSpec, vocabularies: dict[str, list],
                numeric_stats: dict[str, dict], config: ModelConfig,
                initial_mean: float = 0.03, seed: int | None = None) -> keras.Model:
    """The Keras model for `config.kind`, taking raw features by the spec's names.

    Args:
        spec: the feature spec.
        vocabularies: feature name -> in-vocabulary values (from `beam.preprocess`).
        numeric_stats: feature name -> {"mean", "std"} of the training data.
        config: architecture.
        initial_mean: the training CTR; the head starts there.
        seed: seeds dropout and OOV replacement.
    """
    encoder = _build_encoder(spec, vocabularies, numeric_stats, config, seed)
    dims = {name: int(tensor.shape[-1]) for name, tensor in encoder.output.items()}
    density = _build_density_network(dims, config, initial_mean, seed)
    inputs = feature_inputs(spec)
    outputs = density(encoder(inputs))
    return keras.Model(inputs, outputs, name=config.kind)


def attention_model(model: keras.Model) -> keras.Model | None:
    """The attention weights of a built or loaded model, as a Keras model (Naor et al.).

    The returned model takes the same raw features as `model` and shares its weights
    (it is a view of the `feature_encoder` graph); its outputs are a dict with
    `"history_attention/<feature>"`: `[batch, max_length]` weights over the history
    items (0 on padding, summing to 1 over the real items) for every history pooled
    with attention, and `"interaction_attention"`: the `[batch, heads, fields,
    fields]` map of the feature-interaction attention (fields in spec order).

    Args:
        model: a `build_model` model, e.g. from `keras.saving.load_model`.

    Returns:
        The attention model, or None when `model` has no attention layer.
    """
    encoder = model.get_layer(ENCODER_NAME)
    outputs = {}
    for layer in encoder.layers:
        if isinstance(layer, HistoryAttention):
            feature = layer.name.removeprefix(HISTORY_ATTENTION_PREFIX)
            outputs[f"history_attention/{feature}"] = layer.output[1]
        elif isinstance(layer, FieldInteractionAttention):
            outputs[INTERACTION_ATTENTION_NAME] = layer.output[1]
    if not outputs:
        return None
    return keras.Model(encoder.input, outputs, name="attention")
