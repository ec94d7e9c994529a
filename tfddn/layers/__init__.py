"""Keras 3 layers of tfddn (all registered under the `tfddn` package for saving)."""

from tfddn.layers.features import CategoricalEmbedding, NumericFeature, SequenceEmbedding
from tfddn.layers.heads import MixtureDensityHead, RegressionHead

__all__ = ["CategoricalEmbedding", "MixtureDensityHead", "NumericFeature", "RegressionHead",
           "SequenceEmbedding"]
