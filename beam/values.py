"""Parsers for single raw values: counts, floats, click flags, timestamps, ids.

Raw logs arrive as CSV strings, JSON values or Parquet (Arrow) values. Each parser
takes the raw column name and value and returns the canonical Python value, or
raises `RowRejected` with one of the stable reason codes in `REASONS` and a
message that names the column and shows the bad value.

Pure Python on purpose: these run once per raw row inside the fused validation
DoFn, so they avoid TensorFlow, NumPy and regular expressions.
"""

from __future__ import annotations

import datetime
import math
import operator

from tfddn.spec import split_cell

__all__ = [
    "REASONS",
    "RowRejected",
    "parse_categorical",
    "parse_clicked",
    "parse_count",
    "parse_float",
    "parse_int64",
    "parse_sequence",
    "parse_string",
    "parse_timestamp",
]

# Dead-letter reason codes. Stable strings: dashboards and tests key on them.
REASONS = (
    "invalid_encoding",
    "malformed_row",
    "missing_field",
    "unparsable_value",
    "wrong_type",
    "negative_count",
    "clicks_exceed_impressions",
    "zero_impressions",
    "out_of_range",
)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38
# Unix seconds of 0001-01-01 and 9999-12-31T23:59:59 UTC: the range of a datetime.
_TIMESTAMP_MIN, _TIMESTAMP_MAX = -62135596800.0, 253402300799.0
_TRUE, _FALSE = frozenset(("1", "true")), frozenset(("0", "false"))


class RowRejected(Exception):
    """A raw row failed validation.

    Attributes:
        reason: one of `REASONS`.
        detail: human text naming the field and the bad value.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _integer(value):
    """Returns `value` as an int if it is an integral number, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        if not _plain_number(value):
            return None
        try:
            return int(value)
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if math.isfinite(number) and number.is_integer() else None
    try:  # NumPy / Arrow integer scalars
        return operator.index(value)
    except TypeError:
        return None


def _plain_number(text: str) -> bool:
    """False for number syntax Python accepts but logs should not: `1_0`, non-ASCII digits."""
    return text.isascii() and "_" not in text


def parse_count(column: str, value) -> int:
    """A non-negative int64 count: accepts `3`, `3.0` and `"3"`, rejects `2.5` and `1_0`."""
    number = _integer(value)
    if number is None:
        raise RowRejected("unparsable_value",
                          f"column {column!r}: {value!r} is not an integer count")
    if number < 0:
        raise RowRejected("negative_count", f"column {column!r}: count {value!r} is negative")
    if number > _INT64_MAX:
        raise RowRejected("out_of_range", f"column {column!r}: count {value!r} exceeds the "
                          "int64 range")
    return number


def parse_float(column: str, value) -> float:
    """A finite float within the float32 range, from a number or a numeric string."""
    if isinstance(value, bool) or (isinstance(value, str) and not _plain_number(value)):
        number = None
    else:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = None
    if number is None or not math.isfinite(number):
        raise RowRejected("unparsable_value",
                          f"column {column!r}: {value!r} is not a finite number")
    if abs(number) > FLOAT32_MAX:
        raise RowRejected("out_of_range", f"column {column!r}: {value!r} is outside the "
                          "float32 range the examples store")
    return number + 0.0  # -0.0 -> 0.0, so equal values share one aggregation key


def parse_clicked(column: str, value) -> int:
    """A 0/1 click flag: accepts 0/1, "0"/"1", true/false (any case)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return 1
        if text in _FALSE:
            return 0
    number = _integer(value)
    if number in (0, 1):
        return number
    raise RowRejected("unparsable_value",
                      f"column {column!r}: click flag {value!r} is not 0/1 or true/false")


def parse_timestamp(column: str, value) -> float:
    """Unix seconds from a number, a numeric string or an ISO-8601 string (UTC if naive)."""
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, datetime.date):
        moment = datetime.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            return _timestamp_in_range(column, value, parse_float(column, value))
        except RowRejected as err:
            if err.reason == "out_of_range":
                raise
        try:
            moment = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            raise RowRejected("unparsable_value", f"column {column!r}: {value!r} is neither "
                              "unix seconds nor an ISO-8601 timestamp") from None
    else:
        return _timestamp_in_range(column, value, parse_float(column, value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _timestamp_in_range(column: str, value, seconds: float) -> float:
    if not _TIMESTAMP_MIN <= seconds <= _TIMESTAMP_MAX:
        raise RowRejected("out_of_range", f"column {column!r}: timestamp {value!r} is outside "
                          "the years 1-9999")
    return seconds


def parse_string(column: str, value) -> str:
    """A categorical/token value of dtype "string" (an integer becomes its digits)."""
    if type(value) is str:
        if "\n" in value or "\r" in value or "\x00" in value:
            raise RowRejected("unparsable_value", f"column {column!r}: {value!r} contains a "
                              "line break or NUL, which a one-value-per-line vocabulary "
                              "cannot hold")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):  # a str subclass
        return parse_string(column, str(value))
    raise RowRejected("wrong_type", f"column {column!r}: {value!r} is not a string value")


def parse_int64(column: str, value) -> int:
    """A categorical/token value of dtype "int64": accepts 7, 7.0 and "7"."""
    number = _integer(value)
    if number is None:
        raise RowRejected("wrong_type", f"column {column!r}: {value!r} is not an int64 value "
                          "(the spec declares dtype int64)")
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise RowRejected("out_of_range", f"column {column!r}: {value!r} is outside the int64 "
                          "range")
    return number


def parse_categorical(column: str, value, dtype: str):
    """One categorical value: `str` for dtype "string", `int` for dtype "int64".

    The caller has already turned missing values into `missing_field`.
    """
    return parse_int64(column, value) if dtype == "int64" else parse_string(column, value)


def parse_sequence(column: str, value, dtype: str, separator: str) -> list:
    """A token list or history: a list, or a string split by `separator`.

    Empty items are dropped; `None` or an empty string is an empty list.
    """
    if isinstance(value, bytes) or getattr(value, "ndim", None) == 0:  # not a sequence
        items = None
    else:
        try:
            items = split_cell(value, separator)  # the spec's codec (tfddn.spec)
        except TypeError:
            items = None
    if items is None:
        raise RowRejected("wrong_type", f"column {column!r}: {value!r} is neither a list "
                          f"nor a {separator!r}-separated string")
    parse = parse_int64 if dtype == "int64" else parse_string
    out = []
    for item in items:
        if item is None:
            raise RowRejected("wrong_type", f"column {column!r}: list {value!r} holds a null")
        if isinstance(item, str) and not (item.strip() if dtype == "int64" else item):
            continue
        out.append(parse(column, item))
    return out
