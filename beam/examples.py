"""Encode aggregated examples as serialised `tf.train.Example` protos.

Every feature is stored under its spec name, whatever the raw column was called:

| feature                   | TFRecord value                                          |
|---------------------------|---------------------------------------------------------|
| categorical, dtype string | `bytes_list [value]`                                    |
| categorical, dtype int64  | `int64_list [value]`                                    |
| numeric                   | `float_list [value]`                                    |
| token list / history      | `bytes_list` / `int64_list`: the whole list, in order   |

plus the labels under the reserved keys `clicks` (int64), `impressions` (int64)
and, when the spec has a cpc column, `cpc` (float, impression-weighted mean).
Token lists are not truncated here; `tfddn.data` applies `max_length`.

TensorFlow is imported in `DoFn.setup`, once per worker, never at import time.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["EncodeExamples", "encode_batch", "encode_example", "example_fields"]


def example_fields(spec) -> tuple[tuple[str, str, bool], ...]:
    """`(name, "bytes" | "int64" | "float", is_sequence)` for every spec feature."""
    fields = []
    for f in spec.features:
        if f.is_numeric:
            kind = "float"
        else:
            kind = "int64" if f.dtype == "int64" else "bytes"
        fields.append((f.name, kind, f.is_sequence))
    return tuple(fields)


def encode_example(example: dict, fields, has_cpc: bool, example_cls) -> bytes:
    """One aggregated example dict -> a serialised `tf.train.Example`.

    Args:
        example: see `beam.aggregate.to_example`.
        fields: from `example_fields(spec)`.
        has_cpc: whether to write the `cpc` label.
        example_cls: `tf.train.Example` (passed in so this module needs no TF import).
    """
    proto = example_cls()
    feature = proto.features.feature
    values = example["features"]
    for name, kind, is_sequence in fields:
        value = values[name]
        items = value if is_sequence else (value,)
        if kind == "bytes":
            out = feature[name].bytes_list
            out.SetInParent()  # an empty list is still a present bytes_list
            out.value.extend([item.encode("utf-8") for item in items])
        elif kind == "int64":
            out = feature[name].int64_list
            out.SetInParent()
            out.value.extend(items)
        else:
            feature[name].float_list.value.extend(items)
    feature["clicks"].int64_list.value.append(example["clicks"])
    feature["impressions"].int64_list.value.append(example["impressions"])
    if has_cpc:
        feature["cpc"].float_list.value.append(example["cpc"])
    return proto.SerializeToString(deterministic=True)


class _EncodeFn(beam.DoFn):
    def __init__(self, fields, has_cpc):
        self._fields = fields
        self._has_cpc = has_cpc
        self._example_cls = None

    def setup(self):
        import tensorflow as tf

        self._example_cls = tf.train.Example

    def process(self, example):
        yield encode_example(example, self._fields, self._has_cpc, self._example_cls)


class EncodeExamples(beam.PTransform):
    """Aggregated example dicts -> serialised `tf.train.Example` bytes.

    Args:
        spec: the `tfddn.spec.FeatureSpec`.
    """

    def __init__(self, spec):
        super().__init__()
        self._fields = example_fields(spec)
        self._has_cpc = bool(spec.cpc)

    def expand(self, examples):
        return examples | "ToTfExample" >> beam.ParDo(_EncodeFn(self._fields, self._has_cpc))


# ---- Batches: the same bytes, built column-wise ------------------------------------
# `encode_batch` writes the protobuf wire format of `tf.train.Example` directly, with
# Arrow string operations, instead of one proto per row; it returns exactly the bytes of
# `encode_example` (deterministic serialisation: map entries sorted by feature name;
# packed int64 and float lists), which `tests/beam/test_beam_batched.py` checks.
#
#   Example  = 0a len(Features) Features
#   Features = for each feature, by name: 0a len(Entry) Entry
#   Entry    = 0a len(name) name 12 len(Feature) Feature
#   Feature  = 0a len(BytesList) BytesList | 12 len(FloatList) ... | 1a len(Int64List) ...
#   *List    = 0a len(items) items   (packed numbers; bytes items each 0a len(item) item;
#                                     an empty packed list is empty)
#
# Every header before a feature's items depends only on the items' byte length, so it
# is built once per distinct length in Python and gathered per row (`_headers`).


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varints(values) -> pa.Array:
    """Protobuf varints of int64 values (two's complement for negatives), as binary."""
    v = np.asarray(values).astype(np.int64).view(np.uint64)
    n = len(v)
    nbytes = np.ones(n, dtype=np.int64)
    for k in range(1, 10):
        more = v >= np.uint64(1 << (7 * k))
        if not more.any():
            break
        nbytes += more
    width = int(nbytes.max()) if n else 1
    digits = np.empty((n, width), dtype=np.uint8)
    for k in range(width):
        flag = (nbytes > k + 1).astype(np.uint8) << 7
        digits[:, k] = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8) | flag
    data = digits[np.arange(width) < nbytes[:, None]] if width > 1 else digits.ravel()
    return _binary(data, np.concatenate([[0], np.cumsum(nbytes)]))


