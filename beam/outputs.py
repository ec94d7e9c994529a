"""The output layout and the writers for every file the pipeline produces.

```
OUTPUT/
  train/part-SSSSS-of-NNNNN.tfrecord.gz     gzip TFRecords of tf.train.Example
  validation/part-SSSSS-of-NNNNN.tfrecord.gz   (early stopping, tuning)
  eval/part-SSSSS-of-NNNNN.tfrecord.gz
  vocab/<feature>.txt                       one value per line, most frequent first
  dead_letter/rejected-SSSSS-of-NNNNN.jsonl {"reason", "detail", "source", "row"}
  spec.json                                 the feature spec used
  metadata.json                             counts, sizes, stats, split (written last)
  _staging/                                 a running (or killed) run's files
```

The pipeline writes into `OUTPUT/_staging/`; `promote` moves the finished files into
place, `metadata.json` last, so `metadata.json` marks a finished run. Files of ours
without it are debris of a killed or failed run, which the next run deletes.

`OUTPUT` is a local path or any Beam filesystem URL (gs://, s3://, ...): every
file is written through `apache_beam.io.filesystems.FileSystems` or a Beam sink.
`metadata.json` waits (through side inputs) for the written shard names, so its
presence means the run completed.
"""

from __future__ import annotations

import json
import logging
import zlib

import apache_beam as beam
import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

__all__ = [
    "DEAD_LETTER_GLOB",
    "STAGING_DIR",
    "EVAL_GLOB",
    "METADATA_FILE",
    "SPEC_FILE",
    "TRAIN_GLOB",
    "VALIDATION_GLOB",
    "WriteDeadLetter",
    "WriteTFRecords",
    "clear_previous_outputs",
    "dead_letter_line",
    "dead_letter_files",
    "output_path",
    "previous_outputs",
    "shard_name",
    "promote",
    "read_json",
    "read_text",
    "staging_path",
    "tfrecord_frames",
    "write_json",
    "write_text_file",
    "write_tfrecord_shard",
    "write_vocabulary",
]

TRAIN_PREFIX, EVAL_PREFIX = "train/part", "eval/part"
TFRECORD_SUFFIX = ".tfrecord.gz"
TRAIN_GLOB, EVAL_GLOB = "train/part-*.tfrecord.gz", "eval/part-*.tfrecord.gz"
VALIDATION_GLOB = "validation/part-*.tfrecord.gz"
DEAD_LETTER_PREFIX, DEAD_LETTER_GLOB = "dead_letter/rejected", "dead_letter/rejected-*.jsonl"
VOCAB_DIR = "vocab"
METADATA_FILE, SPEC_FILE = "metadata.json", "spec.json"
STAGING_DIR = "_staging"
_OWN_GLOBS = (TRAIN_GLOB, VALIDATION_GLOB, EVAL_GLOB, DEAD_LETTER_GLOB, f"{VOCAB_DIR}/*.txt",
              METADATA_FILE, SPEC_FILE)


def output_path(output: str, relative: str) -> str:
    """`OUTPUT/relative` on any filesystem (`relative` uses "/")."""
    return FileSystems.join(output, *relative.split("/"))


