"""`tfddn explain`: importance, per-row saliency and attention reports of a trained run.

    importance_run  -> OUT/importance.{json,md,png}        (DDN paper, Fig. 4)
    sample_run      -> OUT/saliency.{json,md,png}          (Naor et al., per prediction)
    attention_run   -> OUT/attention_<name>.png, attention.json (when the model has it)

Rows are addressed by their position in the split's file order (the order of
`tfddn.data.make_dataset` without shuffling, the same as `tfddn evaluate`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfddn import data
from tfddn.configs import MC_SAMPLES
from tfddn.explain.attention import attention_weights
from tfddn.explain.importance import feature_importance, write_importance_report
from tfddn.explain.marginalise import MEAN, METHODS, fit_mean_embeddings, saliency_features
from tfddn.explain.plots import plot_attention, plot_saliency
from tfddn.explain.saliency import feature_saliency

__all__ = ["attention_run", "importance_run", "load_rows", "sample_run"]


def load_rows(data_dir: str, rows: Sequence[int], split: str = "eval",
              batch_size: int = 4096) -> tuple[dict[str, tf.Tensor], np.ndarray]:
    """The raw features `{name: [len(rows), ...]}` and impressions of the given rows."""
    if not rows or min(rows) < 0:
        raise ValueError(f"rows must be non-negative row numbers. Received: {list(rows)}")
    spec = data.load_data_spec(data_dir)
    dataset = data.make_dataset(data.split_files(data_dir, split), spec,
                                data.InputConfig(batch_size=batch_size, shuffle=False))
    parts, impressions, seen = [], [], 0
    for features, labels in dataset:
        parts.append(features)
        impressions.append(labels["impressions"].numpy())
        seen += int(labels["impressions"].shape[0])
        if seen > max(rows):
            break
    if seen <= max(rows):
        raise ValueError(f"row {max(rows)} requested, the {split} split has {seen} rows")
    index = tf.constant(list(rows))
    features = {name: tf.gather(tf.concat([p[name] for p in parts], 0), index)
                for name in parts[0]}
    return features, np.concatenate(impressions)[list(rows)]


def _text(value) -> str:
    value = value.decode() if isinstance(value, bytes) else value
    return str(value)


def _raw_value(values: np.ndarray, feature) -> str:
    if not feature.is_sequence:
        return _text(values)
    return feature.raw(values)  # as logged: items joined by the separator, no padding


def importance_run(run_dir: str, data_dir: str, out_dir: str | None = None,
                   split: str = "eval", max_rows: int | None = None, mc_samples: int = MC_SAMPLES,
                   method: str = "oov", batch_size: int = 256,
                   features: Sequence[str] | None = None) -> dict:
    """`tfddn explain importance`: the Fig. 4 report of a run; returns the summary.

    `features`: features and `+`-joined groups to marginalise (default: every
    vocabulary feature on its own)."""
    from tfddn.training import load_run

    model, model_config, _ = load_run(run_dir)
    if method == MEAN:
        fit_mean_embeddings(model, data_dir)
    result = feature_importance(model, model_config, data_dir, split, max_rows, mc_samples,
                                batch_size, method, features)
    out_dir = out_dir or os.path.join(run_dir, "explain")
    paths = write_importance_report(result, out_dir)
    return {"rows": result.rows, "paths": paths, **result.summary()}


def _saliency_table(out: dict, methods, names, spec, features, row: int) -> list[dict]:
    """One row's features, ranked by the model-stddev ratio of the first method."""
    entries = []
    for j, name in enumerate(names):
        entry = {"feature": name,
                 "value": _raw_value(features[name][row].numpy(), spec.feature(name))}
        for m in methods:
            for key in ("saliency_model_stddev", "saliency_data_stddev", "delta_mean"):
                entry[f"{m}/{key}"] = float(out[m][key][row, j])
        entries.append(entry)
    return sorted(entries, key=lambda e: -e[f"{methods[0]}/saliency_model_stddev"])


