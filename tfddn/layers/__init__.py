"""Keras 3 layers of tfddn (all registered under the `tfddn` package for saving)."""

from tfddn.layers.attention import (
    FieldInteractionAttention,
    HistoryAttention,
    SequenceItemEmbedding,
)
from tfddn.layers.features import CategoricalEmbedding, NumericFeature, SequenceEmbedding
from tfddn.layers.heads import BetaMixtureHead, MixtureDensityHead, RegressionHead

__all__ = ["BetaMixtureHead", "CategoricalEmbedding", "FieldInteractionAttention",
           "HistoryAttention", "MixtureDensityHead", "NumericFeature", "RegressionHead", "SequenceEmbedding",
           "SequenceItemEmbedding"]
