"""Global statistics as PCollections: split totals and numeric feature stats.

Every count in `metadata.json` is computed by a combine, not by Beam metrics, so
it is exact on every runner and reaches the metadata step as a side input.
`NumericStatsFn` merges partial (count, mean, M2) moments with Chan et al.'s
parallel update, which stays accurate where a sum of squares would cancel.
"""

from __future__ import annotations

import math

import apache_beam as beam
import numpy as np

__all__ = ["MergeMomentsFn", "NumericStats", "NumericStatsFn", "SplitTotalsFn", "batch_moments",
           "empty_numeric_stats"]


class SplitTotalsFn(beam.CombineFn):
    """Aggregated examples -> `{"examples", "clicks", "impressions", "rows"}` totals."""

    def create_accumulator(self):
        return [0, 0, 0, 0]

    def add_input(self, accumulator, example):
        accumulator[0] += 1
        accumulator[1] += example["clicks"]
        accumulator[2] += example["impressions"]
        accumulator[3] += example["rows"]
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for i, total in enumerate(accumulator):
                merged[i] += total
        return merged

    def extract_output(self, accumulator):
        return dict(zip(("examples", "clicks", "impressions", "rows"), accumulator))


def empty_numeric_stats() -> dict:
    return {"count": 0, "mean": None, "std": None, "min": None, "max": None}


class NumericStatsFn(beam.CombineFn):
    """Floats -> `{"count", "mean", "std" (population), "min", "max"}`."""

    def create_accumulator(self):
        return (0, 0.0, 0.0, math.inf, -math.inf)  # count, mean, M2, min, max

    def add_input(self, accumulator, value):
        count, mean, m2, low, high = accumulator
        count += 1
        delta = value - mean
        mean += delta / count
        m2 += delta * (value - mean)
        return count, mean, m2, min(low, value), max(high, value)

    def merge_accumulators(self, accumulators):
        count, mean, m2, low, high = self.create_accumulator()
        for n_b, mean_b, m2_b, low_b, high_b in accumulators:
            if not n_b:
                continue
            total = count + n_b
            delta = mean_b - mean
            mean += delta * n_b / total
            m2 += m2_b + delta * delta * count * n_b / total
            count, low, high = total, min(low, low_b), max(high, high_b)
        return count, mean, m2, low, high

    def extract_output(self, accumulator):
        count, mean, m2, low, high = accumulator
        if not count:
            return empty_numeric_stats()
        return {"count": count, "mean": mean, "std": math.sqrt(max(m2, 0.0) / count),
                "min": low, "max": high}


def _numeric_values(example, names):
    values = example["features"]
    for name in names:
        yield name, values[name]


def _with_every_feature(stats, names):
    return {name: stats.get(name, empty_numeric_stats()) for name in names}


class NumericStats(beam.PTransform):
    """Examples -> a singleton `{feature: NumericStatsFn output}` for every numeric feature.

    Args:
        names: the numeric feature names.
    """

    def __init__(self, names):
        super().__init__()
        self._names = tuple(names)

    def expand(self, examples):
        return (examples
                | "NumericValues" >> beam.FlatMap(_numeric_values, self._names)
                | "MomentsPerFeature" >> beam.CombinePerKey(NumericStatsFn())
                | "ToDict" >> beam.combiners.ToDict()
                | "EveryFeature" >> beam.Map(_with_every_feature, self._names))


def batch_moments(values) -> tuple:
    """A `NumericStatsFn` accumulator `(count, mean, M2, min, max)` of an array."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return NumericStatsFn().create_accumulator()
    mean = float(values.mean())
    return (len(values), mean, float(np.square(values - mean).sum()), float(values.min()),
            float(values.max()))


class MergeMomentsFn(NumericStatsFn):
    """`NumericStatsFn` over partial accumulators (from `batch_moments`), not values."""

    def add_input(self, accumulator, moments):
        return self.merge_accumulators([accumulator, moments])
