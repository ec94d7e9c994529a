"""Per-prediction saliency of categorical features (Naor et al.).

Naor et al. call a feature *salient* for one prediction when marginalising it out
changes the model uncertainty (MC-dropout stddev) of that prediction: a feature the
model relies on, once removed, leaves it unsure. For every row and every categorical,
token or history feature `f`, `feature_saliency` reports, per marginalisation method
(`"oov"`, `"mean"`; see `tfddn.explain.marginalise`):

| key                     | shape  | meaning                                               |
|-------------------------|--------|-------------------------------------------------------|
| `saliency_model_stddev` | [B, F] | `s_m(x without f) / s_m(x)`, MC dropout                |
| `saliency_data_stddev`  | [B, F] | `s_d(x without f) / s_d(x)`, deterministic (DDN Fig. 4) |
| `delta_mean`            | [B, F] | `mu(x without f) - mu(x)`, deterministic              |
| `ctr_mean`, `data_stddev`, `model_stddev` | [B, F] | the marginalised predictions  |

next to the unmarginalised `ctr_mean`, `data_stddev` (one deterministic pass, like
`serving_default`) and `model_stddev` [B] (T passes). A ratio is 1 where the
unmarginalised stddev is 0 (REG's data stddev, a model without dropout). All variants
of a batch go through the model in one call (`marginalise.expand`): one deterministic
pass and one MC-dropout pass over `(V + 1) * B` rows, `V = methods x features`; the
MC passes give row `i` and its `V` marginalised copies the same dropout masks (common
random numbers), so a variant that changes nothing has a model-stddev ratio of exactly 1
and the ratios carry no noise of their own beyond that of the T-pass estimate.

References:
    Naor et al., "Debugging large scale deep recommender systems using uncertainty
    estimations and attention". Zeldes et al., "Deep density networks and uncertainty
    in recommender systems", 2018, arXiv:1711.02487, Sec. 5 (Fig. 4).

Example:
    >>> out = feature_saliency(model, features, model_config, spec, methods=("oov", "mean"))
    >>> out["oov"]["saliency_model_stddev"]      # [batch, features]
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tfddn.explain.marginalise import (MEAN, OOV, expand, group_members,
                                       require_mean_embeddings, saliency_features)
from tfddn.models.config import ModelConfig
from tfddn.spec import FeatureSpec
from tfddn.uncertainty import decompose, predictive_moments

__all__ = ["MARGINAL_KEYS", "feature_saliency"]

MARGINAL_KEYS = ("ctr_mean", "data_stddev", "model_stddev", "saliency_model_stddev",
                 "saliency_data_stddev", "delta_mean")
"""Per-method outputs of `feature_saliency`, each `[B, F]`."""


def _ratio(marginal, base):
    """`marginal / base` `[B, F]` for `base` `[B]`; 1 where `base` is 0."""
    base = base[:, tf.newaxis]
    safe = tf.where(base > 0, base, tf.ones_like(base))
    return tf.where(base > 0, marginal / safe, tf.ones_like(marginal))


def _blocks(values, num_variants, batch):
    """`[(V + 1) * B]` block-major -> the unmarginalised `[B]` and the variants `[B, V]`."""
    blocks = tf.reshape(values, [num_variants + 1, batch])
    return blocks[0], tf.transpose(blocks[1:])


def feature_saliency(model: keras.Model, features: dict, model_config: ModelConfig,
                     spec: FeatureSpec, methods: Sequence[str] = (OOV,),
                     feature_names: Sequence[str] | None = None,
                     mc_samples: int = 32, common_masks: bool = True) -> dict:
    """Saliency of every feature for every row, all variants in one batched call.

    Args:
        model: a `tfddn.models.build_model` model.
        features: raw feature tensors by the spec's names, batch size B.
        model_config: the model's `ModelConfig`.
        spec: the feature spec.
        methods: marginalisation methods, `"oov"` and/or `"mean"` (the mean needs
            `fit_mean_embeddings` first).
        feature_names: the F features (or `+`-joined groups marginalised together),
            default every vocabulary feature in spec order.
        mc_samples: T MC-dropout passes; 0 skips MC dropout (no model-stddev keys).
        common_masks: give a row and its marginalised copies the same dropout masks
            (the default); False draws independent masks (only to measure the noise
            this removes).

    Returns:
        `{"ctr_mean", "data_stddev", "model_stddev": [B], method: {MARGINAL_KEYS: [B, F]}}`
        (without the model-stddev keys when `mc_samples` is 0).
    """
    names = saliency_features(spec, feature_names)
    methods = tuple(dict.fromkeys(methods))
    if not methods:
        raise ValueError("methods must name at least one of 'oov', 'mean'")
    if MEAN in methods and tf.executing_eagerly():
        require_mean_embeddings(model, names)
    variants = [(method, name) for method in methods for name in names]
    batch = tf.shape(tf.convert_to_tensor(features[group_members(names[0])[0]]))[0]
    expanded = expand(features, spec, variants)
    mean, data_stddev = predictive_moments(model(expanded, training=False), model_config)
    columns = {"ctr_mean": _blocks(mean, len(variants), batch),
               "data_stddev": _blocks(data_stddev, len(variants), batch)}
    if mc_samples:
        # Common dropout masks for a row and its marginalised copies: the ratio then
        # measures the marginalisation, not two independent MC estimates.
        mc = decompose(model, expanded, model_config, mc_samples=mc_samples,
                       mask_blocks=len(variants) + 1 if common_masks else 1)
        columns["model_stddev"] = _blocks(mc["model_stddev"], len(variants), batch)
    out = {key: base for key, (base, _) in columns.items()}
    for i, method in enumerate(methods):
        part = {key: marginal[:, i * len(names):(i + 1) * len(names)]
                for key, (_, marginal) in columns.items()}
        part["delta_mean"] = part["ctr_mean"] - out["ctr_mean"][:, tf.newaxis]
        part["saliency_data_stddev"] = _ratio(part["data_stddev"], out["data_stddev"])
        if mc_samples:
            part["saliency_model_stddev"] = _ratio(part["model_stddev"], out["model_stddev"])
        out[method] = part
    return out
