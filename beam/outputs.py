"""The output layout and the writers for every file the pipeline produces.

```
OUTPUT/
  train/part-SSSSS-of-NNNNN.tfrecord.gz     gzip TFRecords of tf.train.Example
  eval/part-SSSSS-of-NNNNN.tfrecord.gz
  vocab/<feature>.txt                       one value per line, most frequent first
  dead_letter/rejected-SSSSS-of-NNNNN.jsonl {"reason", "detail", "source", "row"}
  spec.json                                 the feature spec used
  metadata.json                             counts, sizes, stats, split (written last)
```

`OUTPUT` is a local path or any Beam filesystem URL (gs://, s3://, ...): every
file is written through `apache_beam.io.filesystems.FileSystems` or a Beam sink.
`metadata.json` waits (through side inputs) for the written shard names, so its
presence means the run completed.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

__all__ = [
    "DEAD_LETTER_GLOB",
    "EVAL_GLOB",
    "METADATA_FILE",
    "SPEC_FILE",
    "TRAIN_GLOB",
    "WriteDeadLetter",
    "WriteTFRecords",
    "clear_previous_outputs",
    "output_path",
    "previous_outputs",
    "read_json",
    "write_json",
    "write_vocabulary",
]

TRAIN_PREFIX, EVAL_PREFIX = "train/part", "eval/part"
TFRECORD_SUFFIX = ".tfrecord.gz"
TRAIN_GLOB, EVAL_GLOB = "train/part-*.tfrecord.gz", "eval/part-*.tfrecord.gz"
DEAD_LETTER_PREFIX, DEAD_LETTER_GLOB = "dead_letter/rejected", "dead_letter/rejected-*.jsonl"
VOCAB_DIR = "vocab"
METADATA_FILE, SPEC_FILE = "metadata.json", "spec.json"
_OWN_GLOBS = (TRAIN_GLOB, EVAL_GLOB, DEAD_LETTER_GLOB, f"{VOCAB_DIR}/*.txt",
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


def read_json(path: str):
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return json.loads(fh.read().decode("utf-8"))


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
    """Deletes an earlier run's files with `overwrite`, else refuses to mix runs.

    Stale shards would otherwise be read with the new ones (shard counts differ).

    Raises:
        FileExistsError: `output` holds pipeline outputs and `overwrite` is False.
    """
    found = previous_outputs(output)
    if found and not overwrite:
        raise FileExistsError(f"--output {output!r} already holds {len(found)} file(s) of an "
                              f"earlier run (e.g. {found[0]}); pass --overwrite to replace "
                              "them or choose another directory")
    if found:
        FileSystems.delete(found)


def _dead_letter_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=str)


class WriteTFRecords(beam.PTransform):
    """Serialised examples -> gzip TFRecord shards; outputs the written file names.

    Args:
        output: the output directory.
        split: `"train"` or `"eval"`.
        num_shards: number of shards, 0 to let the runner decide.
    """

    def __init__(self, output: str, split: str, num_shards: int = 0):
        super().__init__()
        prefix = TRAIN_PREFIX if split == "train" else EVAL_PREFIX
        self._prefix = output_path(output, prefix)
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
                | "ToJsonLine" >> beam.Map(_dead_letter_line)
                | "WriteJsonLines" >> beam.io.WriteToText(self._prefix,
                                                          file_name_suffix=".jsonl"))
