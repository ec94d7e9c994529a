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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import operator

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam import outputs
from beam.aggregate import AggregateExamples
from beam.examples import EncodeExamples
from beam.metadata import WriteMetadata
from beam.sources import FORMATS, ReadRawRows, resolve_input
from beam.split import PlanSplit, SplitExamples
from beam.stats import NumericStats, SplitTotalsFn
from beam.validate import ValidateRows
from beam.vocabulary import ComputeVocabularies
from tfddn.spec import FeatureSpec, load_spec

__all__ = ["PreprocessConfig", "build_pipeline", "main", "run"]


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
    """

    input: str
    output: str
    spec: FeatureSpec
    input_format: str = "auto"
    eval_fraction: float = 0.1
    eval_buckets: int = 1
    num_shards: int = 0

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


def _write_spec(spec_dict, output):
    return outputs.write_json(outputs.output_path(output, outputs.SPEC_FILE), spec_dict)


def build_pipeline(pipeline: beam.Pipeline, config: PreprocessConfig) -> dict:
    """Adds every preprocessing step to `pipeline`.

    Matches the input glob and reads the CSV header now, at construction time.

    Returns:
        A dict of the main PCollections: `examples` (aggregated example dicts),
        `train` and `eval` (the same, split), `rejected` (dead-letter dicts) and
        `metadata` (the singleton metadata dict).
    """
    spec, output = config.spec, config.output
    source = resolve_input(config.input, config.input_format, spec.raw_columns)
    raw = pipeline | "ReadRawRows" >> ReadRawRows(source, columns=spec.raw_columns)
    validated = raw | "Validate" >> ValidateRows(spec, source.format, source.header)
    plan = validated.buckets | "PlanSplit" >> PlanSplit(
        has_timestamp=bool(spec.timestamp), eval_buckets=config.eval_buckets,
        eval_fraction=config.eval_fraction, time_bucket_seconds=spec.time_bucket_seconds)
    examples = validated.valid | "Aggregate" >> AggregateExamples(spec)
    train, eval_ = examples | "Split" >> SplitExamples(plan)
    split = {"train": train, "eval": eval_}

    counts = {
        "rows_read": raw | "CountRowsRead" >> beam.combiners.Count.Globally(),
        "rejected_by_reason": (validated.rejected
                               | "Reason" >> beam.Map(operator.itemgetter("reason"))
                               | "CountPerReason" >> beam.combiners.Count.PerElement()
                               | "ReasonsToDict" >> beam.combiners.ToDict()),
        "split": plan,
        "dead_letter_files": validated.rejected | "DeadLetter" >> outputs.WriteDeadLetter(
            output),
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
        "input": config.input, "input_format": source.format, "output": output,
        "spec": spec.to_dict(),
        "vocabulary_features": [f.name for f in spec.vocabulary_features]})
    return {"examples": examples, "train": split["train"], "eval": split["eval"],
            "rejected": validated.rejected, "metadata": metadata}


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
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files of an earlier run in --output")
    return parser


def run(argv=None) -> dict:
    """Parses flags, runs the pipeline to completion and returns the metadata dict."""
    args, pipeline_args = _parser().parse_known_args(argv)
    config = PreprocessConfig(
        input=args.input, output=args.output, spec=load_spec(args.spec),
        input_format=args.input_format, eval_fraction=args.eval_fraction,
        eval_buckets=args.eval_buckets, num_shards=args.num_shards)
    pipeline = beam.Pipeline(options=PipelineOptions(pipeline_args))
    build_pipeline(pipeline, config)  # fails on a bad input or spec before any deletion
    outputs.clear_previous_outputs(config.output, args.overwrite)
    result = pipeline.run()
    state = result.wait_until_finish()
    if state not in (None, beam.runners.runner.PipelineState.DONE):
        raise RuntimeError(f"the preprocessing pipeline ended in state {state}")
    return outputs.read_json(outputs.output_path(config.output, outputs.METADATA_FILE))


def main(argv=None) -> None:
    logging.getLogger().setLevel(logging.INFO)
    metadata = run(argv)
    summary = {key: metadata[key] for key in ("rows_read", "rows_aggregated", "rows_rejected",
                                              "examples", "vocabulary_sizes")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
