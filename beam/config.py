"""`PreprocessConfig`: the settings of one preprocessing run, and its command line.

Importable without Apache Beam or TensorFlow, so `tfddn preprocess --help` is instant;
`beam.preprocess.preprocess(config, pipeline_args)` runs it. Flags come from the fields
(`tfddn.flags`); every flag the config does not know is a Beam pipeline option.
"""

from __future__ import annotations

import argparse
import dataclasses

from tfddn.flags import add_config_file_argument, add_dataclass_arguments
from tfddn.spec import FeatureSpec, load_spec

__all__ = ["ENGINES", "FORMATS", "PreprocessConfig", "build_parser"]

FORMATS = ("csv", "jsonl", "parquet")
ENGINES = ("batched", "rows")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Settings of one preprocessing run.

    Attributes:
        input: file glob of the raw logs (local or any Beam filesystem).
        output: output directory (local or any Beam filesystem); flag `--out_dir`.
        spec: the `FeatureSpec` naming every column's role (a file name on the command
            line).
        input_format: `"auto"` (from the file extension) or one of csv, jsonl, parquet.
        eval_fraction: share of keys in eval for the hash split, in [0, 1).
        validation_fraction: share of the train keys in the validation split, in [0, 1).
        eval_buckets: number of last time buckets in eval for the time split.
        num_shards: TFRecord shards per split; 0 lets the runner decide.
        max_rejected_share: the run fails when a larger share of the rows is rejected.
        overwrite: replace the files of an earlier finished run in `output`.
        engine: `"batched"` (Arrow batches as Beam elements, vectorised; the default) or
            `"rows"` (one Beam element per row: the reference the batched engine is
            tested against).
    """

    input: str = dataclasses.field(metadata={
        "help": "file glob of raw logs, local or any Beam filesystem (gs://...)"})
    output: str = dataclasses.field(metadata={
        "help": "output directory, local or any Beam filesystem", "flag": "out_dir",
        "aliases": ("output",)})
    spec: FeatureSpec = dataclasses.field(metadata={
        "help": "feature spec file (JSON or YAML)", "parse": load_spec, "metavar": "FILE"})
    input_format: str = dataclasses.field(default="auto", metadata={
        "help": "auto: from the extension (.csv, .jsonl/.json, .parquet)",
        "choices": ("auto", *FORMATS)})
    eval_fraction: float = dataclasses.field(default=0.1, metadata={
        "help": "share of keys in eval for the hash split: used without a timestamp, or "
                "when there are no more time buckets than --eval_buckets"})
    validation_fraction: float = dataclasses.field(default=0.1, metadata={
        "help": "share of the train keys written to the validation split (early stopping "
                "and tuning read it; 0: none, training then holds out a hash subset)"})
    eval_buckets: int = dataclasses.field(default=1, metadata={
        "help": "number of last time buckets in eval when the spec has a timestamp"})
    num_shards: int = dataclasses.field(default=0, metadata={
        "help": "TFRecord shards per split; 0 lets the runner decide"})
    max_rejected_share: float = dataclasses.field(default=0.5, metadata={
        "help": "fail (keeping only the dead-letter rows) when a larger share of the rows "
                "is rejected"})
    overwrite: bool = dataclasses.field(default=False, metadata={
        "help": "replace the files of an earlier finished run in --out_dir (a killed or "
                "failed run's files are replaced without it)"})
    engine: str = dataclasses.field(default="batched", metadata={
        "help": "batched: Arrow batches as Beam elements, vectorised (fast); rows: one "
                "Beam element per row, the reference the batched engine is tested against",
        "choices": ENGINES})

    def __post_init__(self):
        if not isinstance(self.spec, FeatureSpec):
            raise TypeError(f"spec must be a FeatureSpec. Received: {type(self.spec).__name__}")
        if self.input_format not in ("auto", *FORMATS):
            raise ValueError(f"input_format must be auto or one of {list(FORMATS)}. "
                             f"Received: input_format={self.input_format!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1). "
                             f"Received: eval_fraction={self.eval_fraction!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1). "
                             f"Received: validation_fraction={self.validation_fraction!r}")
        if not isinstance(self.eval_buckets, int) or self.eval_buckets < 1:
            raise ValueError(f"eval_buckets must be an integer >= 1. "
                             f"Received: eval_buckets={self.eval_buckets!r}")
        if not isinstance(self.num_shards, int) or self.num_shards < 0:
            raise ValueError(f"num_shards must be an integer >= 0. "
                             f"Received: num_shards={self.num_shards!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {list(ENGINES)}. "
                             f"Received: engine={self.engine!r}")
        if not 0.0 <= self.max_rejected_share <= 1.0:
            raise ValueError(f"max_rejected_share must be in [0, 1]. "
                             f"Received: max_rejected_share={self.max_rejected_share!r}")


DESCRIPTION = ("Preprocess raw CTR logs (CSV, JSONL or Parquet; impression-level or "
               "aggregated) into gzip TFRecords of tf.train.Example, vocabularies and "
               "metadata.json for tfddn, validating every row (rejected rows go to "
               "OUT_DIR/dead_letter/ with a reason).")
EPILOG = ("Any other flag is a Beam pipeline option, e.g. --runner DataflowRunner, "
          "--direct_num_workers 4 --direct_running_mode multi_processing, "
          "--setup_file ./setup.py (remote runners; ships tfddn and beam to workers). "
          "The default runner is DirectRunner.")


def build_parser(prog: str = "tfddn preprocess", parser=None) -> argparse.ArgumentParser:
    """The preprocessing flags (on `parser` if given, e.g. a `tfddn` subcommand)."""
    if parser is None:
        parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    add_dataclass_arguments(parser, PreprocessConfig)
    add_config_file_argument(parser)
    return parser
