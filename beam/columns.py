"""Vectorised parsing of raw cells, whole Arrow columns at a time: the fast path.

`beam.values` parses one value at a time and is the definition of what a value means.
This module parses a batch's columns of raw strings at C speed (Arrow compute), but
accepts a value only when its syntax is so plain that the result is certainly the one
`beam.values` returns: strict patterns (`^[0-9]{1,18}$` for a count, no quote,
backslash or control character in a string, ...). A row with any other value is left
to the row-by-row `beam.validate.RowValidator`, which either accepts it (`"3.0"`,
`" 7"`, an ISO timestamp) or rejects it with the reason. So the fast path changes
speed, never results; `tests/beam/test_beam_batched.py` checks it against the
row-by-row pipeline on generated and hostile data.

It also builds each row's aggregation key, the compact JSON list
`[time_bucket, value_1, ..., value_n]` that `RowValidator` writes (and that the split
hashes), as Arrow string operations instead of one `json.dumps` per row.
"""

from __future__ import annotations

import dataclasses
import hashlib

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["COUNTS", "FastColumns", "arrow_type", "from_ipc", "json_key", "key_hashes",
           "partition_of",
           "table_schema", "to_ipc", "with_keys"]

# Columns of a batch besides the features: the time bucket, the aggregation key and the
# summed counts.
BUCKET, KEY = "_bucket", "_key"
CLICKS, IMPRESSIONS, CPC_WEIGHTED, ROWS = "_clicks", "_impressions", "_cpc_weighted", "_rows"
COUNTS = (CLICKS, IMPRESSIONS, CPC_WEIGHTED, ROWS)

_COUNT = r"^[0-9]{1,18}$"  # < 10**18: within int64, non-negative
_INT64 = r"^-?[0-9]{1,18}$"
_FLOAT = r"^-?[0-9]{1,15}(\.[0-9]{1,15})?$"  # < 10**15: finite, within float32
_UFLOAT = r"^[0-9]{1,15}(\.[0-9]{1,15})?$"
_STRING = r'^[^\x00-\x1f"\\]+$'  # nothing JSON escapes; no line break or NUL
_TOKENS = r'^[^\x00-\x1f"\\]*$'  # may be empty: an empty list
_FLAG = r"^[01]$"
_TIMESTAMP_MIN, _TIMESTAMP_MAX = -62135596800.0, 253402300799.0


def arrow_type(feature) -> pa.DataType:
    """The Arrow type of a parsed feature column."""
    if feature.is_numeric:
        item = pa.float64()
    elif feature.dtype == "int64":
        item = pa.int64()
    else:
        item = pa.string()
    return pa.list_(item) if feature.is_sequence else item


def table_schema(spec) -> pa.Schema:
    """The schema of a batch of parsed rows (and of aggregated examples)."""
    return pa.schema([(KEY, pa.string()), (BUCKET, pa.int64()),
                      *((f.name, arrow_type(f)) for f in spec.features),
                      (CLICKS, pa.int64()), (IMPRESSIONS, pa.int64()),
                      (CPC_WEIGHTED, pa.float64()), (ROWS, pa.int64())])


def _matches(column: pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(column, pattern), False).to_numpy(
        zero_copy_only=False)


def _tokens(column: pa.Array, separator: str) -> pa.Array:
    """`split_cell` + drop empty items, as a list<string> column."""
    lists = pc.split_pattern(column, separator)
    flat = pc.list_flatten(lists)
    keep = pc.not_equal(flat, "")
    parents = pc.list_parent_indices(lists).to_numpy()[
        keep.to_numpy(zero_copy_only=False)]
    counts = np.bincount(parents, minlength=len(column))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pc.filter(flat, keep))


@dataclasses.dataclass
class Parsed:
    """The rows of a batch the fast path accepted.

    Attributes:
        ok: a boolean mask over the batch's rows.
        columns: `{name: Arrow array}` over the accepted rows: the features, `_bucket`
            and the counts (`_clicks`, `_impressions`, `_cpc_weighted`, `_rows`).
    """

    ok: np.ndarray
    columns: dict


