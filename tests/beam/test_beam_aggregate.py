"""AggregateExamples: per-key sums of clicks and impressions, impression-weighted cpc."""

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from beam_test_utils import market_spec

from beam.aggregate import AggregateExamples, SumCountsFn
from beam.validate import RowValidator

KEY_A = '[3,"t1",["red"],1.5,"p1",[]]'
KEY_B = '[4,"t2",[],2.0,"p1",["x"]]'


def test_sums_per_key_with_weighted_cpc():
    rows = [(KEY_A, (1, 10, 10 * 0.5, 1)),
            (KEY_A, (2, 30, 30 * 1.0, 1)),
            (KEY_B, (0, 5, 5 * 0.2, 1))]
    with BeamTestPipeline() as p:
        examples = (p | beam.Create(rows) | AggregateExamples(market_spec())).examples
        assert_that(examples, equal_to([
            {"key": KEY_A, "bucket": 3, "clicks": 3, "impressions": 40, "cpc": 0.875,
             "rows": 2, "features": {"target_id": "t1", "title": ["red"], "age": 1.5,
                                     "publisher": "p1", "history": []}},
            {"key": KEY_B, "bucket": 4, "clicks": 0, "impressions": 5, "cpc": 0.2,
             "rows": 1, "features": {"target_id": "t2", "title": [], "age": 2.0,
                                     "publisher": "p1", "history": ["x"]}},
        ]))


def test_equal_values_share_a_key():
    """Canonical values: '3', 3.0 and '3.00' are one numeric value; -0.0 is 0.0."""
    validator = RowValidator(market_spec(), "csv", ["target_id", "title", "age", "publisher",
                                                    "history", "clicks", "impressions",
                                                    "cpc", "ts"])
    keys = {validator.validate(f"t,a b,{age},p,h,1,2,0.1,{ts}")[1]
            for age, ts in [("3", "10"), ("3.0", "20"), ("3.00", "1970-01-01T00:01:00")]}
    assert keys == {'[0,"t",["a","b"],3.0,"p",["h"]]'}
    zero = {validator.validate(f"t,a,{age},p,h,1,2,0.1,0")[1] for age in ("0", "-0.0")}
    assert len(zero) == 1


def test_sum_counts_fn_merges_partial_sums():
    fn = SumCountsFn()
    left = fn.add_input(fn.add_input(fn.create_accumulator(), (1, 2, 0.5, 1)), (0, 3, 1.5, 1))
    right = fn.add_input(fn.create_accumulator(), (4, 5, 2.0, 1))
    assert fn.extract_output(fn.merge_accumulators([left, right])) == pytest.approx(
        (5, 10, 4.0, 3))
