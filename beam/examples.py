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

_FEATURES, _ENTRY_KEY, _ENTRY_VALUE = b"\x0a", b"\x0a", b"\x12"
_BYTES_LIST, _FLOAT_LIST, _INT64_LIST, _VALUES = b"\x0a", b"\x12", b"\x1a", b"\x0a"


def _varints(values) -> pa.Array:
    """Protobuf varints of int64 (two's complement for negatives) or uint64 values."""
    v = np.asarray(values).astype(np.int64).view(np.uint64)
    n = len(v)
    nbytes = np.ones(n, dtype=np.int64)
    for k in range(1, 10):
        nbytes += v >= np.uint64(1 << (7 * k))
    digits = np.empty((n, 10), dtype=np.uint8)
    for k in range(10):
        more = (nbytes > k + 1).astype(np.uint8) << 7
        digits[:, k] = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8) | more
    data = digits[np.arange(10) < nbytes[:, None]]
    offsets = np.concatenate([[0], np.cumsum(nbytes)]).astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets),
                                                  pa.py_buffer(data.tobytes())])


def _join(*parts) -> pa.Array:
    parts = [pa.scalar(p, pa.binary()) if isinstance(p, bytes) else p for p in parts]
    return pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))


def _message(tag: bytes, payload: pa.Array) -> pa.Array:
    """`tag`, the payload's length as a varint, the payload: a length-delimited field."""
    return _join(tag, _varints(pc.binary_length(payload).to_numpy()), payload)


def _per_row(flat: pa.Array, offsets) -> pa.Array:
    """Concatenates the items of each row (`offsets` into `flat`)."""
    return pc.binary_join(pa.ListArray.from_arrays(offsets, flat), pa.scalar(b"", pa.binary()))


def _float_bytes(values) -> pa.Array:
    data = np.asarray(values, dtype="<f4").tobytes()
    offsets = np.arange(0, 4 * len(values) + 1, 4, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), len(values), [None, pa.py_buffer(offsets),
                                                            pa.py_buffer(data)])


def _feature(kind: str, column: pa.Array, is_sequence: bool) -> pa.Array:
    """The serialised `tf.train.Feature` of every row."""
    if is_sequence:
        flat, offsets = pc.list_flatten(column), column.offsets
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    else:
        flat, offsets, lengths = column, pa.array(np.arange(len(column) + 1, dtype=np.int32)), None
    if kind == "bytes":
        items = _message(_VALUES, pc.cast(flat, pa.binary()))
        return _message(_BYTES_LIST, _per_row(items, offsets))
    if kind == "int64":
        packed = _per_row(_varints(flat.to_numpy(zero_copy_only=False)), offsets)
        values = _message(_VALUES, packed)
        if lengths is not None:  # an empty packed list is not written at all
            values = pc.if_else(pa.array(lengths == 0), pa.scalar(b"", pa.binary()), values)
        return _message(_INT64_LIST, values)
    packed = _per_row(_float_bytes(flat.to_numpy(zero_copy_only=False)), offsets)
    values = _message(_VALUES, packed)
    if lengths is not None:
        values = pc.if_else(pa.array(lengths == 0), pa.scalar(b"", pa.binary()), values)
    return _message(_FLOAT_LIST, values)


def encode_batch(table, fields, has_cpc: bool) -> pa.Array:
    """Aggregated examples (a `beam.columns.table_schema` table) -> serialised
    `tf.train.Example`s, byte for byte those of `encode_example`."""
    from beam import columns as _columns

    n = table.num_rows
    if n == 0:
        return pa.array([], pa.binary())
    entries = {}
    for name, kind, is_sequence in fields:
        entries[name] = _feature(kind, table.column(name).combine_chunks(), is_sequence)
    entries["clicks"] = _feature("int64", table.column(_columns.CLICKS).combine_chunks(), False)
    impressions = table.column(_columns.IMPRESSIONS).combine_chunks()
    entries["impressions"] = _feature("int64", impressions, False)
    if has_cpc:
        cpc = (table.column(_columns.CPC_WEIGHTED).to_numpy()
               / impressions.to_numpy().astype(np.float64))
        entries["cpc"] = _feature("float", pa.array(cpc), False)
    parts = []
    for name in sorted(entries, key=lambda k: k.encode("utf-8")):
        key = name.encode("utf-8")
        key_field = _ENTRY_KEY + bytes(_varints([len(key)])[0].as_py()) + key
        entry = _join(key_field, _message(_ENTRY_VALUE, entries[name]))
        parts.append(_message(_FEATURES, entry))
    return _message(_FEATURES, _join(*parts))
