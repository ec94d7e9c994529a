"""Parse, validate and key one raw log row: the first step after reading.

Every raw row (a CSV line, a JSON line or a Parquet row dict) either becomes a
keyed count record ready for aggregation or a dead-letter record with a stable
reason code (see `beam.values.REASONS`). Parsing, validation and keying are
fused into one DoFn because this is the only step that touches every raw row.

Checks run in spec order (features, then clicks/impressions or clicked, cpc,
timestamp) and the first failing check names the reason; the cross-field checks
`zero_impressions` and `clicks_exceed_impressions` come last.

The aggregation key is a compact JSON list `[time_bucket, value_1, ..., value_n]`
of every spec feature's canonical value in spec order (`time_bucket` is
`floor(ts / spec.time_bucket_seconds)`, or null without a timestamp). The counts
are `(clicks, impressions, cpc x impressions, raw rows)`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import sys

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam import columns as _columns
from beam import values as _values
from beam.sources import has_invalid_encoding, printable
from beam.values import RowRejected

__all__ = ["BUCKETS", "BatchValidator", "REJECTED", "RowBatch", "VALID", "RowValidator",
           "ValidateRows"]

VALID = "valid"
REJECTED = "rejected"
BUCKETS = "buckets"
_ABSENT = object()  # a JSON/Parquet row without the column at all
_KEY_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a CSV field may be of any length


def _object_without_duplicates(pairs):
    row = dict(pairs)
    if len(row) != len(pairs):
        names = [name for name, _ in pairs]
        twice = sorted({n for n in names if names.count(n) > 1})
        raise RowRejected("malformed_row", f"the JSON object names {twice} more than once")
    return row


_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_object_without_duplicates)


class RowValidator:
    """Turns one raw row into `(key, counts)` or raises `RowRejected`.

    Args:
        spec: the `tfddn.spec.FeatureSpec`.
        input_format: `"csv"`, `"jsonl"` or `"parquet"`.
        header: the CSV column names (required for CSV, ignored otherwise).
    """

    def __init__(self, spec, input_format: str, header=None):
        if input_format not in ("csv", "jsonl", "parquet"):
            raise ValueError(f"input_format must be csv, jsonl or parquet. "
                             f"Received: input_format={input_format!r}")
        self.spec = spec
        self.input_format = input_format
        fields = []  # (column, parser, is_sequence)
        for f in spec.features:
            if f.is_numeric:
                parse = _values.parse_float
            elif f.is_sequence:
                parse = functools.partial(_values.parse_sequence, dtype=f.dtype,
                                          separator=f.separator)
            else:
                parse = (_values.parse_int64 if f.dtype == "int64"
                         else _values.parse_string)
            fields.append((f.name, parse, f.is_sequence))
        if spec.log_format == "aggregated":
            fields.append((spec.clicks, _values.parse_count, False))
            fields.append((spec.impressions, _values.parse_count, False))
        else:
            fields.append((spec.clicked, _values.parse_clicked, False))
        if spec.cpc:
            fields.append((spec.cpc, _parse_cpc, False))
        if spec.timestamp:
            fields.append((spec.timestamp, _values.parse_timestamp, False))
        self._fields = tuple(fields)
        self.columns = tuple(column for column, _, _ in fields)  # the spec's raw columns
        self._num_features = len(spec.features)
        self._header = None
        if input_format == "csv":
            if not header:
                raise ValueError("input_format='csv' needs the header's column names")
            self._header = tuple(header)
            missing = [c for c in self.columns if c not in self._header]
            if missing:
                raise ValueError(f"the CSV header has no column(s) {missing} named by the "
                                 f"spec. Received header: {list(self._header)}")
            self._indices = tuple(self._header.index(c) for c in self.columns)

    def extract(self, raw) -> list:
        """The raw values of the spec's columns, in field order."""
        if isinstance(raw, bytes):  # `beam.sources` passes undecodable records as bytes
            raise RowRejected("invalid_encoding", "the record holds bytes that are not UTF-8 "
                              "(shown as \\xNN in the row)")
        if self.input_format == "csv":
            try:
                cells = next(csv.reader([raw])) if '"' in raw else raw.split(",")
            except csv.Error as err:
                raise RowRejected("malformed_row", f"not a CSV record: {err}") from None
            if len(cells) != len(self._header):
                raise RowRejected("malformed_row", f"expected {len(self._header)} CSV cells "
                                  f"(one per header column), found {len(cells)}")
            return [cells[i] for i in self._indices]
        if self.input_format == "jsonl":
            try:
                raw = _JSON_DECODER.decode(raw)
            except RowRejected:
                raise
            except (ValueError, RecursionError) as err:
                raise RowRejected("malformed_row", f"not valid JSON: {err}") from None
            if not isinstance(raw, dict):
                raise RowRejected("malformed_row",
                                  f"a JSON line must be an object, got {type(raw).__name__}")
        return [raw.get(column, _ABSENT) for column in self.columns]

    def validate(self, raw) -> tuple[int | None, str, tuple[int, int, float, int]]:
        """Returns `(time bucket or None, key, (clicks, impressions, cpc x impressions, 1))`."""
        parsed = []
        append = parsed.append
        for (column, parse, is_sequence), value in zip(self._fields, self.extract(raw)):
            if value is _ABSENT:
                raise RowRejected("missing_field", f"column {column!r} is absent")
            if not is_sequence and (value is None or value == ""):
                raise RowRejected("missing_field", f"column {column!r} is empty "
                                  f"(got {value!r}) but the spec requires it")
            append(parse(column, value))
        spec = self.spec
        labels = iter(parsed[self._num_features:])
        if spec.log_format == "aggregated":
            clicks, impressions = next(labels), next(labels)
            if impressions == 0:
                raise RowRejected("zero_impressions", f"column {spec.impressions!r} is 0: a "
                                  "row without impressions carries no CTR information")
            if clicks > impressions:
                raise RowRejected("clicks_exceed_impressions",
                                  f"column {spec.clicks!r} = {clicks} exceeds column "
                                  f"{spec.impressions!r} = {impressions}")
        else:
            clicks, impressions = next(labels), 1
        cpc_weighted = next(labels) * impressions if spec.cpc else 0.0
        bucket = None
        if spec.timestamp:
            bucket = math.floor(next(labels) / spec.time_bucket_seconds)
        key = _KEY_ENCODER.encode([bucket, *parsed[:self._num_features]])
        return bucket, key, (clicks, impressions, cpc_weighted, 1)