def _markdown(tables: dict, methods, base: dict) -> str:
    keys = [f"{m}/{k}" for m in methods for k in ("saliency_model_stddev",
                                                  "saliency_data_stddev", "delta_mean")]
    lines = ["# Per-prediction saliency (Naor et al.)", "",
             ("saliency_* = stddev with the feature marginalised / stddev of the row "
              "(model: MC dropout; data: mixture stddev); delta_mean = change of the "
              "predicted CTR. Features ranked by the first method's model-stddev ratio."), ""]
    for row, table in tables.items():
        b = base[row]
        lines += [(f"## row {row}: ctr_mean {b['ctr_mean']:.4f}, data_stddev "
                   f"{b['data_stddev']:.4f}, model_stddev {b['model_stddev']:.4f}"), "",
                  "| feature | value | " + " | ".join(keys) + " |",
                  "|---" * (2 + len(keys)) + "|"]
        for e in table:
            value = e["value"] if len(e["value"]) <= 40 else e["value"][:37] + "..."
            lines.append(f"| {e['feature']} | {value} | "
                         + " | ".join(f"{e[k]:+.2e}" if k.endswith("delta_mean")
                                      else f"{e[k]:.3f}" for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def sample_run(run_dir: str, data_dir: str, rows: Sequence[int], out_dir: str | None = None,
               split: str = "eval", method: str = "both", mc_samples: int = MC_SAMPLES) -> dict:
    """`tfddn explain sample`: ranked saliency tables and heat maps of chosen rows."""
    from tfddn.training import load_run

    methods = METHODS if method == "both" else (method,)
    model, model_config, _ = load_run(run_dir)
    spec = data.load_data_spec(data_dir)
    if MEAN in methods:
        fit_mean_embeddings(model, data_dir)
    features, _ = load_rows(data_dir, rows, split)
    names = saliency_features(spec)
    out = feature_saliency(model, features, model_config, spec, methods, names, mc_samples)
    base = {row: {k: float(out[k][i]) for k in ("ctr_mean", "data_stddev", "model_stddev")}
            for i, row in enumerate(rows)}
    tables = {row: _saliency_table(out, methods, names, spec, features, i)
              for i, row in enumerate(rows)}
    out_dir = out_dir or os.path.join(run_dir, "explain")
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "saliency.json"),
             "md": os.path.join(out_dir, "saliency.md")}
    with open(paths["json"], "w") as fh:
        json.dump({"split": split, "mc_samples": mc_samples, "methods": list(methods),
                   "rows": {str(r): {**base[r], "features": tables[r]} for r in rows}},
                  fh, indent=2)
    with open(paths["md"], "w") as fh:
        fh.write(_markdown(tables, methods, base))
    panels = {f"model stddev ratio, feature -> {m}": out[m]["saliency_model_stddev"].numpy()
              for m in methods}
    paths["png"] = plot_saliency(panels, names, [f"row {r}" for r in rows],
                                 os.path.join(out_dir, "saliency.png"))
    return {"tables": tables, "base": base, "paths": paths}


def attention_run(run_dir: str, data_dir: str, rows: Sequence[int],
                  out_dir: str | None = None, split: str = "eval") -> dict | None:
    """`tfddn explain attention`: attention maps of chosen rows; None without attention."""
    from tfddn.training import load_run

    model, _, _ = load_run(run_dir)
    spec = data.load_data_spec(data_dir)
    features, _ = load_rows(data_dir, rows, split)
    weights = attention_weights(model, features)
    if weights is None:
        return None
    out_dir = out_dir or os.path.join(run_dir, "explain")
    os.makedirs(out_dir, exist_ok=True)
    labels = [f"row {r}" for r in rows]
    paths, arrays = {}, {}
    for name, tensor in weights.items():
        arrays[name] = tensor.numpy()
        feature = name.split("/", 1)[-1]
        cells = axis = None
        if arrays[name].ndim == 2 and feature in spec.feature_names:
            cells = [[_text(v) for v in row] for row in features[feature].numpy()]
            axis = [f"item {i}" for i in range(arrays[name].shape[1])]
        elif arrays[name].ndim > 2 and arrays[name].shape[-1] == len(spec.features):
            axis = list(spec.feature_names)
        path = os.path.join(out_dir, f"attention_{name.replace('/', '_')}.png")
        paths[name] = plot_attention(arrays[name], labels, path, name, axis, cells)
    paths["json"] = os.path.join(out_dir, "attention.json")
    with open(paths["json"], "w") as fh:
        json.dump({"rows": list(rows), "weights": {k: v.tolist() for k, v in arrays.items()}},
                  fh)
    return {"weights": arrays, "paths": paths}
