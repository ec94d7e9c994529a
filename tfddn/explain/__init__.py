"""Debugging a DDN with uncertainty and attention (Naor et al.; Zeldes et al. 2018, Fig. 4).

- `marginalise`: remove a categorical feature at the input (OOV or mean embedding);
- `saliency`: per-prediction change of model / data uncertainty and of the mean;
- `importance`: the distribution of those ratios over a data set, per feature;
- `attention`: the attention weights of a model that has attention;
- `report`: the `tfddn explain` reports (JSON, markdown, PNG).
"""

from tfddn.explain.attention import attention_weights
from tfddn.explain.importance import (FeatureImportance, feature_importance, ratio_statistics,
                                      write_importance_report)
from tfddn.explain.marginalise import (MEAN, METHODS, OOV, embedding_layers, expand,
                                       fit_mean_embeddings, marginalise, saliency_features)
from tfddn.explain.report import attention_run, importance_run, load_rows, sample_run
from tfddn.explain.saliency import MARGINAL_KEYS, feature_saliency

__all__ = ["MARGINAL_KEYS", "MEAN", "METHODS", "OOV", "FeatureImportance", "attention_run",
           "attention_weights", "embedding_layers", "expand", "feature_importance",
           "feature_saliency", "fit_mean_embeddings", "importance_run", "load_rows",
           "marginalise", "ratio_statistics", "saliency_features", "sample_run",
           "write_importance_report"]
