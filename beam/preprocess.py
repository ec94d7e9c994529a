"""Raw CTR logs -> gzip TFRecords + vocabularies + metadata, on any Beam runner.

The preprocessing stage of tfddn (see DESIGN.md, "Data flow"):

    read (CSV | JSONL | Parquet)
      -> parse + validate + key (one fused DoFn) -> dead letter with a reason per row
      -> aggregate clicks / impressions / cpc per (features, time bucket)
      -> deterministic split: last time buckets, or a stable hash of the key
      -> vocabularies from train (min_count; rarer values map to OOV)
      -> train/eval gzip TFRecords of tf.train.Example, spec.json, metadata.json

Example:

    python -m beam.preprocess --input 'logs/*.csv' --spec spec.json --out_dir prep/
    python -m beam.preprocess --input 'gs://bucket/logs/*.parquet' --spec spec.json \\
        --out_dir gs://bucket/prep --runner DataflowRunner --project P --region R \\
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

import collections
import json
import logging
import sys

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam import batched, outputs
from beam.aggregate import AggregateExamples
from beam.examples import EncodeExamples
from beam.config import PreprocessConfig, build_parser
from beam.sources import ReadRawRows, malformed_file_in, resolve_input
from beam.metadata import SPLITS, WriteMetadata
from beam.split import PlanSplit, SplitExamples, SplitValidation
from beam.stats import NumericStats, SplitTotalsFn
from beam.validate import REJECTED, ValidateRows
from beam.vocabulary import ComputeVocabularies
from tfddn.errors import run_main
from tfddn.flags import parse_config
from tfddn.spec import load_spec

__all__ = ["PreprocessConfig", "build_pipeline", "main", "preprocess", "run", "run_with"]


def _write_spec(spec_dict, output):
    return outputs.write_json(outputs.output_path(output, outputs.SPEC_FILE), spec_dict)


def _rows_per_reason(record: dict):
    return record["reason"], record.get("rows", 1)


def build_pipeline(pipeline: beam.Pipeline, config: PreprocessConfig,
                   write_to: str | None = None) -> dict:
    """Adds every preprocessing step to `pipeline`, with `config.engine`.

    Matches the input glob and reads the CSV header now, at construction time.
    Files are written into `write_to` (default: `config.output`; `preprocess` passes
    the staging folder); `metadata.json` names `config.output`.

    Returns:
        A dict of PCollections: `metadata` (the singleton metadata dict) and, for
        `engine="rows"`, `examples` (aggregated example dicts), `train` / `validation` /
        `eval` (the same, split) and `rejected` (dead-letter dicts).
    """
    spec, output = config.spec, write_to or config.output
    source = resolve_input(config.input, config.input_format, spec.raw_columns)
    static = {"input": config.input, "input_format": source.format, "output": config.output,
              "spec": spec.to_dict(), "validation_fraction": config.validation_fraction,
              "vocabulary_features": [f.name for f in spec.vocabulary_features]}
    if config.engine == "batched":
        metadata = pipeline | "Preprocess" >> batched.PreprocessBatches(
            spec, source, output, static, _plan_split_args(config),
            config.validation_fraction,
            batched.num_partitions(source.files, config.num_shards))
        return {"metadata": metadata}
    counts, collections_ = _row_steps(pipeline, config, source, output)
    rejected = collections_["rejected"]
    counts["rejected_by_reason"] = (rejected
                                    | "Reason" >> beam.Map(_rows_per_reason)
                                    | "RowsPerReason" >> beam.CombinePerKey(sum)
                                    | "ReasonsToDict" >> beam.combiners.ToDict())
    counts["dead_letter_files"] = rejected | "DeadLetter" >> outputs.WriteDeadLetter(output)
    _ = (pipeline
         | "SpecSeed" >> beam.Create([spec.to_dict()])
         | "WriteSpec" >> beam.Map(_write_spec, output))
    metadata = counts | "Metadata" >> WriteMetadata(static, write_to=output)
    return {**collections_, "metadata": metadata}


def _plan_split_args(config: PreprocessConfig) -> dict:
    spec = config.spec
    return dict(has_timestamp=bool(spec.timestamp), eval_buckets=config.eval_buckets,
                eval_fraction=config.eval_fraction,
                time_bucket_seconds=spec.time_bucket_seconds)


def _plan(buckets, config: PreprocessConfig):
    return buckets | "PlanSplit" >> PlanSplit(**_plan_split_args(config))


def _row_steps(pipeline, config: PreprocessConfig, source, output):
    """The row-by-row engine: one Beam element per raw row, example and record."""
    spec = config.spec
    raw = pipeline | "ReadRawRows" >> ReadRawRows(source, columns=spec.raw_columns)
    validated = raw | "Validate" >> ValidateRows(spec, source.format, source.header)
    plan = _plan(validated.buckets, config)
    aggregated = validated.valid | "Aggregate" >> AggregateExamples(spec, REJECTED)
    examples = aggregated.examples
    rejected = ((validated.rejected, aggregated[REJECTED])
                | "AllRejected" >> beam.Flatten())
    train_all, eval_ = examples | "Split" >> SplitExamples(plan)
    train, validation = train_all | "SplitValidation" >> SplitValidation(
        config.validation_fraction)
    split = {"train": train, "validation": validation, "eval": eval_}
    counts = {"rows_read": raw | "CountRowsRead" >> beam.combiners.Count.Globally(),
              "split": plan}
    for name in SPLITS:
        label = name.capitalize()
        counts[f"{name}_totals"] = split[name] | f"{label}Totals" >> beam.CombineGlobally(
            SplitTotalsFn())
        counts[f"{name}_files"] = (split[name]
                                   | f"Encode{label}" >> EncodeExamples(spec)
                                   | f"Write{label}" >> outputs.WriteTFRecords(
                                       output, name, config.num_shards))
    # Vocabularies and statistics of every training example, validation included.
    counts["vocabulary_sizes"] = (train_all
                                  | "Vocabulary" >> ComputeVocabularies(spec.vocabulary_features)
                                  | "WriteVocabularies" >> beam.Map(
                                      outputs.write_vocabulary, output)
                                  | "VocabularySizes" >> beam.combiners.ToDict())
    counts["numeric_stats"] = train_all | "NumericStats" >> NumericStats(
        [f.name for f in spec.numeric_features])
    return counts, {"examples": examples, **split, "rejected": rejected}


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


def preprocess(config: PreprocessConfig, pipeline_args=(), overwrite: bool | None = None
               ) -> dict:
    """Runs the pipeline to completion into `config.output`; returns the metadata dict.

    Args:
        config: the run's settings.
        pipeline_args: Beam pipeline options as flags (runner, workers, ...).
        overwrite: replace a finished earlier run's files in `config.output`
            (default: `config.overwrite`).

    Raises:
        ValueError: a bad input or spec, a malformed file (by name), too many rejected rows.
        FileExistsError: `config.output` holds a finished run and not `overwrite`.
    """
    staging = outputs.staging_path(config.output)
    pipeline = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
    build_pipeline(pipeline, config, write_to=staging)  # fails on bad input before deleting
    outputs.clear_previous_outputs(
        config.output, config.overwrite if overwrite is None else overwrite)
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


def run_with(pipeline_args=(), **settings) -> dict:
    """`preprocess(PreprocessConfig(**settings), pipeline_args)`: the pipeline as a
    function of its settings, for callers that take one (`tfddn.simulation.simulate`).
    `spec` may be a `FeatureSpec` or a spec file name."""
    if isinstance(settings.get("spec"), str):
        settings["spec"] = load_spec(settings["spec"])
    return preprocess(PreprocessConfig(**settings), pipeline_args)


def run(argv=None) -> dict:
    """Parses flags, runs the pipeline to completion and returns the metadata dict."""
    config, _, pipeline_args = parse_config(build_parser("python -m beam.preprocess"),
                                            PreprocessConfig, argv, known_only=True)
    return preprocess(config, pipeline_args)


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