def write_json(path: str, obj) -> str:
    """Writes pretty JSON via a temporary file and a rename; returns `path`."""
    tmp = path + ".tmp"
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        fh.write((json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
    return path


def read_text(path: str) -> str:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return fh.read().decode("utf-8")


def read_json(path: str):
    return json.loads(read_text(path))


def staging_path(output: str) -> str:
    """`OUTPUT/_staging`: where a run writes before its files are promoted."""
    return output_path(output, STAGING_DIR)


def dead_letter_files(output: str) -> list[str]:
    result = FileSystems.match([output_path(output, DEAD_LETTER_GLOB)])[0]
    return sorted(m.path for m in result.metadata_list)


def _delete_tree(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])


def promote(staging: str, output: str, files: dict, with_metadata: bool = True) -> None:
    """Moves a finished run's files from `staging` into `output`, `metadata.json` last.

    Args:
        files: metadata["files"]-shaped: lists or dicts of paths relative to the folders.
        with_metadata: also move `metadata.json` (False keeps the run unfinished).
    """
    relative = []
    for value in files.values():
        relative += (list(value.values()) if isinstance(value, dict)
                     else [value] if isinstance(value, str) else list(value))
    if with_metadata:
        relative.append(METADATA_FILE)
    for rel in relative:
        target = output_path(output, rel)
        folder = FileSystems.split(target)[0]
        if not FileSystems.exists(folder):
            FileSystems.mkdirs(folder)
        if FileSystems.exists(target):
            FileSystems.delete([target])
        FileSystems.rename([output_path(staging, rel)], [target])
    _delete_tree(staging)


def write_vocabulary(name_values, output: str):
    """Writes `OUTPUT/vocab/<name>.txt`; returns `(name, vocabulary size)`."""
    name, values = name_values
    path = output_path(output, f"{VOCAB_DIR}/{name}.txt")
    text = "".join(f"{value}\n" for value in values)
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        fh.write(text.encode("utf-8"))
    return name, len(values)


def previous_outputs(output: str) -> list[str]:
    """Files of an earlier run in `output` that this pipeline would write again."""
    patterns = [output_path(output, glob) for glob in _OWN_GLOBS]
    return sorted(m.path for result in FileSystems.match(patterns)
                  for m in result.metadata_list)


def clear_previous_outputs(output: str, overwrite: bool) -> None:
    """Deletes an earlier run's files: a finished run's only with `overwrite`.

    Stale shards would otherwise be read with the new ones (shard counts differ).
    A killed or failed run's files (no `metadata.json`) and the staging folder are
    debris and go without asking.

    Raises:
        FileExistsError: `output` holds a finished run and `overwrite` is False.
    """
    found = previous_outputs(output)
    finished = output_path(output, METADATA_FILE) in found
    if finished and not overwrite:
        raise FileExistsError(f"--out_dir {output!r} already holds a finished run "
                              f"({len(found)} files, e.g. {found[0]}); pass --overwrite to "
                              "replace them or choose another directory")
    if found and not finished:
        logging.info("deleting %d file(s) of an unfinished earlier run in %s", len(found),
                     output)
    if found:
        FileSystems.delete(found)
    _delete_tree(staging_path(output))


def dead_letter_line(record: dict) -> str:
    """A dead-letter dict as one JSON line (without the line break)."""
    return json.dumps(record, ensure_ascii=False, default=str)


def write_text_file(output: str, relative: str, text: str) -> str:
    """Writes `OUTPUT/relative` (UTF-8); returns its path."""
    path = output_path(output, relative)
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        fh.write(text.encode("utf-8"))
    return path


class WriteTFRecords(beam.PTransform):
    """Serialised examples -> gzip TFRecord shards; outputs the written file names.

    Args:
        output: the output directory.
        split: `"train"`, `"validation"` or `"eval"` (the shards' folder).
        num_shards: number of shards, 0 to let the runner decide.
    """

    def __init__(self, output: str, split: str, num_shards: int = 0):
        super().__init__()
        self._prefix = output_path(output, f"{split}/part")
        self._num_shards = num_shards

    def expand(self, serialized):
        return serialized | "WriteTFRecord" >> beam.io.WriteToTFRecord(
            self._prefix, file_name_suffix=TFRECORD_SUFFIX, num_shards=self._num_shards,
            compression_type=CompressionTypes.GZIP)


class WriteDeadLetter(beam.PTransform):
    """Dead-letter dicts -> `OUTPUT/dead_letter/rejected-*.jsonl`; outputs file names."""

    def __init__(self, output: str):
        super().__init__()
        self._prefix = output_path(output, DEAD_LETTER_PREFIX)

    def expand(self, rejected):
        return (rejected
                | "ToJsonLine" >> beam.Map(dead_letter_line)
                | "WriteJsonLines" >> beam.io.WriteToText(self._prefix,
                                                          file_name_suffix=".jsonl"))


# ---- TFRecord shards written by the batched pipeline -----------------------------------
GZIP_LEVEL = 1
"""zlib level of the batched pipeline's gzip TFRecords: level 1 writes ~4x faster than
Beam's default (6) for files ~15% larger; `tf.data` reads either."""


def _crc32c_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1)
    return table.astype(np.uint32)


_CRC32C_TABLE = _crc32c_table()


def _masked(crcs: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC: rotated right by 15 bits plus a constant."""
    crcs = crcs.astype(np.uint32)
    return ((crcs >> np.uint32(15)) | (crcs << np.uint32(17))) + np.uint32(0xA282EAD8)


def _length_crcs(length_bytes: np.ndarray) -> np.ndarray:
    """CRC32C of each row of an (n, 8) uint8 array, table-driven over the 8 columns."""
    crc = np.full(len(length_bytes), 0xFFFFFFFF, dtype=np.uint32)
    for k in range(8):
        crc = _CRC32C_TABLE[(crc ^ length_bytes[:, k]) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
    return crc ^ np.uint32(0xFFFFFFFF)


def _fixed(data: np.ndarray, width: int) -> pa.Array:
    n = len(data) // width
    offsets = np.arange(0, width * n + 1, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets.tobytes()),
                                                  pa.py_buffer(np.ascontiguousarray(data))])


def tfrecord_frames(records: pa.Array) -> bytes:
    """`records` (an Arrow binary array) in the TFRecord framing: each record's length
    (uint64, little-endian), its masked CRC32C, the data and its masked CRC32C."""
    if not len(records):
        return b""
    value = google_crc32c.value
    lengths = pc.binary_length(records).to_numpy(zero_copy_only=False).astype("<u8")
    length_bytes = lengths.view(np.uint8).reshape(-1, 8)
    data_crcs = np.fromiter((value(r) for r in records.to_pylist()), dtype=np.uint32,
                            count=len(records))
    framed = pc.binary_join_element_wise(
        _fixed(length_bytes.ravel(), 8),
        _fixed(_masked(_length_crcs(length_bytes)).astype("<u4").view(np.uint8), 4),
        records, _fixed(_masked(data_crcs).astype("<u4").view(np.uint8), 4),
        pa.scalar(b"", pa.binary()))
    _, offsets, data = framed.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32, count=len(framed) + 1,
                           offset=4 * framed.offset)
    return data.to_pybytes()[bounds[0]:bounds[-1]]


def shard_name(split: str, index: int, count: int) -> str:
    """`split/part-SSSSS-of-NNNNN.tfrecord.gz`, relative to the output folder."""
    return f"{split}/part-{index:05d}-of-{count:05d}{TFRECORD_SUFFIX}"


def write_tfrecord_shard(output: str, relative: str, records: pa.Array) -> str:
    """Writes `records` (an Arrow binary array) as one gzip TFRecord file
    `OUTPUT/relative`; returns its path. A rerun (a retried bundle) writes the same bytes
    under the same name."""
    path = output_path(output, relative)
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        for start in range(0, len(records), 65536):
            fh.write(compressor.compress(tfrecord_frames(records[start:start + 65536])))
        fh.write(compressor.flush())
    return path
