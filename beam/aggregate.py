"""Aggregate valid rows into one example per (target, context[, time bucket]).

DDN learns from *empirical* CTRs `clicks / impressions` together with the number
of impressions `n` behind each, which sets the binomial measurement noise
`s_e^2 = mu (1 - mu) / n` (Zeldes et al. 2018, Sec. 3.2). So raw rows, whether
one impression each or already aggregated, are summed per key: clicks and
impressions add up, and the cost per click becomes the impression-weighted mean.

`SumCountsFn` is a `CombineFn`, so runners pre-combine on each worker before the
shuffle (combiner lifting): only one partial sum per key and bundle crosses it.

Every row's counts are within int64 (validation), but a key's sum may not be: such
a key goes to the dead-letter output as one record with reason `out_of_range` and
`rows` = the raw rows it summed, so the row accounting still reconciles.
"""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam import columns as _columns

__all__ = ["AggregateExamples", "SumCountsFn", "sum_by_key", "to_example"]

INT64_MAX = 2**63 - 1


class SumCountsFn(beam.CombineFn):
    """Sums `(clicks, impressions, cpc x impressions, raw rows)` tuples."""

    def create_accumulator(self):
        return [0, 0, 0.0, 0]

    def add_input(self, accumulator, counts):
        accumulator[0] += counts[0]
        accumulator[1] += counts[1]
        accumulator[2] += counts[2]
        accumulator[3] += counts[3]
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return tuple(accumulator)


def to_example(keyed_counts, feature_names, has_cpc: bool) -> dict:
    """`(key, summed counts)` -> an aggregated example dict.

    The dict holds `key` (the aggregation key), `bucket` (time bucket or None),
    `features` {name: value}, `clicks`, `impressions`, `cpc` (impression-weighted
    mean, or None when the spec has no cpc) and `rows` (raw rows summed).
    """
    key, (clicks, impressions, cpc_weighted, rows) = keyed_counts
    bucket, *values = json.loads(key)
    return {
        "key": key,
        "bucket": bucket,
        "features": dict(zip(feature_names, values)),
        "clicks": clicks,
        "impressions": impressions,
        "cpc": cpc_weighted / impressions if has_cpc else None,
        "rows": rows,
    }


class _ToExampleFn(beam.DoFn):
    def __init__(self, feature_names, has_cpc: bool, rejected_tag: str):
        self._args = (feature_names, has_cpc)
        self._rejected = rejected_tag

    def process(self, keyed_counts):
        key, (_, impressions, _, rows) = keyed_counts
        if impressions > INT64_MAX:  # clicks <= impressions row by row
            yield beam.pvalue.TaggedOutput(self._rejected,
                                           _overflow_record(key, impressions, rows))
            return
        yield to_example(keyed_counts, *self._args)


class AggregateExamples(beam.PTransform):
    """`(key, counts)` rows -> one aggregated example dict per key (see `to_example`).

    Output: a `DoOutputsTuple`: the example dicts (main output) and, under the tag
    `rejected_tag`, dead-letter dicts of keys whose sums leave the int64 range.

    Args:
        spec: the `tfddn.spec.FeatureSpec` whose keys the input carries.
    """

    def __init__(self, spec, rejected_tag: str = "rejected"):
        super().__init__()
        self._feature_names = spec.feature_names
        self._has_cpc = bool(spec.cpc)
        self._rejected = rejected_tag

    def expand(self, keyed_counts):
        return (keyed_counts
                | "SumPerKey" >> beam.CombinePerKey(SumCountsFn())
                | "ToExample" >> beam.ParDo(_ToExampleFn(
                    self._feature_names, self._has_cpc, self._rejected)).with_outputs(
                        self._rejected, main="examples"))


# ---- Batches ---------------------------------------------------------------------------
_AT_RISK = float(2**62)  # a float sum this large may hide an int64 overflow


def sum_by_key(table: pa.Table, final: bool) -> tuple[pa.Table, list]:
    """Sums the counts of a batch's rows per aggregation key (`_key`).

    Each key keeps its first row's other columns. With `final` the result is one row
    per key, sorted by key, and a key whose impressions sum beyond int64 becomes one
    dead-letter dict (reason `out_of_range`, with `rows`); without it (a pre-combine
    within a batch) the rows of such keys are left unsummed for the final step.

    Returns:
        `(table, rejected dead-letter dicts)`.
    """
    if table.num_rows == 0:
        return table, []
    counts = table.select([_columns.KEY, *_columns.COUNTS]).append_column(
        "_first", pa.array(np.arange(table.num_rows))).append_column(
        "_impressions_float", pc.cast(table.column(_columns.IMPRESSIONS), pa.float64(),
                                      safe=False))
    grouped = counts.group_by(_columns.KEY, use_threads=False).aggregate(
        [("_first", "min"), *((name, "sum") for name in _columns.COUNTS),
         ("_impressions_float", "sum")])
    out = table.take(grouped.column("_first_min"))
    for name in _columns.COUNTS:
        out = out.set_column(out.schema.get_field_index(name), name,
                             grouped.column(f"{name}_sum"))
    rejected = []
    risky = pc.greater_equal(grouped.column("_impressions_float_sum"), _AT_RISK)
    if pc.any(risky).as_py():
        risky_keys = pc.filter(grouped.column(_columns.KEY), risky)
        in_risky = pc.is_in(table.column(_columns.KEY), risky_keys)
        out = out.filter(pc.invert(risky))
        raw = table.filter(in_risky)
        if not final:
            out = pa.concat_tables([out, raw])
        else:
            exact = _exact_sums(raw)
            kept = [key for key, (_, impressions, _, _) in exact.items()
                    if impressions <= INT64_MAX]
            for key, (_, impressions, _, rows) in exact.items():
                if impressions > INT64_MAX:
                    rejected.append(_overflow_record(key, impressions, rows))
            if kept:
                firsts = raw.take(pc.index_in(pa.array(kept), raw.column(_columns.KEY)))
                for name, i in zip(_columns.COUNTS, range(4)):
                    firsts = firsts.set_column(firsts.schema.get_field_index(name), name,
                                               pa.array([exact[k][i] for k in kept],
                                                        firsts.schema.field(name).type))
                out = pa.concat_tables([out, firsts])
    if final:
        out = out.sort_by(_columns.KEY)
    return out, rejected


def _exact_sums(table: pa.Table) -> dict:
    sums = {}
    rows = zip(*(table.column(name).to_pylist() for name in (_columns.KEY, *_columns.COUNTS)))
    for key, *counts in rows:
        acc = sums.setdefault(key, [0, 0, 0.0, 0])
        for i, value in enumerate(counts):
            acc[i] += value
    return sums


def _overflow_record(key, impressions, rows) -> dict:
    return {"reason": "out_of_range", "source": None, "row": key, "rows": rows,
            "detail": f"the {rows} rows of this key sum to {impressions} impressions, "
                      "beyond the int64 range"}
