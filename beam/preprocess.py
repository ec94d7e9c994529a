"""Raw CTR logs -> gzip TFRecords + vocabularies + metadata, on any Beam runner.

The preprocessing stage of tfddn (see DESIGN.md, "Data flow"):

    read (CSV | JSONL | Parquet)
      -> parse + validate + key (one fused DoFn) -> dead letter with a reason per row
      -> aggregate clicks / impressions / cpc per (features, time bucket)
      -> deterministic split: last time buckets, or a stable hash of the key
      -> vocabularies from train (min_count; rarer values map to OOV)
      -> train/eval gzip TFRecords of tf.train.Example, spec.json, metadata.json

Example:

    python -m beam.preprocess --input 'logs/*.csv' --spec spec.json --output prep/
    python -m beam.preprocess --input 'gs://bucket/logs/*.parquet' --spec spec.json \\
        --output gs://bucket/prep --runner DataflowRunner --project P --region R \\
        --temp_location gs://bucket/tmp --setup_file ./setup.py

`metadata.json` keys: `input`, `input_format`, `output`, `created_at`,
`rows_read` = `rows_aggregated` + `rows_rejected`, `rejected_by_reason`
{code: n}, `examples` / `clicks` / `impressions` {"train": n, "eval": n},
`vocabulary_sizes` {feature: size without OOV}, `numeric_stats` {feature:
{count, mean, std, min, max}} over train examples, `split` {"method": "time" |
"hash", ...}, `files` (relative output paths) and `spec`.

Crash-safe: the pipeline writes into `OUTPUT/_staging/` and the files move into
`OUTPUT` only when it has finished and passed its checks, `metadata.json` last. A
killed run leaves nothing a later step mistakes for output, and a rerun into the same
folder cleans it up without `--overwrite` (which only guards a finished run's files).

A run fails, naming the reasons, when more than `--max_rejected_share` of the rows
are rejected (only the dead-letter rows are kept, for the diagnosis), and when the
input holds no rows. A file that cannot be read to its end fails the run by name.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import sys

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam import outputs
from beam.aggregate import AggregateExamples
from beam.examples import EncodeExamples
from beam.metadata import WriteMetadata
from beam.sources import FORMATS, ReadRawRows, malformed_file_in, resolve_input
from beam.split import PlanSplit, SplitExamples
from beam.stats import NumericStats, SplitTotalsFn
from beam.validate import REJECTED, ValidateRows
from beam.vocabulary import ComputeVocabularies
from tfddn.errors import run_main
from tfddn.spec import FeatureSpec, load_spec

__all__ = ["PreprocessConfig", "build_pipeline", "main", "preprocess", "run"]


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Settings of one preprocessing run.

    Attributes:
        input: file glob of the raw logs (local or any Beam filesystem).
        output: output directory (local or any Beam filesystem).
        spec: the `FeatureSpec` naming every column's role.
        input_format: `"auto"` (from the file extension) or one of csv, jsonl, parquet.
        eval_fraction: share of keys in eval for the hash split, in [0, 1).
        eval_buckets: number of last time buckets in eval for the time split.
        num_shards: TFRecord shards per split; 0 lets the runner decide.
        max_rejected_share: the run fails when a larger share of the rows is rejected.
    """

    input: str
    output: str
    spec: FeatureSpec
    input_format: str = "auto"
    eval_fraction: float = 0.1
    eval_buckets: int = 1
    num_shards: int = 0
    max_rejected_share: float = 0.5

    def __post_init__(self):
        if not isinstance(self.spec, FeatureSpec):
            raise TypeError(f"spec must be a FeatureSpec. Received: {type(self.spec).__name__}")
        if self.input_format not in ("auto", *FORMATS):
            raise ValueError(f"input_format must be auto or one of {list(FORMATS)}. "
                             f"Received: input_format={self.input_format!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1). "
                             f"Received: eval_fraction={self.eval_fraction!r}")
        if not isinstance(self.eval_buckets, int) or self.eval_buckets < 1:
            raise ValueError(f"eval_buckets must be an integer >= 1. "
                             f"Received: eval_buckets={self.eval_buckets!r}")
        if not isinstance(self.num_shards, int) or self.num_shards < 0:
            raise ValueError(f"num_shards must be an integer >= 0. "
                             f"Received: num_shards={self.num_shards!r}")
        if not 0.0 <= self.max_rejected_share <= 1.0:
            raise ValueError(f"max_rejected_share must be in [0, 1]. "
                             f"Received: max_rejected_share={self.max_rejected_share!r}")


def _write_spec(spec_dict, output):
    return outputs.write_json(outputs.output_path(output, outputs.SPEC_FILE), spec_dict)


def _rows_per_reason(record: dict):
    return record["reason"], record.get("rows", 1)