def _parse_cpc(column, value):
    cpc = _values.parse_float(column, value)
    if cpc < 0:
        raise RowRejected("negative_count", f"column {column!r}: cpc {value!r} is negative")
    return cpc


class _ValidateFn(beam.DoFn):
    """(source, raw row) -> (key, counts), or a tagged dead-letter record.

    Also collects the distinct time buckets of each bundle and emits them once,
    in `finish_bundle`, so the split plan costs a set insertion per row.
    """

    def __init__(self, spec, input_format, header):
        self._args = (spec, input_format, header)
        self._validator = None
        self._buckets = set()

    def setup(self):
        self._validator = RowValidator(*self._args)

    def start_bundle(self):
        self._buckets = set()

    def process(self, element):
        source, raw = element
        try:
            bucket, key, counts = self._validator.validate(raw)
        except RowRejected as err:
            if isinstance(raw, bytes):
                raw = printable(raw)
            yield beam.pvalue.TaggedOutput(REJECTED, {
                "reason": err.reason, "detail": err.detail, "source": source, "row": raw})
            return
        self._buckets.add(bucket)
        yield key, counts

    def finish_bundle(self):
        for bucket in self._buckets:
            if bucket is not None:
                yield beam.pvalue.TaggedOutput(BUCKETS, WindowedValue(
                    bucket, MIN_TIMESTAMP, [GlobalWindow()]))


class ValidateRows(beam.PTransform):
    """Validates every raw row against the spec and keys it for aggregation.

    Input: `(source filename, raw row)` pairs (see `beam.sources.ReadRawRows`).
    Output: a `DoOutputsTuple` with `.valid` = `(key, counts)` pairs,
    `.rejected` = dead-letter dicts `{"reason", "detail", "source", "row"}` and
    `.buckets` = the time buckets of valid rows (each at least once; empty without
    a timestamp), for `beam.split.PlanSplit`.

    Args:
        spec: the `tfddn.spec.FeatureSpec`.
        input_format: `"csv"`, `"jsonl"` or `"parquet"`.
        header: the CSV column names (CSV only).
    """

    def __init__(self, spec, input_format: str, header=None):
        super().__init__()
        RowValidator(spec, input_format, header)  # fail at construction, not on workers
        self._spec, self._format, self._header = spec, input_format, header

    def expand(self, rows):
        return rows | "ParseValidateKey" >> beam.ParDo(
            _ValidateFn(self._spec, self._format, self._header)).with_outputs(
                REJECTED, BUCKETS, main=VALID)


@dataclasses.dataclass
class RowBatch:
    """One batch of raw rows after validation.

    Attributes:
        table: the valid rows as an Arrow table of `beam.columns.table_schema` (key,
            bucket, parsed features, counts).
        rejected: dead-letter dicts `{"reason", "detail", "source", "row"}`.
        rows_read: raw rows in the batch (valid + rejected; blank records are not rows).
        header_seen: the CSV header was among the batch's records.
    """

    table: pa.Table
    rejected: list
    rows_read: int
    header_seen: bool = False