class FastColumns:
    """Parses columns of raw cell strings where they are plain (see the module doc).

    Args:
        spec: the `tfddn.spec.FeatureSpec`.
    """

    def __init__(self, spec):
        self.spec = spec

    def parse(self, cells) -> Parsed:
        """`cells` maps every spec column to an Arrow string array (one cell per row)."""
        spec = self.spec
        n = len(next(iter(cells.values())))
        ok = np.ones(n, dtype=bool)
        raw = {}
        for f in spec.features:
            column = cells[f.name]
            if f.is_numeric:
                ok &= _matches(column, _FLOAT)
            elif f.is_sequence:
                ok &= _matches(column, _TOKENS) if f.dtype == "string" else False
            else:
                ok &= _matches(column, _INT64 if f.dtype == "int64" else _STRING)
            raw[f.name] = column
        if spec.log_format == "aggregated":
            ok &= _matches(cells[spec.clicks], _COUNT) & _matches(cells[spec.impressions],
                                                                  _COUNT)
        else:
            ok &= _matches(cells[spec.clicked], _FLAG)
        if spec.cpc:
            ok &= _matches(cells[spec.cpc], _UFLOAT)
        if spec.timestamp:
            ok &= _matches(cells[spec.timestamp], _FLOAT)
        mask = pa.array(ok)
        out = {}
        if spec.log_format == "aggregated":
            clicks = pc.cast(pc.filter(cells[spec.clicks], mask), pa.int64())
            impressions = pc.cast(pc.filter(cells[spec.impressions], mask), pa.int64())
        else:
            clicks = pc.cast(pc.filter(cells[spec.clicked], mask), pa.int64())
            impressions = pa.array(np.ones(len(clicks), dtype=np.int64))
        if spec.timestamp:
            seconds = pc.cast(pc.filter(cells[spec.timestamp], mask), pa.float64()).to_numpy()
            in_range = (seconds >= _TIMESTAMP_MIN) & (seconds <= _TIMESTAMP_MAX)
            bucket = np.floor(seconds / spec.time_bucket_seconds)
        clicks_np, impressions_np = clicks.to_numpy(), impressions.to_numpy()
        # Cross-field checks (and an out-of-range timestamp) leave the row to RowValidator,
        # which names the reason.
        good = (impressions_np > 0) & (clicks_np <= impressions_np)
        if spec.timestamp:
            good &= in_range
        if not good.all():
            ok[np.flatnonzero(ok)[~good]] = False
            mask, keep = pa.array(ok), pa.array(good)
            clicks, impressions = clicks.filter(keep), impressions.filter(keep)
            clicks_np, impressions_np = clicks_np[good], impressions_np[good]
            if spec.timestamp:
                bucket = bucket[good]
        out[BUCKET] = (pa.array(bucket.astype(np.int64)) if spec.timestamp
                       else pa.nulls(int(ok.sum()), pa.int64()))
        for f in spec.features:
            column = pc.filter(raw[f.name], mask)
            if f.is_numeric:
                column = pa.array(pc.cast(column, pa.float64()).to_numpy() + 0.0)  # -0.0 -> 0.0
            elif f.is_sequence:
                column = _tokens(column, f.separator)
            elif f.dtype == "int64":
                column = pc.cast(column, pa.int64())
            out[f.name] = column
        out[CLICKS], out[IMPRESSIONS] = clicks, impressions
        if spec.cpc:
            cpc = pc.cast(pc.filter(cells[spec.cpc], mask), pa.float64()).to_numpy()
            out[CPC_WEIGHTED] = pa.array(cpc * impressions_np)
        else:
            out[CPC_WEIGHTED] = pa.array(np.zeros(len(clicks_np)))
        out[ROWS] = pa.array(np.ones(len(clicks_np), dtype=np.int64))
        return Parsed(ok=ok, columns=out)


def _json_by_value(column: pa.Array, encode) -> pa.Array:
    """JSON text of each value, encoding every distinct value once in Python."""
    uniques = pc.unique(column)
    texts = pa.array([encode(v) for v in uniques.to_pylist()], pa.string())
    return pc.take(texts, pc.index_in(column, uniques))


def _json_float(value: float) -> str:
    return repr(value)  # what json.dumps writes; NaN and inf never pass validation


_JSON_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\f": "\\f", "\n": "\\n",
                 "\r": "\\r", "\t": "\\t"}


