"""Feature importance over a data set as the change of uncertainty (DDN paper, Fig. 4).

Zeldes et al. (2018, Sec. 5, Fig. 4) rank features by how much the predicted *data*
uncertainty grows when a feature is set to OOV: a feature that explains part of the
CTR's variation leaves that variation unexplained once removed, so the mixture widens.
For every row of a preprocessed split and every categorical, token and history
feature, `feature_importance` computes the ratio

    data:  s_d(x with f marginalised) / s_d(x)       (deterministic)
    model: s_m(x with f marginalised) / s_m(x)       (MC dropout, Naor et al.)

and `write_importance_report` summarises their distributions per feature (median,
quartiles, mean, share of rows above 1) as `importance.json`, `importance.md` and a
violin plot `importance.png` with the medians marked. A ratio of 1 means "no effect";
rows whose value is already OOV (rare values) always give 1.

References:
    Zeldes et al., "Deep density networks and uncertainty in recommender systems",
    2018, arXiv:1711.02487, Sec. 5. Naor et al., "Debugging large scale deep
    recommender systems using uncertainty estimations and attention".

Example:
    >>> result = feature_importance(model, model_config, "data/", split="eval")
    >>> write_importance_report(result, "runs/ddn/importance")
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import keras
import numpy as np

from tfddn import data
from tfddn.configs import MC_SAMPLES
from tfddn.explain.marginalise import OOV, saliency_features
from tfddn.explain.plots import plot_importance
from tfddn.explain.saliency import feature_saliency
from tfddn.models.config import ModelConfig

__all__ = ["FeatureImportance", "feature_importance", "ratio_statistics",
           "write_importance_report"]


@dataclasses.dataclass(frozen=True)
class FeatureImportance:
    """Per-row uncertainty ratios of every feature over a split.

    Attributes:
        feature_names: the F features, in column order.
        data_ratio: `[N, F]` data-stddev ratios (after / before marginalising).
        model_ratio: `[N, F]` model-stddev ratios, or None without MC dropout.
        method: `"oov"` or `"mean"`.
        split: the split of the data directory.
        mc_samples: T of the model-stddev ratios (0: none).
    """

    feature_names: tuple[str, ...]
    data_ratio: np.ndarray
    model_ratio: np.ndarray | None
    method: str = OOV
    split: str = "eval"
    mc_samples: int = 0

    @property
    def rows(self) -> int:
        return int(self.data_ratio.shape[0])

    def summary(self) -> dict:
        """`{"data": {feature: stats}, "model": {...}}` (see `ratio_statistics`)."""
        out = {"data": ratio_statistics(self.data_ratio, self.feature_names)}
        if self.model_ratio is not None:
            out["model"] = ratio_statistics(self.model_ratio, self.feature_names)
        return out


def ratio_statistics(ratios: np.ndarray, names: Sequence[str]) -> dict[str, dict]:
    """Median, quartiles, mean and share above 1 of each column of `ratios` `[N, F]`."""
    out = {}
    for j, name in enumerate(names):
        r = ratios[:, j]
        q1, median, q3 = np.quantile(r, [0.25, 0.5, 0.75])
        out[name] = {"median": float(median), "q1": float(q1), "q3": float(q3),
                     "mean": float(np.mean(r)), "share_above_1": float(np.mean(r > 1.0)),
                     "rows": len(r)}
    return out


def feature_importance(model: keras.Model, model_config: ModelConfig, data_dir: str,
                       split: str = "eval", max_rows: int | None = None,
                       mc_samples: int = MC_SAMPLES, batch_size: int = 256, method: str = OOV,
                       feature_names: Sequence[str] | None = None) -> FeatureImportance:
    """Uncertainty ratios of every feature over (the first `max_rows` rows of) a split.

    Args:
        model, model_config: a trained model and its `ModelConfig`.
        data_dir: a preprocessed directory.
        split: `"eval"` or `"train"`.
        max_rows: stop after this many rows (in file order); None reads the split.
        mc_samples: T for the model-stddev ratios; 0 computes only the data ratios.
        batch_size: rows per call; the model sees `(F + 1) * batch_size * T` rows.
        method: `"oov"` (the paper) or `"mean"` (needs `fit_mean_embeddings`).
        feature_names: default every vocabulary feature of the spec.
    """
    spec = data.load_data_spec(data_dir)
    names = saliency_features(spec, feature_names)
    config = data.InputConfig(batch_size=batch_size, shuffle=False)
    dataset = data.make_dataset(data.split_files(data_dir, split), spec, config)
    if max_rows is not None:
        dataset = dataset.unbatch().take(max_rows).batch(batch_size)
    data_parts, model_parts = [], []
    for features, _ in dataset:
        out = feature_saliency(model, features, model_config, spec, (method,), names,
                               mc_samples)[method]
        data_parts.append(out["saliency_data_stddev"].numpy())
        if mc_samples:
            model_parts.append(out["saliency_model_stddev"].numpy())
    if not data_parts:
        raise ValueError(f"no rows in the {split} split of {data_dir}")
    return FeatureImportance(names, np.concatenate(data_parts),
                             np.concatenate(model_parts) if mc_samples else None,
                             method, split, mc_samples)


def _markdown(result: FeatureImportance, summary: dict) -> str:
    lines = [(f"# Feature importance: uncertainty ratio with the feature marginalised "
              f"({result.method})"), "",
             (f"{result.rows} rows of the {result.split} split; ratio = stddev with the "
              "feature marginalised / stddev of the unchanged row (1 = no effect). "
              "Data stddev: deterministic (Zeldes et al. 2018, Fig. 4); model stddev: "
              f"MC dropout, T = {result.mc_samples}."), ""]
    kinds = [k for k in ("data", "model") if k in summary]
    header = "| feature | " + " | ".join(
        f"{k} median | {k} IQR | {k} mean | {k} share > 1" for k in kinds) + " |"
    lines += [header, "|---" * (1 + 4 * len(kinds)) + "|"]
    order = sorted(result.feature_names, key=lambda n: -summary["data"][n]["median"])
    for name in order:
        cells = []
        for k in kinds:
            s = summary[k][name]
            cells += [f"{s['median']:.3f}", f"{s['q1']:.3f}-{s['q3']:.3f}", f"{s['mean']:.3f}",
                      f"{s['share_above_1']:.1%}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_importance_report(result: FeatureImportance, out_dir: str,
                            title: str = "") -> dict[str, str]:
    """Writes `importance.json`, `importance.md` and `importance.png`; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    summary = result.summary()
    paths = {name: os.path.join(out_dir, f"importance.{name}") for name in ("json", "md")}
    with open(paths["json"], "w") as fh:
        json.dump({"method": result.method, "split": result.split, "rows": result.rows,
                   "mc_samples": result.mc_samples, "features": list(result.feature_names),
                   **summary}, fh, indent=2)
    with open(paths["md"], "w") as fh:
        fh.write(_markdown(result, summary))
    ratios = {"data stddev": result.data_ratio}
    if result.model_ratio is not None:
        ratios["model stddev (MC dropout)"] = result.model_ratio
    paths["png"] = plot_importance(ratios, result.feature_names,
                                   os.path.join(out_dir, "importance.png"),
                                   title or f"uncertainty ratio, feature -> {result.method}")
    return paths