def build_pipeline(pipeline: beam.Pipeline, config: PreprocessConfig,
                   write_to: str | None = None) -> dict:
    """Adds every preprocessing step to `pipeline`.

    Matches the input glob and reads the CSV header now, at construction time.
    Files are written into `write_to` (default: `config.output`; `preprocess` passes
    the staging folder); `metadata.json` names `config.output`.

    Returns:
        A dict of the main PCollections: `examples` (aggregated example dicts),
        `train` and `eval` (the same, split), `rejected` (dead-letter dicts) and
        `metadata` (the singleton metadata dict).
    """
    spec, output = config.spec, write_to or config.output
    source = resolve_input(config.input, config.input_format, spec.raw_columns)
    raw = pipeline | "ReadRawRows" >> ReadRawRows(source, columns=spec.raw_columns)
    validated = raw | "Validate" >> ValidateRows(spec, source.format, source.header)
    plan = validated.buckets | "PlanSplit" >> PlanSplit(
        has_timestamp=bool(spec.timestamp), eval_buckets=config.eval_buckets,
        eval_fraction=config.eval_fraction, time_bucket_seconds=spec.time_bucket_seconds)
    aggregated = validated.valid | "Aggregate" >> AggregateExamples(spec, REJECTED)
    examples = aggregated.examples
    rejected = ((validated.rejected, aggregated[REJECTED])
                | "AllRejected" >> beam.Flatten())
    train, eval_ = examples | "Split" >> SplitExamples(plan)
    split = {"train": train, "eval": eval_}

    counts = {
        "rows_read": raw | "CountRowsRead" >> beam.combiners.Count.Globally(),
        "rejected_by_reason": (rejected
                               | "Reason" >> beam.Map(_rows_per_reason)
                               | "RowsPerReason" >> beam.CombinePerKey(sum)
                               | "ReasonsToDict" >> beam.combiners.ToDict()),
        "split": plan,
        "dead_letter_files": rejected | "DeadLetter" >> outputs.WriteDeadLetter(output),
    }
    for name in ("train", "eval"):
        label = name.capitalize()
        counts[f"{name}_totals"] = split[name] | f"{label}Totals" >> beam.CombineGlobally(
            SplitTotalsFn())
        counts[f"{name}_files"] = (split[name]
                                   | f"Encode{label}" >> EncodeExamples(spec)
                                   | f"Write{label}" >> outputs.WriteTFRecords(
                                       output, name, config.num_shards))
    counts["vocabulary_sizes"] = (split["train"]
                                  | "Vocabulary" >> ComputeVocabularies(spec.vocabulary_features)
                                  | "WriteVocabularies" >> beam.Map(
                                      outputs.write_vocabulary, output)
                                  | "VocabularySizes" >> beam.combiners.ToDict())
    counts["numeric_stats"] = split["train"] | "NumericStats" >> NumericStats(
        [f.name for f in spec.numeric_features])
    _ = (pipeline
         | "SpecSeed" >> beam.Create([spec.to_dict()])
         | "WriteSpec" >> beam.Map(_write_spec, output))
    metadata = counts | "Metadata" >> WriteMetadata({
        "input": config.input, "input_format": source.format, "output": config.output,
        "spec": spec.to_dict(),
        "vocabulary_features": [f.name for f in spec.vocabulary_features]}, write_to=output)
    return {"examples": examples, "train": split["train"], "eval": split["eval"],
            "rejected": rejected, "metadata": metadata}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m beam.preprocess",
        description="Preprocess raw CTR logs (CSV, JSONL or Parquet; impression-level or "
                    "aggregated) into gzip TFRecords of tf.train.Example, vocabularies and "
                    "metadata.json for tfddn, validating every row (rejected rows go to "
                    "OUTPUT/dead_letter/ with a reason).",
        epilog="Any other flag is a Beam pipeline option, e.g. --runner DataflowRunner, "
               "--direct_num_workers 4 --direct_running_mode multi_processing, "
               "--setup_file ./setup.py (remote runners; ships tfddn and beam to workers). "
               "The default runner is DirectRunner.")
    parser.add_argument("--input", required=True,
                        help="file glob of raw logs, local or any Beam filesystem (gs://...)")
    parser.add_argument("--input_format", default="auto", choices=("auto", *FORMATS),
                        help="auto: from the extension (.csv, .jsonl/.json, .parquet; "
                             "default: %(default)s)")
    parser.add_argument("--spec", required=True, help="feature spec file (JSON or YAML)")
    parser.add_argument("--output", required=True,
                        help="output directory, local or any Beam filesystem")
    parser.add_argument("--eval_fraction", type=float, default=0.1,
                        help="share of keys in eval for the hash split: used without a "
                             "timestamp, or when there are no more time buckets than "
                             "--eval_buckets (default: %(default)s)")
    parser.add_argument("--eval_buckets", type=int, default=1,
                        help="number of last time buckets in eval when the spec has a "
                             "timestamp (default: %(default)s)")
    parser.add_argument("--num_shards", type=int, default=0,
                        help="TFRecord shards per split; 0 lets the runner decide "
                             "(default: %(default)s)")
    parser.add_argument("--max_rejected_share", type=float, default=0.5,
                        help="fail (keeping only the dead-letter rows) when a larger share "
                             "of the rows is rejected (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files of an earlier finished run in --output "
                             "(a killed or failed run's files are replaced without it)")
    return parser