def _needs_escape(column: pa.Array) -> bool:
    """Whether any string holds a byte JSON escapes: < 0x20, `"` or a backslash."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not len(column):
        return False
    _, offsets, data = column.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32, count=len(column) + 1,
                           offset=4 * column.offset)
    raw = np.frombuffer(data, dtype=np.uint8)[bounds[0]:bounds[-1]]
    return bool(_ESCAPED_BYTES[raw].any())


_ESCAPED_BYTES = np.zeros(256, dtype=bool)
_ESCAPED_BYTES[:32] = _ESCAPED_BYTES[ord('"')] = _ESCAPED_BYTES[ord("\\")] = True


def _json_string_bodies(column: pa.Array) -> pa.Array:
    """Strings escaped the way `json.dumps(ensure_ascii=False)` escapes them (no quotes)."""
    if not _needs_escape(column):
        return column
    column = pc.replace_substring(column, "\\", "\\\\")  # the backslash first
    for char in ['"', *(chr(c) for c in range(32))]:
        if pc.any(pc.match_substring(column, char)).as_py():
            escaped = _JSON_ESCAPES.get(char, f"\\u{ord(char):04x}")
            column = pc.replace_substring(column, char, escaped)
    return column


def json_key(spec, columns: dict) -> pa.Array:
    """The aggregation key of every row, equal to `RowValidator`'s JSON list
    (`json.dumps([bucket, *values], separators=(",", ":"), ensure_ascii=False)`).

    The pieces are joined in one Arrow call: `[`, bucket, `,"`, value, `"`, ...
    """
    parts = ["[", pc.fill_null(pc.cast(columns[BUCKET], pa.string()), "null")]
    for f in spec.features:
        column = columns[f.name]
        if f.is_numeric:
            parts += [",", _json_by_value(column, _json_float)]
        elif f.is_sequence:
            quoted = f.dtype == "string"
            flat = pc.list_flatten(column)
            flat = _json_string_bodies(flat) if quoted else pc.cast(flat, pa.string())
            inner = pc.binary_join(pa.ListArray.from_arrays(column.offsets, flat),
                                   '","' if quoted else ",")
            if quoted:  # ["a","b"], but [] for no tokens
                empty = pc.equal(pc.list_value_length(column), 0)
                inner = pc.if_else(empty, "", pc.binary_join_element_wise('"', inner, '"', ""))
            parts += [",[", inner, "]"]
        elif f.dtype == "int64":
            parts += [",", pc.cast(column, pa.string())]
        else:
            parts += [',"', _json_string_bodies(column), '"']
    parts.append("]")
    return pc.binary_join_element_wise(*parts, "")


def with_keys(spec, table: pa.Table) -> pa.Table:
    """`table` (without `_key`, as shipped between steps) with its `json_key` column."""
    columns = {name: table.column(name).combine_chunks() for name in table.column_names}
    return table.add_column(0, KEY, json_key(spec, columns))


def key_hashes(keys: pa.Array, salt: str = "") -> np.ndarray:
    """`beam.split.stable_fraction`'s MD5 of every key (first 8 bytes, big-endian) as
    uint64; `salt` is prepended to each key, as the validation split does."""
    md5 = hashlib.md5
    prefix = salt.encode("utf-8")
    keys = pc.cast(keys, pa.binary()).to_pylist()
    if prefix:
        digests = b"".join([md5(prefix + key).digest() for key in keys])
    else:
        digests = b"".join([md5(key).digest() for key in keys])
    return np.frombuffer(digests, dtype=">u8")[::2].astype(np.uint64)


def partition_of(keys: pa.Array, partitions: int) -> np.ndarray:
    """The partition of every key: its CRC32C modulo `partitions` (cheaper than MD5;
    any function of the key would do, the same on every worker)."""
    value = google_crc32c.value
    crcs = np.fromiter((value(key) for key in pc.cast(keys, pa.binary()).to_pylist()),
                       dtype=np.uint32, count=len(keys))
    return crcs % np.uint32(partitions)


def to_ipc(table: pa.Table) -> bytes:
    """A table as zstd-compressed Arrow IPC stream bytes (compact in the runner's shuffle)."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
