"""Warm start: today's model starts from yesterday's, although the vocabularies changed.

In daily retraining new targets appear and old ones expire, so `beam.preprocess`
writes new vocabularies and the new model's embedding tables have other sizes and
another row order. `warm_start` copies what still means the same thing:

- every layer whose weights have the same shapes (towers, fusion MLP, head,
  attention) is copied as is; layers are matched by name, nested models
  (`feature_encoder`, `density_network`) included;
- every categorical / token / history embedding table is copied **row by row by
  vocabulary value**: the rows of values in both vocabularies, the learned OOV row
  and the padding row of a sequence feature;
- rows of **new values start at yesterday's OOV row** (`new_rows="oov"`, the
  default). Yesterday's model served a new value through its OOV embedding, which
  learned "an unknown value" (Zeldes et al. 2018, Sec. 4, and `oov_rate`); starting
  there keeps today's predictions for new targets where yesterday's were (the
  warm-started model predicts, before any step, exactly what the previous model
  predicts on every input made of shared and new values), instead of an arbitrary
  point given by a random row, and training moves each row away from it as the
  value gets impressions. `new_rows="fresh"` keeps the layer's initializer instead;
- the non-trainable **mean embedding** (Naor et al.; `set_mean_embedding`) is *not*
  copied: it is a frequency-weighted mean of the table over the training data, and
  both change. It is left unset (zero), so that `tfddn.explain` refuses the "mean"
  marginalisation until `fit_mean_embeddings` refits it on the new data instead of
  silently using yesterday's.

Numeric features keep the new data's normalisation (constructor arguments, no
weights), and the optimizer starts fresh.

Example:
    >>> model = build_model(spec, todays_vocabularies, numeric_stats, config)
    >>> previous, _, _ = tfddn.training.load_run("runs/yesterday")
    >>> report = warm_start(model, previous)
    >>> report["embeddings"]["feature_encoder/encode_target_id"]["rows_new"]
    42

References:
    Zeldes et al. (2018), "Deep density networks and uncertainty in recommender
    systems", Sec. 4 (the OOV embedding).
"""

from __future__ import annotations

import keras
import numpy as np

from tfddn.layers.features import CategoricalEmbedding

__all__ = ["NEW_ROWS", "warm_start"]

NEW_ROWS = ("oov", "fresh")
"""How the rows of new vocabulary values start: yesterday's OOV row, or the initializer."""


def _weighted_layers(model: keras.Model, prefix: str = "") -> dict[str, keras.layers.Layer]:
    """`"submodel/layer"` path -> layer, for every layer with weights, nested models walked."""
    out = {}
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            out.update(_weighted_layers(layer, f"{path}/"))
        elif layer.weights:
            out[path] = layer
    return out


def _shape_mismatch(layer, previous) -> str | None:
    """Why the weights of `previous` cannot be copied as is into `layer`, or None."""
    if type(layer).__name__ != type(previous).__name__:
        return f"layer type changed: {type(previous).__name__} -> {type(layer).__name__}"
    new = [(w.path.split("/")[-1], tuple(w.shape)) for w in layer.weights]
    old = [(w.path.split("/")[-1], tuple(w.shape)) for w in previous.weights]
    if [s for _, s in new] != [s for _, s in old]:
        return f"shape mismatch: {old} -> {new}"
    return None


