"""Assemble `metadata.json` from singleton PCollections, inside the pipeline.

Each count is a combine result (a singleton PCollection) read here as a side
input, so the metadata is exact on any runner and never depends on Beam metrics.
The shard names written by the sinks are side inputs too: `metadata.json` is
written only after every output file exists.

Accounting invariant: `rows_read == rows_aggregated + rows_rejected`. Blank
records are not rows; every other raw record is either summed into an example or
written to the dead-letter output with a reason (a key whose sums overflow is one
dead-letter record carrying its `rows`). A violation is a bug and fails
the run rather than writing wrong metadata.
"""

from __future__ import annotations

import datetime

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam import outputs
from beam.values import REASONS

__all__ = ["SPLITS", "WriteMetadata", "assemble_metadata"]

SPLITS = ("train", "validation", "eval")
"""The example splits, each a folder of TFRecord shards with its totals in the metadata."""
# Singleton inputs of `WriteMetadata`, by name.
SINGLETONS = ("rows_read", "rejected_by_reason", *(f"{s}_totals" for s in SPLITS),
              "vocabulary_sizes", "numeric_stats", "split")
# List inputs (written file names), by name.
FILE_LISTS = (*(f"{s}_files" for s in SPLITS), "dead_letter_files")


def _relative(paths, folder):
    return sorted(f"{folder}/{FileSystems.split(path)[1]}" for path in paths)


def assemble_metadata(_, *, static: dict, rows_read: int, rejected_by_reason: dict,
                      vocabulary_sizes: dict, numeric_stats: dict, split: dict,
                      dead_letter_files, **per_split) -> dict:
    """Builds the metadata dict (see `beam.preprocess` for the keys).

    `per_split` holds `<split>_totals` and `<split>_files` of every split in `SPLITS`.
    """
    by_reason = {code: int(rejected_by_reason.get(code, 0)) for code in REASONS}
    rows_rejected = sum(by_reason.values())
    splits = {name: per_split[f"{name}_totals"] for name in SPLITS}
    rows_aggregated = sum(totals["rows"] for totals in splits.values())
    if rows_read != rows_aggregated + rows_rejected:
        raise RuntimeError(f"row accounting does not reconcile: rows_read={rows_read} != "
                           f"rows_aggregated={rows_aggregated} + rows_rejected={rows_rejected}")
    return {
        "input": static["input"],
        "input_format": static["input_format"],
        "output": static["output"],
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "rows_read": rows_read,
        "rows_aggregated": rows_aggregated,
        "rows_rejected": rows_rejected,
        "rejected_by_reason": by_reason,
        "examples": {name: totals["examples"] for name, totals in splits.items()},
        "clicks": {name: totals["clicks"] for name, totals in splits.items()},
        "impressions": {name: totals["impressions"] for name, totals in splits.items()},
        "vocabulary_sizes": {name: vocabulary_sizes.get(name, 0)
                             for name in static["vocabulary_features"]},
        "numeric_stats": numeric_stats,
        "split": {**split, "validation_fraction": static.get("validation_fraction", 0.0),
                  "validation_hash": "md5 of 'validation|' + the aggregation key"},
        "files": {
            **{name: _relative(per_split[f"{name}_files"], name) for name in SPLITS},
            "dead_letter": _relative(dead_letter_files, "dead_letter"),
            "vocabulary": {name: f"{outputs.VOCAB_DIR}/{name}.txt"
                           for name in static["vocabulary_features"]},
            "spec": outputs.SPEC_FILE,
        },
        "spec": static["spec"],
    }


def _write_metadata(metadata: dict, output: str) -> dict:
    outputs.write_json(outputs.output_path(output, outputs.METADATA_FILE), metadata)
    return metadata


class WriteMetadata(beam.PTransform):
    """A dict of PCollections -> `OUTPUT/metadata.json`; outputs the metadata dict.

    The input dict maps each name in `SINGLETONS` to a singleton PCollection and
    each name in `FILE_LISTS` to a PCollection of written file names.

    Args:
        static: `input`, `input_format`, `output`, `spec` (dict) and
            `vocabulary_features` (names), known at construction time.
        write_to: the folder to write `metadata.json` into (default: `output`).
    """

    def __init__(self, static: dict, write_to: str | None = None):
        super().__init__()
        self._static = dict(static)
        self._write_to = write_to or static["output"]

    def expand(self, pcolls):
        side = {name: beam.pvalue.AsSingleton(pcolls[name]) for name in SINGLETONS}
        side.update({name: beam.pvalue.AsList(pcolls[name]) for name in FILE_LISTS})
        pipeline = pcolls[SINGLETONS[0]].pipeline
        return (pipeline
                | "Seed" >> beam.Create([None])
                | "Assemble" >> beam.Map(assemble_metadata, static=self._static, **side)
                | "WriteJson" >> beam.Map(_write_metadata, self._write_to))