def _binary(data: np.ndarray, offsets) -> pa.Array:
    offsets = np.asarray(offsets, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), len(offsets) - 1, [
        None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(np.ascontiguousarray(data))])


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))


def _headers(lengths: np.ndarray, header) -> pa.Array:
    """`header(length)` bytes for every row, computed once per distinct length."""
    distinct, inverse = np.unique(lengths, return_inverse=True)
    table = pa.array([header(int(length)) for length in distinct], pa.binary())
    return table.take(pa.array(inverse.ravel()))


def _lengths(array: pa.Array) -> np.ndarray:
    return pc.binary_length(array).to_numpy(zero_copy_only=False).astype(np.int64)


def _entry_header(name: bytes, kind_tag: bytes, packed: bool):
    """The bytes of a map entry before its list's items, given the items' length."""
    def header(length: int) -> bytes:
        # Packed numbers are one length-prefixed field (none when empty); bytes items
        # carry their own prefixes.
        values = _VALUES + _varint(length) if packed and length else b""
        feature = kind_tag + _varint(len(values) + length) + values
        entry = _ENTRY_KEY + _varint(len(name)) + name + _ENTRY_VALUE + _varint(
            len(feature) + length) + feature
        return _FEATURES + _varint(len(entry) + length) + entry
    return header


def _item_header(length: int) -> bytes:
    return _VALUES + _varint(length)


_FEATURES, _ENTRY_KEY, _ENTRY_VALUE, _VALUES = b"\x0a", b"\x0a", b"\x12", b"\x0a"
_KIND_TAGS = {"bytes": b"\x0a", "float": b"\x12", "int64": b"\x1a"}


def _items(kind: str, column: pa.Array, is_sequence: bool) -> pa.Array:
    """The content of each row's value list: packed numbers or length-prefixed bytes."""
    flat = pc.list_flatten(column) if is_sequence else column
    if kind == "bytes":
        flat = pc.cast(flat, pa.binary())
        flat = _join(_headers(_lengths(flat), _item_header), flat)
    elif kind == "int64":
        flat = _varints(flat.to_numpy(zero_copy_only=False))
    else:
        data = np.asarray(flat.to_numpy(zero_copy_only=False), dtype="<f4")
        flat = _binary(data.view(np.uint8), np.arange(0, 4 * len(data) + 1, 4))
    if not is_sequence:
        return flat
    lists = pa.ListArray.from_arrays(column.offsets, flat)
    return pc.binary_join(lists, pa.scalar(b"", pa.binary()))


def encode_batch(table, fields, has_cpc: bool) -> pa.Array:
    """Aggregated examples (a `beam.columns.table_schema` table) -> serialised
    `tf.train.Example`s, byte for byte those of `encode_example`."""
    from beam import columns as _columns

    if table.num_rows == 0:
        return pa.array([], pa.binary())
    lists = {}  # feature name -> (kind, items per row)
    for name, kind, is_sequence in fields:
        lists[name] = kind, _items(kind, table.column(name).combine_chunks(), is_sequence)
    clicks = table.column(_columns.CLICKS).combine_chunks()
    impressions = table.column(_columns.IMPRESSIONS).combine_chunks()
    lists["clicks"] = "int64", _items("int64", clicks, False)
    lists["impressions"] = "int64", _items("int64", impressions, False)
    if has_cpc:
        cpc = (table.column(_columns.CPC_WEIGHTED).to_numpy()
               / impressions.to_numpy().astype(np.float64))
        lists["cpc"] = "float", _items("float", pa.array(cpc), False)
    entries, total = [], np.zeros(table.num_rows, dtype=np.int64)
    for name in sorted(lists, key=lambda k: k.encode("utf-8")):
        kind, items = lists[name]
        header = _entry_header(name.encode("utf-8"), _KIND_TAGS[kind], kind != "bytes")
        item_lengths = _lengths(items)
        headers = _headers(item_lengths, header)
        entries += [headers, items]
        total += _lengths(headers) + item_lengths
    return _join(_headers(total, lambda length: _FEATURES + _varint(length)), *entries)
