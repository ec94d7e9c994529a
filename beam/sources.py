"""Read raw CTR logs (CSV, JSONL or Parquet) as `(source filename, raw row)` pairs.

A raw row is the record's text for CSV and JSONL (parsed later, in the fused
validation DoFn, so a malformed record still reaches the dead-letter output
verbatim) and a dict for Parquet. Blank records are not rows and are skipped here,
before anything counts them.

Text files are read record by record, not line by line (`text_records`): any line
ending (`\n`, `\r\n`, classic-Mac `\r`), a quoted CSV field holding line breaks
(one record), fields of any length, a UTF-8 byte-order mark at the start of any
text format. Bytes that are not UTF-8 do not stop the run: such a record is passed
on as its raw `bytes` and the validator dead-letters it as `invalid_encoding`. Each file is read whole by one worker (a `Reshuffle` spreads
the files), so a glob of many files parallelises; one huge file does not.

A file that cannot be read to its end is refused by name (`MalformedFile`): a
truncated or corrupt `.gz`, `.bz2` or `.xz` file (read with Python's own
decompressors, which detect truncation, unlike Beam's), an unreadable Parquet file.

`resolve_input` runs at pipeline construction time on the launcher: it matches
the glob with `FileSystems` (local or any Beam filesystem), picks the format from
the file extensions and reads the CSV header, which every file of a CSV glob
must share and which must name each column once.
"""

from __future__ import annotations

import bz2
import collections
import csv
import dataclasses
import gzip
import io
import itertools
import lzma
import posixpath
import re
import zlib

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam.config import FORMATS

__all__ = ["BLOCK_BYTES", "BlockReader", "FORMATS", "InputFiles", "MalformedFile", "ReadRawRows", "has_invalid_encoding",
           "infer_format", "malformed_file_in", "parquet_rows", "printable", "resolve_input",
           "text_records"]

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


class MalformedFile(ValueError):
    """An input file that cannot be read as a whole; the message starts with its path."""

    PREFIX = "malformed input file: "

    def __init__(self, path: str, detail: str):
        super().__init__(f"{self.PREFIX}{path}: {detail}")
        self.path, self.detail = path, detail


_MALFORMED = re.compile(re.escape(MalformedFile.PREFIX) + r"([^\n]+)")


def malformed_file_in(error: BaseException) -> str | None:
    """The `MalformedFile` message inside a runner's wrapped exception, if any."""
    found = _MALFORMED.search(str(error))
    return found.group(0).rstrip("'\" ") if found else None


_DECOMPRESSORS = {".gz": gzip.GzipFile, ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile,
                  ".lzma": lzma.LZMAFile}
_READ_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


def _open_binary(path: str):
    """The decompressed bytes of `path`; gzip, bzip2 and xz detect truncation."""
    name = path.lower()
    for suffix, decompressor in _DECOMPRESSORS.items():
        if name.endswith(suffix):
            raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
            return decompressor(fileobj=raw) if suffix == ".gz" else decompressor(raw)
    return FileSystems.open(path)  # uncompressed, or Beam's reader for .deflate / .zst


def _csv_records(lines, at_boundary=None):
    """Groups lines (each ending in `\\n`) into CSV records the way `csv` parses them;
    stops early where `at_boundary()` says a record boundary is a place to stop."""
    consumed = []

    def feed():
        for line in lines:
            consumed.append(line)
            yield line

    reader = csv.reader(feed())
    while at_boundary is None or not at_boundary():
        try:
            next(reader)
        except StopIteration:
            break
        except csv.Error:
            pass  # the validator dead-letters the record with the parser's message
        yield "".join(consumed)
        consumed.clear()
    if consumed:  # an open quoted field at the end of the file
        yield "".join(consumed)


