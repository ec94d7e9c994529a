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

__all__ = ["EncodeExamples", "encode_example", "example_fields"]


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
