"""Read raw CTR logs (CSV, JSONL or Parquet) as `(source filename, raw row)` pairs.

A raw row is the line text for CSV and JSONL (parsed later, in the fused
validation DoFn, so a malformed line still reaches the dead-letter output
verbatim) and a dict for Parquet. Blank lines are not rows and are skipped here,
before anything counts them.

`resolve_input` runs at pipeline construction time on the launcher: it matches
the glob with `FileSystems` (local or any Beam filesystem), picks the format from
the file extensions and reads the CSV header, which every file of a CSV glob
must share.
"""

from __future__ import annotations

import csv
import dataclasses
import posixpath

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

__all__ = ["FORMATS", "InputFiles", "ReadRawRows", "infer_format", "resolve_input"]

FORMATS = ("csv", "jsonl", "parquet")
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl",
               ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".deflate", ".zst", ".lzma", ".xz")


@dataclasses.dataclass(frozen=True)
class InputFiles:
    """A resolved input glob.

    Attributes:
        pattern: the file glob as given.
        format: one of `FORMATS`.
        files: the matched paths, sorted.
        header: the CSV column names (None for JSONL and Parquet).
    """

    pattern: str
    format: str
    files: tuple[str, ...]
    header: tuple[str, ...] | None = None


def _match(pattern: str) -> tuple[str, ...]:
    result = FileSystems.match([pattern])[0]
    paths = sorted(m.path for m in result.metadata_list)
    if not paths:
        raise FileNotFoundError(f"--input: no file matches {pattern!r}")
    return tuple(paths)


def _format_of(path: str) -> str | None:
    name = posixpath.basename(path).lower()
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return _EXTENSIONS.get(posixpath.splitext(name)[1])


def infer_format(paths, input_format: str = "auto") -> str:
    """The format of every path: `input_format` unless it is `"auto"`."""
    if input_format != "auto":
        if input_format not in FORMATS:
            raise ValueError(f"--input_format must be auto or one of {list(FORMATS)}. "
                             f"Received: input_format={input_format!r}")
        return input_format
    found = {path: _format_of(path) for path in paths}
    formats = set(found.values())
    if None in formats:
        unknown = next(p for p, f in found.items() if f is None)
        raise ValueError(f"cannot tell the format of {unknown!r} from its extension "
                         f"(.csv, .jsonl/.json, .parquet); pass --input_format")
    if len(formats) > 1:
        raise ValueError(f"the input glob mixes formats {sorted(formats)}; "
                         "use one glob per format")
    return formats.pop()


def _read_header(path: str) -> tuple[str, ...] | None:
    with FileSystems.open(path) as fh:  # compression detected from the extension
        line = fh.readline().decode("utf-8-sig").rstrip("\r\n")
    return tuple(next(csv.reader([line]))) if line.strip() else None


def _check_parquet_columns(path: str, columns) -> None:
    import pyarrow.parquet as pq

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        names = pq.read_schema(fh).names
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{path}: the Parquet schema has no column(s) {missing} named by "
                         f"the spec. Received columns: {names}")


def resolve_input(pattern: str, input_format: str = "auto", columns=()) -> InputFiles:
    """Matches `pattern`, infers the format and reads the CSV header.

    Args:
        pattern: a file glob on any Beam filesystem.
        input_format: `"auto"` (from the extension) or one of `FORMATS`.
        columns: raw columns the spec needs; checked against the CSV header or the
            first Parquet file's schema so a wrong spec fails before the pipeline runs.

    Raises:
        FileNotFoundError: nothing matches the glob.
        ValueError: unknown/mixed formats, CSV headers that differ between files,
            or a spec column the files do not have.
    """
    files = _match(pattern)
    fmt = infer_format(files, input_format)
    header = None
    if fmt == "csv":
        headers = {path: _read_header(path) for path in files}
        distinct = {h for h in headers.values() if h is not None}
        if not distinct:
            raise ValueError(f"--input: no CSV file matching {pattern!r} has a header line")
        if len(distinct) > 1:
            first, other = sorted(distinct)[:2]
            path = next(p for p, h in headers.items() if h == other)
            raise ValueError(f"every CSV file of the glob must share one header; {path} has "
                             f"{list(other)}, another file has {list(first)}")
        header = distinct.pop()
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"the CSV header has no column(s) {missing} named by the spec. "
                             f"Received header: {list(header)}")
    elif fmt == "parquet" and columns:
        _check_parquet_columns(files[0], columns)
    return InputFiles(pattern=pattern, format=fmt, files=files, header=header)


def _has_text(element) -> bool:
    return bool(element[1].strip())


class ReadRawRows(beam.PTransform):
    """Reads `(source filename, raw row)` pairs from a resolved input glob.

    Args:
        input_files: an `InputFiles` from `resolve_input`.
        columns: Parquet only: read just these columns (the spec's raw columns).
    """

    def __init__(self, input_files: InputFiles, columns=None):
        super().__init__()
        self._input = input_files
        self._columns = list(columns) if columns else None

    def expand(self, pbegin):
        if self._input.format == "parquet":
            return (pbegin
                    | "ParquetGlob" >> beam.Create([self._input.pattern])
                    | "ReadParquet" >> beam.io.ReadAllFromParquet(
                        with_filename=True, columns=self._columns))
        skip = 1 if self._input.format == "csv" else 0
        return (pbegin
                | "ReadLines" >> beam.io.ReadFromTextWithFilename(
                    self._input.pattern, skip_header_lines=skip)
                | "SkipBlankLines" >> beam.Filter(_has_text))