class BatchValidator:
    """Validates raw rows a batch at a time, with the results of `RowValidator`.

    A CSV block of plain rows (valid UTF-8; every quoted cell `"..."` whole, without
    quotes inside) is parsed by Arrow with quoting off, each line one record, and its
    columns by `beam.columns.FastColumns`; rows the fast path does not accept, and every
    block that is not plain, go through `RowValidator` record by record.

    Args:
        spec: the `tfddn.spec.FeatureSpec`.
        input_format: `"csv"`, `"jsonl"` or `"parquet"`.
        header: the CSV column names (CSV only).
    """

    def __init__(self, spec, input_format: str, header=None):
        self.spec = spec
        self.rows = RowValidator(spec, input_format, header)
        self.fast = _columns.FastColumns(spec)
        self.schema = _columns.table_schema(spec)
        self._header = tuple(header) if header else None

    def reject(self, err: RowRejected, source, raw) -> dict:
        if isinstance(raw, bytes):
            raw = printable(raw)
        return {"reason": err.reason, "detail": err.detail, "source": source, "row": raw}

    def records(self, source, records, header_pending: bool = False) -> RowBatch:
        """The exact path: `records` (text, bytes or Parquet dicts), one at a time.

        With `header_pending` the first non-blank text record is the CSV header.
        """
        valid, rejected, read, header_seen = [], [], 0, False
        for raw in records:
            if isinstance(raw, str):
                if not raw.strip():
                    continue
                if header_pending:
                    header_pending, header_seen = False, True
                    continue
                if has_invalid_encoding(raw):  # RowValidator rejects bytes
                    raw = raw.encode("utf-8", "surrogateescape")
            read += 1
            try:
                valid.append(self.rows.validate(raw))
            except RowRejected as err:
                rejected.append(self.reject(err, source, raw))
        return RowBatch(self._table_of(valid), rejected, read, header_seen)

    def _table_of(self, validated) -> pa.Table:
        """`RowValidator.validate` results -> a table (values from the JSON keys)."""
        spec = self.spec
        keys = [key for _, key, _ in validated]
        values = list(zip(*(json.loads(key) for key in keys))) or [
            [] for _ in range(len(spec.features) + 1)]
        counts = list(zip(*(c for _, _, c in validated))) or [[], [], [], []]
        data = {_columns.KEY: keys, _columns.BUCKET: values[0]}
        for f, column in zip(spec.features, values[1:]):
            data[f.name] = column
        for name, column in zip(_columns.COUNTS, counts):
            data[name] = column
        return pa.Table.from_pydict(data, schema=self.schema)

    def csv_block(self, source, block: bytes, header_pending: bool) -> RowBatch | None:
        """The fast path for one CSV block; None when the block is not plain."""
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return None
        invalid = []

        def on_invalid_row(row):
            invalid.append(row.text)
            return "skip"

        header = self._header
        try:
            table = pa_csv.read_csv(
                pa.py_buffer(block),
                read_options=pa_csv.ReadOptions(column_names=header),
                parse_options=pa_csv.ParseOptions(quote_char=False,
                                                  invalid_row_handler=on_invalid_row),
                convert_options=pa_csv.ConvertOptions(
                    column_types={c: pa.string() for c in header},
                    strings_can_be_null=False, quoted_strings_can_be_null=False))
        except (pa.ArrowInvalid, UnicodeDecodeError):
            return None
        invalid = [text for text in invalid if text.strip()]  # blank records are not rows
        if any('"' in text for text in invalid):
            return None
        raw = {name: table.column(name).combine_chunks() for name in header}
        cells = {}
        for name, column in raw.items():
            quoted = pc.match_substring(column, '"')
            if pc.any(quoted).as_py():
                whole = pc.and_(pc.and_(pc.starts_with(column, '"'), pc.ends_with(column, '"')),
                                pc.equal(pc.count_substring(column, '"'), 2))
                if pc.any(pc.and_(quoted, pc.invert(whole))).as_py():
                    return None  # a quote inside a cell: csv's rules, record by record
                column = pc.if_else(quoted, pc.utf8_slice_codeunits(column, 1, -1), column)
            cells[name] = column
        header_seen = False
        if header_pending and table.num_rows:
            if [cells[name][0].as_py() for name in header] != list(header):
                return None
            header_seen = True
            raw = {name: column[1:] for name, column in raw.items()}
            cells = {name: column[1:] for name, column in cells.items()}
        parsed = self.fast.parse({c: cells[c] for c in self.rows.columns})
        table = self._fast_table(parsed)
        slow = ~parsed.ok
        records = invalid
        if slow.any():
            mask = pa.array(slow)
            records = pc.binary_join_element_wise(
                *(pc.filter(raw[name], mask) for name in header), ",").to_pylist() + invalid
        exact = self.records(source, records)
        batch = RowBatch(pa.concat_tables([table, exact.table]), exact.rejected,
                         int(parsed.ok.sum()) + exact.rows_read, header_seen)
        return batch

    def _fast_table(self, parsed) -> pa.Table:
        columns = dict(parsed.columns)
        columns[_columns.KEY] = _columns.json_key(self.spec, columns)
        return pa.Table.from_pydict({name: columns[name] for name in self.schema.names},
                                    schema=self.schema)
