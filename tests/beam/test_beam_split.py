"""Deterministic train/eval split: last time buckets, or a stable hash of the key."""

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam.split import PlanSplit, SplitExamples, plan_split, stable_fraction

PLAN_ARGS = dict(eval_fraction=0.25, time_bucket_seconds=86400)


def test_plan_time_split_takes_last_buckets():
    plan = plan_split([19000, 19001, 19005], has_timestamp=True, eval_buckets=2, **PLAN_ARGS)
    assert plan["method"] == "time"
    assert plan["first_eval_bucket"] == 19001
    assert plan["num_time_buckets"] == 3
    assert plan["eval_start"] == "2022-01-09T00:00:00+00:00"


def test_plan_falls_back_to_hash_and_says_why():
    one_bucket = plan_split([19000], has_timestamp=True, eval_buckets=1, **PLAN_ARGS)
    assert one_bucket["method"] == "hash" and one_bucket["eval_fraction"] == 0.25
    assert "only 1 time bucket" in one_bucket["reason"]
    no_time = plan_split([], has_timestamp=False, eval_buckets=1, **PLAN_ARGS)
    assert no_time["method"] == "hash" and "no timestamp" in no_time["reason"]


def test_stable_fraction_is_md5_not_salted_hash():
    assert stable_fraction("abc") == 0x900150983CD24FB0 / 2**64


def _example(key, bucket):
    return {"key": key, "bucket": bucket}


def test_time_split_in_pipeline():
    examples = [_example(f"k{i}", bucket) for i, bucket in enumerate([5, 5, 6, 7, 7, 9])]
    with BeamTestPipeline() as p:
        plan = (p | "Buckets" >> beam.Create([5, 5, 6, 7, 9, 9])
                | PlanSplit(has_timestamp=True, eval_buckets=2))
        train, eval_ = p | "Examples" >> beam.Create(examples) | SplitExamples(plan)
        assert_that(train, equal_to(examples[:3]), label="Train")
        assert_that(eval_, equal_to(examples[3:]), label="Eval")


def test_hash_split_in_pipeline():
    examples = [_example(f'[null,"ad{i}"]', None) for i in range(2000)]
    expected_eval = [e for e in examples if stable_fraction(e["key"]) < 0.1]
    assert len(expected_eval) == pytest.approx(200, abs=4 * (2000 * 0.1 * 0.9) ** 0.5)
    with BeamTestPipeline() as p:
        plan = (p | "NoBuckets" >> beam.Create([])
                | PlanSplit(has_timestamp=False, eval_fraction=0.1))
        train, eval_ = p | "Examples" >> beam.Create(examples) | SplitExamples(plan)
        assert_that(eval_, equal_to(expected_eval), label="Eval")
        assert_that(train | beam.combiners.Count.Globally(),
                    equal_to([2000 - len(expected_eval)]), label="Train")


@pytest.mark.parametrize("kwargs", [dict(eval_buckets=0), dict(eval_fraction=1.0),
                                    dict(eval_fraction=-0.1)])
def test_plan_split_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        PlanSplit(has_timestamp=True, **kwargs)


def test_validation_index_is_a_salted_stable_hash():
    from beam.split import VALIDATION_SALT, validation_index

    keys = [f"key-{i}" for i in range(2000)]
    chosen = [validation_index({"key": k}, 2, 0.1) for k in keys]
    assert chosen == [int(stable_fraction(VALIDATION_SALT + k) < 0.1) for k in keys]
    assert 150 < sum(chosen) < 250  # about 10%
    assert not any(validation_index({"key": k}, 2, 0.0) for k in keys)
    # Independent of the eval hash: validation keys are not the low eval-hash keys.
    low = [k for k in keys if stable_fraction(k) < 0.1]
    assert 0 < sum(validation_index({"key": k}, 2, 0.1) for k in low) < len(low) / 3
