"""Builds REG, MDN and DDN Keras models from the feature spec (Zeldes et al. 2018, Sec. 3).

The model is two nested Keras models, so that later stages can reuse the parts:

    inputs (raw values by the spec's names)
      -> feature_encoder: per-feature embeddings / normalised numbers, concatenated
         per tower -> {"target": [batch, d_t], "context": [batch, d_c]}
         (deterministic: no dropout, so MC dropout can compute it once)
      -> density_network: target tower MLP, context tower MLP (Dense+ReLU+Dropout),
         fusion MLP on their concatenation, then the head
         - REG: `RegressionHead`, a sigmoid point estimate [batch, 1]
         - MDN / DDN: `MixtureDensityHead`, packed mixture params [batch, 3K]
         (heads compute in float32 even under a mixed-precision policy)

MDN and DDN share the architecture; they differ only in the loss (DDN convolves
each component with the binomial measurement noise of the row's impressions).

Example:
    >>> model = build_model(spec, vocabularies, numeric_stats, ModelConfig(kind="ddn"))
    >>> params = model(features)          # [batch, 3 * num_components]
"""

from __future__ import annotations

import keras

from tfddn.layers.features import CategoricalEmbedding, NumericFeature, SequenceEmbedding
from tfddn.layers.heads import MixtureDensityHead, RegressionHead
from tfddn.models.config import ModelConfig
from tfddn.spec import FeatureSpec

__all__ = ["build_model", "feature_inputs", "ENCODER_NAME", "DENSITY_NAME"]

ENCODER_NAME = "feature_encoder"
DENSITY_NAME = "density_network"


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
    cls = SequenceEmbedding if feature.is_sequence else CategoricalEmbedding
    return cls(vocabularies[feature.name], dtype_kind=feature.dtype,
               embedding_dim=config.embedding_dim, oov_rate=config.oov_rate, seed=seed,
               name=name)


def _build_encoder(spec, vocabularies, numeric_stats, config, seed) -> keras.Model:
    inputs = feature_inputs(spec)
    towers = {"target": [], "context": []}
    for i, f in enumerate(spec.features):
        layer = _encoder_layer(f, vocabularies, numeric_stats, config,
                               None if seed is None else seed + i)
        towers[f.tower].append(layer(inputs[f.name]))
    outputs = {
        tower: (keras.layers.Concatenate(name=f"{tower}_features")(parts)
                if len(parts) > 1 else parts[0])
        for tower, parts in towers.items()
    }
    return keras.Model(inputs, outputs, name=ENCODER_NAME)


def _mlp(x, units, dropout, prefix, seed):
    for i, n in enumerate(units):
        x = keras.layers.Dense(n, activation="relu", name=f"{prefix}_dense_{i}")(x)
        if dropout > 0:  # distinct seeds: equal seeds would give equal masks
            x = keras.layers.Dropout(dropout, seed=None if seed is None else seed + i,
                                     name=f"{prefix}_dropout_{i}")(x)
    return x


def _build_density_network(target_dim, context_dim, config, initial_mean, seed) -> keras.Model:
    target_in = keras.Input(shape=(target_dim,), name="target")
    context_in = keras.Input(shape=(context_dim,), name="context")
    seeds = [None if seed is None else seed + offset for offset in (1000, 2000, 3000)]
    target = _mlp(target_in, config.tower_units, config.dropout, "target_tower", seeds[0])
    context = _mlp(context_in, config.tower_units, config.dropout, "context_tower", seeds[1])
    x = keras.layers.Concatenate(name="fusion_input")([target, context])
    x = _mlp(x, config.fusion_units, config.dropout, "fusion", seeds[2])
    if config.is_density:
        out = MixtureDensityHead(config.num_components, min_stddev=config.min_stddev,
                                 initial_mean=initial_mean, name="mixture_head",
                                 dtype="float32")(x)
    else:
        out = RegressionHead(initial_mean=initial_mean, name="regression_head",
                             dtype="float32")(x)
    return keras.Model({"target": target_in, "context": context_in}, out, name=DENSITY_NAME)


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
    dims = {tower: int(encoder.output[tower].shape[-1]) for tower in ("target", "context")}
    density = _build_density_network(dims["target"], dims["context"], config, initial_mean,
                                     seed)
    inputs = feature_inputs(spec)
    outputs = density(encoder(inputs))
    return keras.Model(inputs, outputs, name=config.kind)