def _examples_per_reason(staging: str, reasons, limit: int = 100_000) -> dict:
    """The first dead-letter detail of each reason in `reasons` (for error messages)."""
    examples, read = {}, 0
    for path in outputs.dead_letter_files(staging):
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            while line := fh.readline():  # streamed: a failed run's dead letter may be huge
                record = json.loads(line)
                examples.setdefault(record["reason"], record["detail"])
                read += 1
                if set(reasons) <= set(examples) or read >= limit:
                    return examples
    return examples


def check_rejected_share(metadata: dict, max_share: float, staging: str) -> None:
    """Raises `ValueError` naming the reasons when too many rows were rejected.

    Raises:
        ValueError: no rows were read, or `rows_rejected / rows_read > max_share`.
    """
    read, rejected = metadata["rows_read"], metadata["rows_rejected"]
    if read == 0:
        raise ValueError(f"--input {metadata['input']!r}: the files hold no rows")
    if rejected / read <= max_share:
        return
    reasons = collections.Counter({k: v for k, v in metadata["rejected_by_reason"].items()
                                   if v})
    examples = _examples_per_reason(staging, reasons)
    text = "; ".join(f"{reason} {count:,} (e.g. {examples.get(reason, '?')})"
                     for reason, count in reasons.most_common())
    raise ValueError(f"{rejected:,} of {read:,} rows rejected ({rejected / read:.0%} > "
                     f"--max_rejected_share {max_share:g}): {text}. Only the rejected rows "
                     f"were written, to {outputs.output_path(metadata['output'], 'dead_letter')}"
                     " (does the spec match the data?)")


def preprocess(config: PreprocessConfig, pipeline_args=(), overwrite: bool = False) -> dict:
    """Runs the pipeline to completion into `config.output`; returns the metadata dict.

    Args:
        config: the run's settings.
        pipeline_args: Beam pipeline options as flags (runner, workers, ...).
        overwrite: replace a finished earlier run's files in `config.output`.

    Raises:
        ValueError: a bad input or spec, a malformed file (by name), too many rejected rows.
        FileExistsError: `config.output` holds a finished run and not `overwrite`.
    """
    staging = outputs.staging_path(config.output)
    pipeline = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
    build_pipeline(pipeline, config, write_to=staging)  # fails on bad input before deleting
    outputs.clear_previous_outputs(config.output, overwrite)
    try:
        state = pipeline.run().wait_until_finish()
    except Exception as err:  # runners wrap a DoFn's exception; name the file if it was one
        message = malformed_file_in(err)
        if message:
            raise ValueError(message) from None
        raise
    if state not in (None, beam.runners.runner.PipelineState.DONE):
        raise RuntimeError(f"the preprocessing pipeline ended in state {state}")
    metadata = outputs.read_json(outputs.output_path(staging, outputs.METADATA_FILE))
    try:
        check_rejected_share(metadata, config.max_rejected_share, staging)
    except ValueError:
        outputs.promote(staging, config.output, {"dead_letter": metadata["files"][
            "dead_letter"]}, with_metadata=False)
        raise
    outputs.promote(staging, config.output, metadata["files"])
    return metadata


def run(argv=None) -> dict:
    """Parses flags, runs the pipeline to completion and returns the metadata dict."""
    args, pipeline_args = _parser().parse_known_args(argv)
    config = PreprocessConfig(
        input=args.input, output=args.output, spec=load_spec(args.spec),
        input_format=args.input_format, eval_fraction=args.eval_fraction,
        eval_buckets=args.eval_buckets, num_shards=args.num_shards,
        max_rejected_share=args.max_rejected_share)
    return preprocess(config, pipeline_args, overwrite=args.overwrite)


def _main(argv) -> None:
    logging.getLogger().setLevel(logging.INFO)
    metadata = run(argv)
    summary = {key: metadata[key] for key in ("rows_read", "rows_aggregated", "rows_rejected",
                                              "examples", "vocabulary_sizes")}
    print(json.dumps(summary, indent=2))


def main(argv=None) -> int:
    """`python -m beam.preprocess`: a user error prints one line (`--debug`: traceback)."""
    return run_main(_main, argv, prog="beam.preprocess")


if __name__ == "__main__":
    sys.exit(main())
