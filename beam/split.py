"""Deterministic train/eval split of aggregated examples.

Train is then divided once more, into train and **validation** (early stopping and
keras-tuner's objective), by a salted stable hash of the key (`SplitValidation`), so
training reads each example once per epoch and knows every split's size.

With a timestamp the split is by time, as a recommender is evaluated on the days
after the ones it was trained on: eval holds the last `eval_buckets` time buckets
present in the data. Without a timestamp (or when there are not more buckets than
`eval_buckets`, so training would be empty) an example goes to eval when a stable
hash of its aggregation key falls below `eval_fraction`. The hash is MD5 from
`hashlib`, never Python's salted `hash()`, so every run and every worker agrees.

The decision is made once, as a singleton "split plan" computed from the distinct
buckets (a global combine over the buckets the validation step saw, so the plan
is ready before aggregation ends and the partition fuses with it), and read by
the partition step as a side input; the same plan is recorded in `metadata.json`.
"""

from __future__ import annotations

import datetime
import hashlib

import apache_beam as beam

__all__ = ["DistinctBucketsFn", "PlanSplit", "SplitExamples", "SplitValidation", "plan_split",
           "split_index", "stable_fraction", "validation_index"]

TRAIN, EVAL = 0, 1
VALIDATION = 1
VALIDATION_SALT = "validation|"
"""Salt of the validation hash, so that it is independent of the eval hash split."""


class DistinctBucketsFn(beam.CombineFn):
    """The sorted distinct non-null time buckets."""

    def create_accumulator(self):
        return set()

    def add_input(self, accumulator, bucket):
        if bucket is not None:
            accumulator.add(bucket)
        return accumulator

    def merge_accumulators(self, accumulators):
        return set().union(*accumulators)

    def extract_output(self, accumulator):
        return sorted(accumulator)


def stable_fraction(key: str) -> float:
    """Maps a key to [0, 1) with MD5: the same on every run, machine and worker."""
    digest = hashlib.md5(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def plan_split(buckets, *, has_timestamp: bool, eval_buckets: int, eval_fraction: float,
               time_bucket_seconds: int) -> dict:
    """Decides how to split, given the sorted distinct time buckets.

    Returns:
        `{"method": "time", "first_eval_bucket": b, ...}` or
        `{"method": "hash", "eval_fraction": f, "reason": ...}`.
    """
    if has_timestamp and len(buckets) > eval_buckets:
        first = buckets[-eval_buckets]
        start = datetime.datetime.fromtimestamp(first * time_bucket_seconds,
                                                tz=datetime.timezone.utc)
        return {
            "method": "time",
            "time_bucket_seconds": time_bucket_seconds,
            "eval_buckets": eval_buckets,
            "num_time_buckets": len(buckets),
            "first_eval_bucket": first,
            "eval_start": start.isoformat(),
        }
    if has_timestamp:
        reason = (f"only {len(buckets)} time bucket(s) of {time_bucket_seconds}s in the data, "
                  f"not more than eval_buckets={eval_buckets}; a time split would leave "
                  "no training data")
    else:
        reason = "the spec has no timestamp column"
    return {"method": "hash", "eval_fraction": eval_fraction,
            "hash": "md5 of the aggregation key", "reason": reason}


def split_index(example: dict, num_partitions: int, plan: dict) -> int:
    """`beam.Partition` function: 0 = train, 1 = eval."""
    del num_partitions  # always 2
    if plan["method"] == "time":
        return EVAL if example["bucket"] >= plan["first_eval_bucket"] else TRAIN
    return EVAL if stable_fraction(example["key"]) < plan["eval_fraction"] else TRAIN


def validation_index(example: dict, num_partitions: int, fraction: float) -> int:
    """`beam.Partition` function over train examples: 0 = train, 1 = validation.

    A stable hash of the aggregation key (salted, so independent of the eval split)
    below `fraction` puts the example in the validation split that early stopping and
    keras-tuner read; training reads every example once per epoch (no filter pass).
    """
    del num_partitions  # always 2
    return VALIDATION if stable_fraction(VALIDATION_SALT + example["key"]) < fraction else TRAIN


class SplitValidation(beam.PTransform):
    """Train examples -> `(train, validation)` PCollections by `validation_index`.

    Args:
        fraction: share of the train keys held out for validation, in [0, 1).
    """

    def __init__(self, fraction: float):
        super().__init__()
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1). "
                             f"Received: validation_fraction={fraction!r}")
        self._fraction = float(fraction)

    def expand(self, examples):
        train, validation = examples | "Partition" >> beam.Partition(
            validation_index, 2, self._fraction)
        return train, validation


class PlanSplit(beam.PTransform):
    """Time buckets (repeats allowed) -> a singleton PCollection with the split plan.

    Args:
        has_timestamp: whether the spec has a timestamp column.
        eval_buckets: number of last time buckets that form eval (time split).
        eval_fraction: share of keys that go to eval (hash split).
        time_bucket_seconds: width of a bucket, for the metadata.
    """

    def __init__(self, *, has_timestamp: bool, eval_buckets: int = 1,
                 eval_fraction: float = 0.1, time_bucket_seconds: int = 86400):
        super().__init__()
        if not isinstance(eval_buckets, int) or eval_buckets < 1:
            raise ValueError(f"eval_buckets must be an integer >= 1. "
                             f"Received: eval_buckets={eval_buckets!r}")
        if not 0.0 <= eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1). "
                             f"Received: eval_fraction={eval_fraction!r}")
        self._plan_args = dict(has_timestamp=has_timestamp, eval_buckets=eval_buckets,
                               eval_fraction=float(eval_fraction),
                               time_bucket_seconds=time_bucket_seconds)

    def expand(self, buckets):
        return (buckets
                | "DistinctBuckets" >> beam.CombineGlobally(DistinctBucketsFn())
                | "Plan" >> beam.Map(plan_split, **self._plan_args))


class SplitExamples(beam.PTransform):
    """Aggregated examples -> `(train, eval)` PCollections, following a split plan.

    Args:
        plan: the singleton PCollection from `PlanSplit`, read as a side input.
    """

    def __init__(self, plan):
        super().__init__()
        self._plan = plan

    def expand(self, examples):
        train, eval_ = examples | "Partition" >> beam.Partition(
            split_index, 2, beam.pvalue.AsSingleton(self._plan))
        return train, eval_
