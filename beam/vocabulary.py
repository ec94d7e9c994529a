"""Vocabularies with a min-count threshold, from the training split only.

Every categorical, token-list and history feature is looked up in a vocabulary
inside the model; index 0 is a learned OOV embedding (Zeldes et al. 2018, Sec. 4:
new and rare targets share it, which is where model uncertainty is high). A
value's count is the number of *training impressions* that carried it (a token
repeated within one title counts once); values seen in fewer than the feature's
`min_count` impressions are left out and so map to OOV. Eval data never feeds the
vocabulary, so unseen eval values exercise the OOV path as new targets would.

The order is deterministic: most frequent first, ties broken by value.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam import columns as _columns

__all__ = ["ComputeVocabularies", "batch_value_counts", "order_vocabulary", "ordered_values",
           "vocabulary_entries"]


def vocabulary_entries(example: dict, features):
    """Yields `((feature name, value), impressions)` for each vocabulary value.

    Args:
        example: an aggregated example dict (see `beam.aggregate.to_example`).
        features: `(name, is_sequence)` pairs of the vocabulary features.
    """
    impressions = example["impressions"]
    values = example["features"]
    for name, is_sequence in features:
        if is_sequence:
            for item in set(values[name]):
                yield (name, item), impressions
        else:
            yield (name, values[name]), impressions


class _CountValuesFn(beam.DoFn):
    """Sums `vocabulary_entries` within a bundle and emits each value once per bundle.

    In-mapper combining: an example carries one value per feature and several tokens,
    so emitting every `(value, impressions)` pair would send several elements per
    example through the shuffle. Summing per bundle first sends one per distinct value.
    """

    def __init__(self, features):
        self._features = features
        self._counts = {}

    def start_bundle(self):
        self._counts = {}

    def process(self, example):
        counts = self._counts
        for key, impressions in vocabulary_entries(example, self._features):
            counts[key] = counts.get(key, 0) + impressions

    def finish_bundle(self):
        for key, count in self._counts.items():
            yield WindowedValue((key, count), MIN_TIMESTAMP, [GlobalWindow()])
        self._counts = {}


def order_vocabulary(value_counts, min_count: int = 1) -> list:
    """Values with `count >= min_count`, most frequent first, ties by value."""
    kept = [(value, count) for value, count in value_counts if count >= min_count]
    kept.sort(key=lambda vc: (-vc[1], vc[0]))
    return [value for value, _ in kept]


def _by_feature(entry):
    (name, value), count = entry
    return name, (value, count)


def _frequent_enough(entry, min_counts):
    (name, _), count = entry
    return count >= min_counts[name]


def _ordered(grouped, min_counts):
    name, value_counts = grouped
    return name, order_vocabulary((vc for vc in value_counts if vc is not None),
                                  min_counts[name])


class ComputeVocabularies(beam.PTransform):
    """Training examples -> `(feature name, [values, most frequent first])`.

    Emits one element for every vocabulary feature, with an empty list when no
    value reaches `min_count`.

    Args:
        features: the `tfddn.spec.Feature`s that have a vocabulary.
    """

    def __init__(self, features):
        super().__init__()
        self._features = tuple((f.name, f.is_sequence) for f in features)
        self._min_counts = {f.name: f.min_count for f in features}

    def expand(self, examples):
        counts = (examples
                  | "ValueImpressions" >> beam.ParDo(_CountValuesFn(self._features))
                  | "SumPerValue" >> beam.CombinePerKey(sum)
                  | "DropRare" >> beam.Filter(_frequent_enough, self._min_counts)
                  | "ByFeature" >> beam.Map(_by_feature))
        every_feature = examples.pipeline | "EveryFeature" >> beam.Create(
            [(name, None) for name, _ in self._features])
        return ((counts, every_feature)
                | "WithEveryFeature" >> beam.Flatten()
                | "GroupPerFeature" >> beam.GroupByKey()
                | "Order" >> beam.Map(_ordered, self._min_counts))


# ---- Batches ---------------------------------------------------------------------------
VALUE, COUNT = "value", "count"


def batch_value_counts(table: pa.Table, name: str, is_sequence: bool) -> pa.Table:
    """`{value, count}`: the training impressions of each value of feature `name` in a
    batch of aggregated examples (a token counts once per example)."""
    impressions = table.column(_columns.IMPRESSIONS).combine_chunks()
    column = table.column(name).combine_chunks()
    if is_sequence:
        parents = pc.list_parent_indices(column)
        pairs = pa.table({"parent": parents, VALUE: pc.list_flatten(column)})
        pairs = pairs.group_by(["parent", VALUE], use_threads=False).aggregate([])
        column, impressions = pairs.column(VALUE), pc.take(impressions, pairs.column("parent"))
    counts = pa.table({VALUE: column, COUNT: impressions})
    counts = counts.group_by(VALUE, use_threads=False).aggregate([(COUNT, "sum")])
    return counts.rename_columns([VALUE, COUNT])


def ordered_values(tables, min_count: int) -> list:
    """The vocabulary from partial `batch_value_counts` tables: `order_vocabulary`."""
    tables = [t for t in tables if t is not None and t.num_rows]
    if not tables:
        return []
    counts = pa.concat_tables(tables).group_by(VALUE, use_threads=False).aggregate(
        [(COUNT, "sum")]).rename_columns([VALUE, COUNT])
    counts = counts.filter(pc.greater_equal(counts.column(COUNT), min_count))
    counts = counts.sort_by([(COUNT, "descending"), (VALUE, "ascending")])
    return counts.column(VALUE).to_pylist()