def _copy_rows(layer: CategoricalEmbedding, previous: CategoricalEmbedding,
               new_rows: str) -> dict:
    """Copies the embedding rows of `previous` into `layer` by vocabulary value."""
    old_table = keras.ops.convert_to_numpy(previous.embedding.embeddings)
    table = keras.ops.convert_to_numpy(layer.embedding.embeddings).copy()
    pad_new, pad_old = layer._padding_rows, previous._padding_rows
    old_row = {v: pad_old + 1 + i for i, v in enumerate(previous.vocabulary)}
    # OOV row, then the padding rows both tables have (their content is masked anyway).
    dst, src = [pad_new], [pad_old]
    dst += list(range(min(pad_new, pad_old)))
    src += list(range(min(pad_new, pad_old)))
    fresh = []
    for i, value in enumerate(layer.vocabulary):
        if value in old_row:
            dst.append(pad_new + 1 + i)
            src.append(old_row[value])
        else:
            fresh.append(pad_new + 1 + i)
    if new_rows == "oov" and fresh:
        table[fresh] = old_table[pad_old]
    table[dst] = old_table[src]
    layer.embedding.embeddings.assign(table.astype(layer.embedding.embeddings.dtype))
    # The mean embedding is a statistic of the table and the training data: unset it.
    layer.mean_embedding.assign(np.zeros(layer.mean_embedding.shape,
                                         layer.mean_embedding.dtype))
    layer.mean_embedding_impressions.assign(0.0)
    shared = len(layer.vocabulary) - len(fresh)
    return {"rows_copied": len(dst), "rows_new": len(fresh), "values_shared": shared,
            "values_gone": len(previous.vocabulary) - shared,
            "mean_embedding_dropped": bool(previous.has_mean_embedding)}


def _embedding_mismatch(layer, previous) -> str | None:
    if not isinstance(previous, CategoricalEmbedding):
        return f"layer type changed: {type(previous).__name__} -> {type(layer).__name__}"
    if layer.embedding_dim != previous.embedding_dim:
        return f"embedding_dim changed: {previous.embedding_dim} -> {layer.embedding_dim}"
    if layer.dtype_kind != previous.dtype_kind:
        return f"value type changed: {previous.dtype_kind} -> {layer.dtype_kind}"
    return None


def warm_start(model: keras.Model, previous: keras.Model, new_rows: str = "oov") -> dict:
    """Copies the weights of `previous` into `model` where they mean the same thing.

    Args:
        model: the new model (e.g. `tfddn.models.build_model` over today's vocabularies).
        previous: the trained model to start from (e.g. `tfddn.training.load_run`).
        new_rows: `"oov"` (default): the embedding rows of values that are not in the
            previous vocabulary start at the previous OOV row; `"fresh"`: they keep
            their initial values.

    Returns:
        A JSON-serialisable report: `"copied"`, the layers copied as is;
        `"embeddings"`, per embedding layer `rows_copied` (shared values, OOV and
        padding rows), `rows_new`, `values_shared`, `values_gone` and
        `mean_embedding_dropped`; `"skipped"`, layer -> why it keeps its initial
        weights; `"unused"`, the previous model's layers nothing was copied from;
        `"new_rows"`.

    Raises:
        ValueError: `new_rows` is unknown, or no layer of `model` could take weights
            from `previous` (another architecture: warm start would be meaningless).
    """
    if new_rows not in NEW_ROWS:
        raise ValueError(f"new_rows must be one of {list(NEW_ROWS)}. Received: "
                         f"new_rows={new_rows!r}")
    layers, old_layers = _weighted_layers(model), _weighted_layers(previous)
    report = {"copied": [], "embeddings": {}, "skipped": {}, "unused": [],
              "new_rows": new_rows}
    for path, layer in layers.items():
        old = old_layers.get(path)
        if old is None:
            report["skipped"][path] = "not in the previous model"
            continue
        if isinstance(layer, CategoricalEmbedding):
            reason = _embedding_mismatch(layer, old)
            if reason is None:
                report["embeddings"][path] = _copy_rows(layer, old, new_rows)
        else:
            reason = _shape_mismatch(layer, old)
            if reason is None:
                layer.set_weights(old.get_weights())
                report["copied"].append(path)
        if reason is not None:
            report["skipped"][path] = reason
    used = set(report["copied"]) | set(report["embeddings"])
    report["unused"] = sorted(set(old_layers) - used)
    if not used:
        raise ValueError(
            f"cannot warm start {model.name!r} from {previous.name!r}: no layer matches "
            f"by name and shape (the architectures differ). Skipped: {report['skipped']}")
    return report
