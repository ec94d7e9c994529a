"""Parsing of single raw values: canonical values out, reason codes for bad input."""

import datetime

import pytest

from beam import values
from beam.values import RowRejected


def _reason(fn, *args):
    with pytest.raises(RowRejected) as info:
        fn(*args)
    return info.value.reason


@pytest.mark.parametrize("raw, expected", [(3, 3), ("3", 3), (3.0, 3), ("3.0", 3),
                                           (" 7 ", 7), ("1e3", 1000), (0, 0)])
def test_parse_count_accepts_integers(raw, expected):
    assert values.parse_count("clicks", raw) == expected


@pytest.mark.parametrize("raw, reason", [(2.5, "unparsable_value"), ("2.5", "unparsable_value"),
                                         ("abc", "unparsable_value"), ("nan", "unparsable_value"),
                                         (float("inf"), "unparsable_value"),
                                         (True, "unparsable_value"), ([1], "unparsable_value"),
                                         (-1, "negative_count"), ("-2", "negative_count")])
def test_parse_count_rejects(raw, reason):
    assert _reason(values.parse_count, "clicks", raw) == reason


def test_reject_detail_names_column_and_value():
    with pytest.raises(RowRejected) as info:
        values.parse_count("imps", "2.5")
    assert "'imps'" in info.value.detail and "'2.5'" in info.value.detail


@pytest.mark.parametrize("raw, expected", [(0, 0), (1, 1), ("0", 0), ("1", 1), (True, 1),
                                           (False, 0), ("true", 1), ("False", 0), (1.0, 1)])
def test_parse_clicked(raw, expected):
    assert values.parse_clicked("clicked", raw) == expected


@pytest.mark.parametrize("raw", [2, "2", "yes", -1, 0.5])
def test_parse_clicked_rejects(raw):
    assert _reason(values.parse_clicked, "clicked", raw) == "unparsable_value"


@pytest.mark.parametrize("raw, expected", [
    (86400, 86400.0), ("86400", 86400.0), (1.5, 1.5),
    ("1970-01-02T00:00:00Z", 86400.0), ("1970-01-02T00:00:00", 86400.0),
    ("1970-01-02T02:00:00+02:00", 86400.0), ("1970-01-02", 86400.0),
    (datetime.datetime(1970, 1, 2), 86400.0), (datetime.date(1970, 1, 2), 86400.0)])
def test_parse_timestamp(raw, expected):
    assert values.parse_timestamp("ts", raw) == expected


@pytest.mark.parametrize("raw", ["yesterday", "inf", float("nan"), "2024-13-01"])
def test_parse_timestamp_rejects(raw):
    assert _reason(values.parse_timestamp, "ts", raw) == "unparsable_value"


def test_parse_float():
    assert values.parse_float("age", "1.25") == 1.25
    assert values.parse_float("age", 3) == 3.0
    assert _reason(values.parse_float, "age", "-inf") == "unparsable_value"
    assert _reason(values.parse_float, "age", "x") == "unparsable_value"


def test_parse_categorical():
    assert values.parse_categorical("site", "abc", "string") == "abc"
    assert values.parse_categorical("site", 12, "string") == "12"
    assert values.parse_categorical("site", "12", "int64") == 12
    assert values.parse_categorical("site", 12.0, "int64") == 12
    assert _reason(values.parse_categorical, "site", "12a", "int64") == "wrong_type"
    assert _reason(values.parse_categorical, "site", 2.5, "int64") == "wrong_type"
    assert _reason(values.parse_categorical, "site", 2**64, "int64") == "out_of_range"
    assert _reason(values.parse_categorical, "site", [1], "string") == "wrong_type"
    assert _reason(values.parse_categorical, "site", "a\nb", "string") == "unparsable_value"


def test_parse_sequence():
    assert values.parse_sequence("title", "red  shoe ", "string", " ") == ["red", "shoe"]
    assert values.parse_sequence("hist", "3|4||5", "int64", "|") == [3, 4, 5]
    assert values.parse_sequence("hist", ["a", "", "b"], "string", "|") == ["a", "b"]
    assert values.parse_sequence("hist", [3, "4"], "int64", "|") == [3, 4]
    assert values.parse_sequence("hist", None, "string", "|") == []
    assert values.parse_sequence("hist", "", "string", "|") == []
    assert _reason(values.parse_sequence, "hist", "3|x", "int64", "|") == "wrong_type"
    assert _reason(values.parse_sequence, "hist", 5, "string", "|") == "wrong_type"