def text_records(path: str, input_format: str):
    """Yields the text of every record of a CSV or JSONL file, in order (header included).

    Lines end at `\\n`, `\\r\\n` or `\\r`; a CSV record continues over line breaks
    inside a quoted field (grouped by the `csv` module itself, rejoined with `\\n`).
    Bytes that are not UTF-8 become surrogate escapes (see `has_invalid_encoding`). A
    BOM at the start is dropped.

    Raises:
        MalformedFile: the file (or its compression) cannot be read to its end.
    """
    try:
        with _open_binary(path) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape",
                                    newline=None)
            first = text.readline().removeprefix("\ufeff")
            lines = itertools.chain([first] if first else [], text)
            records = _csv_records(lines) if input_format == "csv" else lines
            for record in records:
                yield record[:-1] if record.endswith("\n") else record
    except _READ_ERRORS as err:
        raise MalformedFile(path, f"cannot be read to its end ({type(err).__name__}: "
                            f"{err}); a truncated or corrupt file?") from None


BLOCK_BYTES = 8 << 20
"""Bytes per block of a text file read by `BlockReader` (a batch of rows)."""


def _lines(text: str) -> list[str]:
    """Universal-newline lines of `text`, each ending in `\\n` but maybe the last."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    last = lines.pop()
    lines = [line + "\n" for line in lines]
    if last:
        lines.append(last)
    return lines


class BlockReader:
    """Reads a CSV or JSONL file as blocks of whole lines, for batched validation.

    `next_block()` returns the next ~`block_bytes` of the (decompressed) file, cut after
    a line break, or None at the end; the fast path parses a block as a whole.
    `records(block)` yields the block's records the way `text_records` does (the exact
    path), reading on into the file while a quoted CSV field is open at the block's end.
    A UTF-8 byte-order mark at the start of the file is dropped.

    Raises:
        MalformedFile: the file (or its compression) cannot be read to its end.
    """

    def __init__(self, path: str, input_format: str, block_bytes: int | None = None):
        self.path, self._format = path, input_format
        self._block_bytes = block_bytes or BLOCK_BYTES
        self._raw = None
        self._pending = []
        self._eof = False
        self._first = True

    def __enter__(self):
        try:
            self._raw = _open_binary(self.path)
        except _READ_ERRORS as err:
            self._fail(err)
        return self

    def __exit__(self, *exc):
        self._raw.close()

    def _fail(self, err):
        raise MalformedFile(self.path, f"cannot be read to its end ({type(err).__name__}: "
                            f"{err}); a truncated or corrupt file?") from None

    def _read(self, size: int) -> bytes:
        """Up to `size` bytes of the file (b"" at its end)."""
        try:
            data = self._raw.read(max(size, 3) if self._first else size)
        except _READ_ERRORS as err:
            self._fail(err)
        return data

    def next_block(self) -> bytes | None:
        pending = self._pending  # read since the last cut: one line may span many reads
        while not self._eof:
            data = self._read(self._block_bytes)
            if not data:
                self._eof = True
                break
            if self._first:
                self._first = False
                data = data.removeprefix(b"\xef\xbb\xbf")
            # Cut after the last \n, or after a \r that is not the last byte (so a
            # \r\n pair is never split); read on if neither is there yet. Only the new
            # bytes are searched, so a huge line costs linear time.
            cut = max(data.rfind(b"\n"), data.rfind(b"\r", 0, -1))
            if cut >= 0:
                block = b"".join([*pending, data[:cut + 1]])
                pending[:] = [data[cut + 1:]]
                return block
            pending.append(data)
        block = b"".join(pending)
        pending.clear()
        return block or None

    def records(self, block: bytes):
        """The records of `block` as text (undecodable bytes as surrogate escapes)."""
        pending = collections.deque(_lines(block.decode("utf-8", "surrogateescape")))
        if self._format != "csv":
            while pending:
                record = pending.popleft()
                yield record[:-1] if record.endswith("\n") else record
            return

        def lines():  # the block's lines, then the file's while a record is open
            while True:
                if not pending:
                    more = self.next_block()
                    if more is None:
                        return
                    pending.extend(_lines(more.decode("utf-8", "surrogateescape")))
                yield pending.popleft()

        for record in _csv_records(lines(), at_boundary=lambda: not pending):
            yield record[:-1] if record.endswith("\n") else record


def has_invalid_encoding(record: str) -> bool:
    """True when `record` came from bytes that are not UTF-8 (surrogate escapes)."""
    if record.isascii():
        return False
    try:
        record.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(record: str | bytes) -> str:
    """`record` with undecodable bytes shown as `\\xNN` (for the dead-letter output)."""
    if isinstance(record, str):
        record = record.encode("utf-8", "surrogateescape")
    return record.decode("utf-8", "backslashreplace")


def _read_header(path: str) -> tuple[str, ...] | None:
    for record in text_records(path, "csv"):
        if record.strip():
            if has_invalid_encoding(record):
                raise MalformedFile(path, f"the header is not UTF-8: {printable(record)!r}")
            try:
                return tuple(next(csv.reader([record])))
            except csv.Error as err:
                raise MalformedFile(path, f"the header is not a CSV line ({err})") from None
    return None


def _check_parquet_columns(path: str, columns) -> None:
    import pyarrow.parquet as pq

    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            names = pq.read_schema(fh).names
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
        raise MalformedFile(path, f"not readable as Parquet ({type(err).__name__}: "
                            f"{err})") from None
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
            named = [(p, h) for p, h in headers.items() if h is not None]  # files in order
            first_path, first = named[0]
            path, other = next((p, h) for p, h in named if h != first)
            raise ValueError(f"every CSV file of the glob must share one header; {path} has "
                             f"{list(other)}, {first_path} has {list(first)}")
        header = distinct.pop()
        twice = sorted({c for c in header if header.count(c) > 1})
        if twice:
            raise ValueError(f"{files[0]}: the CSV header names column(s) {twice} more than "
                             "once; which one holds the data is ambiguous. Rename them")
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"the CSV header has no column(s) {missing} named by the spec. "
                             f"Received header: {list(header)}")
    elif fmt == "parquet" and columns:
        _check_parquet_columns(files[0], columns)
    return InputFiles(pattern=pattern, format=fmt, files=files, header=header)


def parquet_rows(path: str, columns=None, batch_size: int = 4096):
    """Yields every row of a Parquet file as a dict (only `columns`, if given).

    Raises:
        MalformedFile: the file is not readable Parquet or lacks a column.
    """
    import pyarrow.parquet as pq

    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            parquet = pq.ParquetFile(fh)
            missing = [c for c in columns or () if c not in parquet.schema_arrow.names]
            if missing:
                raise MalformedFile(path, f"the Parquet schema has no column(s) {missing} "
                                    f"named by the spec")
            for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
                yield from batch.to_pylist()
    except MalformedFile:
        raise
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
        raise MalformedFile(path, f"not readable as Parquet ({type(err).__name__}: "
                            f"{err})") from None


class _ReadFileFn(beam.DoFn):
    """path -> `(path, raw row)` for every non-blank record (CSV: after the header)."""

    def __init__(self, input_format: str, columns):
        self._format, self._columns = input_format, columns

    def process(self, path):
        if self._format == "parquet":
            for row in parquet_rows(path, self._columns):
                yield path, row
            return
        header = self._format == "csv"
        for record in text_records(path, self._format):
            if not record.strip():
                continue
            if header:  # the first non-blank record; resolve_input checked it
                header = False
                continue
            if has_invalid_encoding(record):  # Beam's str coder needs valid UTF-8
                record = record.encode("utf-8", "surrogateescape")
            yield path, record


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
        return (pbegin
                | "Files" >> beam.Create(list(self._input.files))
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadRecords" >> beam.ParDo(_ReadFileFn(self._input.format, self._columns)))
