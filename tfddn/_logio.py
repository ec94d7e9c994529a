"""Columns and streaming writers for `tfddn.generate` (CSV, JSONL, Parquet).

Feature values are built as Arrow arrays straight from the world's index arrays, so a
chunk of rows never passes through Python objects (except JSONL, via pandas). Token
lists and histories are Arrow lists; CSV cells join them with the spec's separator.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from tfddn.marketplace import TITLE_MAX_WORDS, Marketplace, Requests
from tfddn.spec import FeatureSpec

FORMATS = ("csv", "jsonl", "parquet")


class ValueNames:
    """Arrow string arrays of every categorical value of a world, taken by index."""

    def __init__(self, world: Marketplace):
        self.world = world
        kinds = ("target", "advertiser", "publisher", "topic", "word", "article", "device",
                 "user", "age_group")
        self.arrays = {kind: pa.array(world.names(kind), pa.string()) for kind in kinds}

    def take(self, kind: str, index: np.ndarray) -> pa.Array:
        return self.arrays[kind].take(pa.array(np.asarray(index, dtype=np.int64)))

    def feature_columns(self, req: Requests) -> dict[str, pa.Array]:
        """The spec's feature columns of `req`, token lists and histories as lists."""
        w = self.world
        lengths = w.title_length[req.target]
        mask = np.arange(TITLE_MAX_WORDS) < lengths[:, None]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        title = pa.ListArray.from_arrays(
            pa.array(offsets), self.take("word", w.title_tokens[req.target][mask]))
        cols = {
            "target_id": self.take("target", req.target),
            "advertiser_id": self.take("advertiser", w.target_advertiser[req.target]),
            "target_topic": self.take("topic", w.target_topic[req.target]),
            "title": title,
            "age_days": pa.array(w.age_days(req), pa.int64()),
            "publisher_id": self.take("publisher", req.publisher),
            "publisher_topic": self.take("topic", w.publisher_topic[req.publisher]),
            "device": self.take("device", req.device),
        }
        if req.user is not None:
            cols["user_id"] = self.take("user", req.user)
            cols["user_age_group"] = self.take("age_group", w.user_age_group[req.user])
        if req.history is not None:
            n, length = req.history.shape
            offsets = np.arange(0, n * length + 1, length, dtype=np.int32)
            cols["history"] = pa.ListArray.from_arrays(
                pa.array(offsets), self.take("article", req.history.ravel()))
        return cols


def flatten_lists(table: pa.Table, spec: FeatureSpec) -> pa.Table:
    """Joins list columns with the spec's separator (the CSV representation)."""
    for feature in spec.features:
        if feature.is_sequence and feature.name in table.column_names:
            i = table.column_names.index(feature.name)
            joined = pc.binary_join(table.column(i), feature.separator)
            table = table.set_column(i, feature.name, joined)
    return table


class TableSink:
    """Streams tables to one file, writing in chunks of at least `chunk_rows` rows."""

    def __init__(self, path: str, fmt: str, chunk_rows: int, spec: FeatureSpec | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {list(FORMATS)}. Received: format={fmt!r}")
        self.path, self.fmt, self.chunk_rows, self.spec = path, fmt, chunk_rows, spec
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer = None

    @property
    def total_rows(self) -> int:
        """Rows written plus rows waiting for the next flush."""
        return self.rows + self._pending_rows

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        self.rows += table.num_rows
        if self.fmt == "csv":
            table = flatten_lists(table, self.spec)
            if self._writer is None:
                options = pcsv.WriteOptions(quoting_style="needed")
                self._writer = pcsv.CSVWriter(self.path, table.schema, write_options=options)
            self._writer.write_table(table)
        elif self.fmt == "parquet":
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.path, table.schema)
            self._writer.write_table(table, row_group_size=max(self.chunk_rows, 1))
        else:
            if self._writer is None:
                self._writer = open(self.path, "w", encoding="utf-8")
            text = table.to_pandas().to_json(orient="records", lines=True, double_precision=15)
            self._writer.write(text if text.endswith("\n") else text + "\n")

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class SeenKeys:
    """A set of uint64 keys as sorted numpy levels (log-structured), for streaming dedupe.

    Memory is 8 bytes per key, against ~60 for a Python set of ints.
    """

    def __init__(self):
        self._levels: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    def add_new(self, keys: np.ndarray) -> np.ndarray:
        """Adds distinct `keys`; returns the mask of those not seen before."""
        new = np.ones(len(keys), dtype=bool)
        for level in self._levels:
            pos = np.minimum(np.searchsorted(level, keys), len(level) - 1)
            new &= level[pos] != keys
        if new.any():
            self._levels.append(np.sort(keys[new]))
        while len(self._levels) > 1 and len(self._levels[-2]) <= 2 * len(self._levels[-1]):
            last = self._levels.pop()
            self._levels[-1] = np.sort(np.concatenate([self._levels[-1], last]))
        return new
