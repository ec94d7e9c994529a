"""Tables of rows as logged: CSV, JSONL or Parquet (by extension), read and written.

The files `tfddn rank` and `tfddn predict` read (candidates, contexts, raw rows) and
write (ranked lists, per-row predictions). With a feature spec,

* reading keeps every string feature a string (a CSV cell `007` stays `"007"`, not 7)
  and `feature_columns` turns a frame into the raw columns the model takes, each value
  checked against its feature's dtype (`Feature.items` for token lists / histories);
* writing a CSV joins token lists and histories with the spec's separator, as the logs
  write them (`Feature.raw`); JSONL and Parquet hold them as lists (`Feature.items`).

`TableWriter` streams: a frame at a time, to a hidden file renamed into place when it
closes without error, so memory stays flat in rows and a failed job leaves no half file.

Example:
    >>> with TableWriter("predictions.parquet", spec) as out:
    ...     for batch in iter_table("rows.csv", 4096, spec):
    ...         out.write(score(batch))
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd

from tfddn.spec import FeatureSpec

__all__ = ["TableWriter", "feature_columns", "iter_table", "read_table", "table_format",
           "write_table"]

_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def table_format(path: str) -> str:
    """`"csv"`, `"jsonl"` or `"parquet"` by the file's extension (ValueError otherwise)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FORMATS:
        raise ValueError(f"unknown table format {ext!r}: use .csv, .jsonl or .parquet. "
                         f"Received: {path}")
    return _FORMATS[ext]


def _csv_dtypes(spec: FeatureSpec | None) -> dict | None:
    if spec is None:
        return None
    return {f.name: str for f in spec.features if f.is_sequence or f.dtype == "string"}


def read_table(path: str, spec: FeatureSpec | None = None) -> pd.DataFrame:
    """A CSV, JSONL/JSON-lines or Parquet file as a DataFrame (by extension); with
    `spec`, a CSV's string features are read as strings."""
    kind = table_format(path)
    if kind == "parquet":
        return pd.read_parquet(path)
    if kind == "jsonl":
        return pd.read_json(path, lines=True, convert_dates=spec is None)
    return pd.read_csv(path, keep_default_na=False, dtype=_csv_dtypes(spec))


def iter_table(path: str, batch_size: int, spec: FeatureSpec | None = None
               ) -> Iterator[pd.DataFrame]:
    """`read_table` in frames of at most `batch_size` rows (memory flat in rows)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    kind = table_format(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size):
            yield batch.to_pandas()
        return
    if kind == "jsonl":
        reader = pd.read_json(path, lines=True, chunksize=batch_size,
                              convert_dates=spec is None)
    else:
        reader = pd.read_csv(path, keep_default_na=False, dtype=_csv_dtypes(spec),
                             chunksize=batch_size)
    with reader:
        yield from reader


def feature_columns(spec: FeatureSpec, frame: pd.DataFrame) -> dict[str, list]:
    """The spec's features of `frame` as raw columns (`tfddn.data.features_from_columns`):
    token lists / histories as lists (`Feature.items`), numbers as floats, categorical
    values in the feature's dtype.

    Raises:
        ValueError: a feature's column is missing, or a value does not fit its dtype
            (the message names the column, the row and the value).
    """
    missing = [f.name for f in spec.features if f.name not in frame.columns]
    if missing:
        raise ValueError(f"columns missing for the spec's features: {missing}. "
                         f"Received columns: {list(frame.columns)}")
    out = {}
    for f in spec.features:
        values = frame[f.name].tolist()
        try:
            if f.is_sequence:
                out[f.name] = [f.items(v) for v in values]
            elif f.is_numeric:
                out[f.name] = [float(v) for v in values]
            elif f.dtype == "int64":
                out[f.name] = [int(v) for v in values]
            else:
                out[f.name] = [v if isinstance(v, str) else str(v) for v in values]
        except (TypeError, ValueError):
            row = next(i for i, v in enumerate(values) if not _fits(f, v))
            raise ValueError(f"column {f.name!r} ({f.role}, {f.dtype}) cannot hold row "
                             f"{row}'s value {values[row]!r}") from None
        if f.is_numeric and not np.all(np.isfinite(out[f.name])):
            row = int(np.flatnonzero(~np.isfinite(out[f.name]))[0])
            raise ValueError(f"column {f.name!r} ({f.role}) must be finite; row {row} has "
                             f"{values[row]!r}")
    return out


def _fits(feature, value) -> bool:
    try:
        if feature.is_sequence:
            feature.items(value)
        elif feature.is_numeric:
            float(value)
        elif feature.dtype == "int64":
            int(value)
        return True
    except (TypeError, ValueError):
        return False


def _cells(frame: pd.DataFrame, spec: FeatureSpec | None, kind: str) -> pd.DataFrame:
    """Token lists / histories as one format writes them, whatever the frame holds: joined
    by the spec's separator in a CSV (`Feature.raw`), lists in JSONL and Parquet."""
    if spec is None:
        return frame
    cell = (lambda f, v: f.raw(v)) if kind == "csv" else (lambda f, v: f.items(v))
    cells = {f.name: [cell(f, v) for v in frame[f.name]] for f in spec.features
             if f.is_sequence and f.name in frame.columns}
    return frame.assign(**cells) if cells else frame


class TableWriter:
    """Writes frames to a CSV, JSONL or Parquet file one after another (module docstring).

    Args:
        path: the output file; its extension picks the format.
        spec: optional; its token lists / histories are joined as logged in a CSV,
            lists in JSONL and Parquet.

    Use as a context manager: the file appears at `path` only when the block ends
    without an error (it replaces an existing file then).
    """

    def __init__(self, path: str, spec: FeatureSpec | None = None):
        self.path, self.spec, self.kind = path, spec, table_format(path)
        self.rows = 0
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"the folder of --out {path!r} does not exist")
        self._tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}")
        self._parquet = None
        self._file = None
        self._header = True

    def write(self, frame: pd.DataFrame) -> None:
        frame = _cells(frame, self.spec, self.kind)
        if self.kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._tmp, self._schema(table.schema))
            self._parquet.write_table(table.cast(self._parquet.schema))
        else:
            if self._file is None:
                self._file = open(self._tmp, "w", newline="")
            if self.kind == "csv":
                frame.to_csv(self._file, index=False, header=self._header)
                self._header = False
            elif len(frame):
                text = frame.to_json(orient="records", lines=True, double_precision=15)
                self._file.write(text if text.endswith("\n") else text + "\n")
        self.rows += len(frame)

    def _schema(self, schema):
        """The first frame's schema, token lists / histories typed by the spec (a first
        frame of empty lists would otherwise fix them as lists of nulls)."""
        import pyarrow as pa

        for f in self.spec.features if self.spec is not None else ():
            if f.is_sequence and f.name in schema.names:
                item = pa.int64() if f.dtype == "int64" else pa.string()
                schema = schema.set(schema.get_field_index(f.name), pa.field(f.name,
                                                                             pa.list_(item)))
        return schema

    def close(self, ok: bool = True) -> None:
        for handle in (self._parquet, self._file):
            if handle is not None:
                handle.close()
        self._parquet = self._file = None
        if ok and os.path.exists(self._tmp):
            os.replace(self._tmp, self.path)
        elif os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(ok=kind is None)


def write_table(frame: pd.DataFrame, path: str, spec: FeatureSpec | None = None) -> None:
    """One frame to `path` (CSV, JSONL or Parquet by extension; `TableWriter`)."""
    with TableWriter(path, spec) as out:
        out.write(frame)
