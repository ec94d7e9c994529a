"""ValidateRows: raw rows -> (key, counts) or dead-letter records, against expected rows."""

import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from beam_test_utils import DAY, MARKET_HEADER, market_spec

from beam.validate import RowValidator, ValidateRows
from tfddn.spec import FeatureSpec

HEADER = ",".join(MARKET_HEADER)


def _reasons(rejected):
    return rejected | beam.Map(lambda r: (r["reason"], r["source"], r["row"]))


def test_csv_rows_are_keyed_or_rejected():
    spec = market_spec()
    rows = [
        ("a.csv", f"t1,red shoe,1.5,p1,x|y,1,10,0.5,{DAY + 5}"),
        ("a.csv", 't2,"big, blue",2,p2,,0,4,0.25,1970-01-03T00:00:00Z'),
        ("b.csv", "t3,,3,p3,z,1,3,0.1"),                 # 8 cells
        ("b.csv", "t4,hat,x,p4,z,1,3,0.1,0"),            # age not a number
        ("b.csv", "t5,hat,1,,z,1,3,0.1,0"),              # publisher empty
        ("b.csv", "t6,hat,1,p6,z,5,3,0.1,0"),            # clicks > impressions
    ]
    with BeamTestPipeline() as p:
        out = (p | beam.Create(rows)
               | ValidateRows(spec, "csv", MARKET_HEADER))
        assert_that(out.valid, equal_to([
            ('[1,"t1",["red","shoe"],1.5,"p1",["x","y"]]', (1, 10, 5.0, 1)),
            ('[2,"t2",["big,","blue"],2.0,"p2",[]]', (0, 4, 1.0, 1)),
        ]), label="Valid")
        assert_that(_reasons(out.rejected), equal_to([
            ("malformed_row", "b.csv", "t3,,3,p3,z,1,3,0.1"),
            ("unparsable_value", "b.csv", "t4,hat,x,p4,z,1,3,0.1,0"),
            ("missing_field", "b.csv", "t5,hat,1,,z,1,3,0.1,0"),
            ("clicks_exceed_impressions", "b.csv", "t6,hat,1,p6,z,5,3,0.1,0"),
        ]), label="Rejected")
        assert_that(out.buckets, equal_to([1, 2]), label="Buckets")


def test_jsonl_and_parquet_rows():
    spec = market_spec()
    good = {"target_id": "t1", "title": ["red", "shoe"], "age": 1.5, "publisher": "p1",
            "history": "x|y", "clicks": 1, "impressions": 10, "cpc": 0.5, "ts": DAY}
    lines = [("a.jsonl", json.dumps(good)),
             ("a.jsonl", '{"target_id": "t1", '),
             ("a.jsonl", "[1, 2]"),
             ("a.jsonl", json.dumps({k: v for k, v in good.items() if k != "age"}))]
    with BeamTestPipeline() as p:
        out = p | "Lines" >> beam.Create(lines) | "Jsonl" >> ValidateRows(spec, "jsonl")
        parquet = (p | "Dicts" >> beam.Create([("a.parquet", {**good, "history": None})])
                   | "Parquet" >> ValidateRows(spec, "parquet"))
        assert_that(out.valid, equal_to([
            ('[1,"t1",["red","shoe"],1.5,"p1",["x","y"]]', (1, 10, 5.0, 1))]), label="J")
        assert_that(out.rejected | beam.Map(lambda r: r["reason"]), equal_to(
            ["malformed_row", "malformed_row", "missing_field"]), label="JR")
        assert_that(parquet.valid, equal_to([
            ('[1,"t1",["red","shoe"],1.5,"p1",[]]', (1, 10, 5.0, 1))]), label="P")


def test_impression_rows_and_int64_categorical():
    spec = FeatureSpec.from_dict({
        "log_format": "impressions", "clicked": "clk",
        "features": {"ad": {"role": "target_categorical", "dtype": "int64"},
                     "site": {"role": "context_categorical"}}})
    validator = RowValidator(spec, "csv", ["site", "clk", "ad"])
    assert validator.validate("s1,true,7") == (None, '[null,7,"s1"]', (1, 1, 0.0, 1))
    assert validator.validate("s1,0,7.0") == (None, '[null,7,"s1"]', (0, 1, 0.0, 1))
    for raw, reason in [("s1,2,7", "unparsable_value"), ("s1,1,x7", "wrong_type"),
                        ("s1,,7", "missing_field"), ("s1,1", "malformed_row")]:
        with pytest.raises(Exception) as info:
            validator.validate(raw)
        assert info.value.reason == reason, raw


def test_csv_header_must_hold_every_spec_column():
    with pytest.raises(ValueError, match="'cpc'"):
        RowValidator(market_spec(), "csv", [c for c in MARKET_HEADER if c != "cpc"])
