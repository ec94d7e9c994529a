"""Every command's typed config, importable without TensorFlow.

One place for the settings of `tfddn train`, `tune`, `evaluate`, `export`, `predict`,
`rank` and `ope` (`GenerateConfig`, `ModelConfig`, `SimulationConfig` / `WorldConfig`,
`PolicyConfig` and beam's `PreprocessConfig` live beside their code, which is
TensorFlow-free too). `tfddn.flags` turns any of them into command-line flags and
`--config FILE` values; `tfddn --help` and every subcommand's help therefore start in
well under a second.

Flag vocabulary (one name per concept, across commands): `--data_dir` (preprocessed
TFRecords), `--run_dir` (a trained run), `--out_dir` (a directory written), `--out` (a
file written; its extension picks CSV, JSONL or Parquet), `--model_base_path` (a
versioned SavedModel directory), `--kind` (reg, mdn, ddn, bbddn), `--policy` / `--c` /
`--stddev` / `--epsilon` / `--quantile`, `--mc_samples` (MC-dropout passes, default
`MC_SAMPLES`), `--rest_url` / `--grpc_target` / `--model_name` (a served model),
`--spec` (a feature spec file), `--seed`.
"""

from __future__ import annotations

import dataclasses

from tfddn.models.config import MODEL_KINDS
from tfddn.policy import PolicyConfig

__all__ = ["EvaluateConfig", "ExportConfig", "MC_SAMPLES", "MIN_MC_SAMPLES", "OPEConfig",
           "PredictConfig", "RankConfig", "TrainConfig", "TuneConfig", "check_mc_samples"]

MC_SAMPLES = 32
"""MC-dropout passes T of every command that measures model uncertainty."""
MIN_MC_SAMPLES = 2
"""The fewest passes with a model stddev (one pass has none)."""


def check_mc_samples(value: int, allow_zero: bool = False) -> None:
    if not (value >= MIN_MC_SAMPLES or (allow_zero and value == 0)):
        zero = " (or 0 to skip the model stddev)" if allow_zero else ""
        raise ValueError(f"mc_samples must be >= {MIN_MC_SAMPLES}{zero}. "
                         f"Received: mc_samples={value}")


def _mc_field(help_text: str = "MC-dropout passes T (model stddev, Thompson)"):
    return dataclasses.field(default=MC_SAMPLES, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to fit a model (the architecture is a `ModelConfig`)."""

    data_dir: str = dataclasses.field(metadata={"help": "output of `tfddn preprocess`"})
    run_dir: str = dataclasses.field(metadata={"help": "where the model, logs and config go"})
    epochs: int = dataclasses.field(default=20, metadata={"help": "maximum epochs"})
    batch_size: int = dataclasses.field(default=1024, metadata={"help": "examples per step"})
    patience: int = dataclasses.field(default=3, metadata={
        "help": "early stopping: epochs without validation-loss improvement"})
    validation_fraction: float = dataclasses.field(default=0.1, metadata={
        "help": "share of the train split held out for early stopping / tuning"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of weights, dropout, order"})
    mixed_precision: bool = dataclasses.field(default=False, metadata={
        "help": "compute in float16 (GPU), keep variables and the loss in float32"})
    verbose: int = dataclasses.field(default=1, metadata={
        "help": "0 silent, 1 progress bar, 2 one line per epoch"})
    calibrate_mean: bool = dataclasses.field(default=True, metadata={
        "help": "bbddn: after training, shift every Beta component mean by one logit offset "
                "so that predicted clicks equal the observed clicks of the train split "
                "(calibration in the large; early stopping on log loss does not ensure it "
                "when CTRs are low)"})
    warm_start_from: str | None = dataclasses.field(default=None, metadata={
        "help": "run directory of a previous model to start from (vocabularies may differ: "
                "embedding rows are matched by value)"})
    restart: bool = dataclasses.field(default=False, metadata={
        "help": "discard the backup of an interrupted run in RUN/backup instead of resuming "
                "it (a rerun with the same settings resumes; other settings are refused)"})

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0. Received: patience={self.patience}")


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """How to search (the data and run directories come from a `TrainConfig`)."""

    kind: str = dataclasses.field(default="ddn", metadata={
        "help": "model kind to tune", "choices": MODEL_KINDS})
    max_trials: int = dataclasses.field(default=6, metadata={"help": "random-search trials"})
    trial_epochs: int = dataclasses.field(default=4, metadata={
        "help": "epochs per trial (early stopping may cut it shorter)"})
    search_attention: bool = dataclasses.field(default=False, metadata={
        "help": "also search history_attention (if the spec has a history feature) and "
                "interaction_attention (Naor et al.); the search goes to its own "
                "RUN/tuner/<kind>_attention"})

    def __post_init__(self):
        if self.max_trials < 1 or self.trial_epochs < 1:
            raise ValueError(f"max_trials and trial_epochs must be >= 1. Received: "
                             f"max_trials={self.max_trials}, trial_epochs={self.trial_epochs}")
        if not isinstance(self.search_attention, bool):
            raise TypeError("search_attention must be a bool. Received: "
                            f"search_attention={self.search_attention!r}")

    @property
    def project_name(self) -> str:
        """The keras-tuner project in `RUN/tuner/`: one per kind and search space."""
        return f"{self.kind}_attention" if self.search_attention else self.kind


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """`tfddn evaluate`: metrics, calibration and plots of a run on a split."""

    run_dir: str = dataclasses.field(metadata={"help": "a run of `tfddn train` / `tune`"})
    data_dir: str = dataclasses.field(metadata={"help": "output of `tfddn preprocess`"})
    ground_truth: str | None = dataclasses.field(default=None, metadata={
        "help": "generator's ground_truth.parquet: adds mse_truth and the correlation of "
                "predicted and true data stddev"})
    split: str = dataclasses.field(default="eval", metadata={
        "help": "split to evaluate", "choices": ("train", "eval")})
    out_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "where the report goes (default: RUN_DIR/evaluation)"})


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """`tfddn export`: what to export and where.

    Attributes:
        run_dir: a `tfddn train` run (`model.keras`, `config.json`).
        export_base: the model's base path, e.g. `saved_models/ddn` (the server's
            `--model_base_path`).
        version: the version number; `None` = one more than the highest existing.
        mc_samples: T, the dropout passes of `mc_dropout` and `ucb`.
        check_rows: rows compared between the reloaded export and the Keras model.
        spec_path: the feature spec; default `<data_dir>/spec.json` of the run.
    """

    run_dir: str = dataclasses.field(metadata={"help": "a run of `tfddn train` / `tune`"})
    export_base: str = dataclasses.field(metadata={
        "help": "the model's base path, e.g. saved_models/ddn (versions go in numbered "
                "folders under it; `tfddn serve --model_base_path` reads it)",
        "flag": "model_base_path", "aliases": ("export_base",)})
    version: int | None = dataclasses.field(default=None, metadata={
        "help": "version number (default: one more than the highest)"})
    mc_samples: int = _mc_field("MC-dropout passes T of the mc_dropout and ucb signatures")
    check_rows: int = dataclasses.field(default=256, metadata={
        "help": "rows compared between the reloaded SavedModel and the Keras model"})
    spec_path: str | None = dataclasses.field(default=None, metadata={
        "help": "feature spec (default: the run's data_dir/spec.json)", "flag": "spec"})

    def __post_init__(self):
        if self.version is not None and (isinstance(self.version, bool) or not isinstance(
                self.version, int) or self.version < 0):
            raise ValueError(f"version must be a non-negative integer or None. "
                             f"Received: version={self.version!r}")
        check_mc_samples(self.mc_samples)
        if self.check_rows < 1:
            raise ValueError(f"check_rows must be >= 1. Received: check_rows={self.check_rows}")


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """`tfddn predict`: per-row predictions of a split or a raw file."""

    run_dir: str = dataclasses.field(metadata={"help": "a run of `tfddn train` / `tune`"})
    out: str = dataclasses.field(metadata={
        "help": "output file; .csv, .jsonl or .parquet"})
    data_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "output of `tfddn preprocess` whose --split is predicted (default: the "
                "run's data_dir)"})
    split: str = dataclasses.field(default="eval", metadata={
        "help": "split of --data_dir to predict", "choices": ("train", "eval")})
    input: str | None = dataclasses.field(default=None, metadata={
        "help": "a raw CSV/JSONL/Parquet file of rows as logged to predict instead of a "
                "split"})
    mc_samples: int = _mc_field()
    seed: int = dataclasses.field(default=0, metadata={"help": "MC-dropout seed"})


@dataclasses.dataclass(frozen=True)
class RankConfig:
    """`tfddn rank`: the top N candidates of every context by a policy."""

    candidates: str = dataclasses.field(metadata={
        "help": "CSV/JSONL/Parquet of target features (+ optional cpc column)"})
    contexts: str = dataclasses.field(metadata={
        "help": "CSV/JSONL/Parquet of context features"})
    out: str = dataclasses.field(metadata={"help": "output file; .csv, .jsonl or .parquet"})
    run_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "a run of `tfddn train` / `tune`"})
    rest_url: str | None = dataclasses.field(default=None, metadata={
        "help": "a served model's REST base URL"})
    grpc_target: str | None = dataclasses.field(default=None, metadata={
        "help": "a served model's gRPC host:port"})
    model_name: str = dataclasses.field(default="ddn", metadata={"help": "served model name"})
    spec: str | None = dataclasses.field(default=None, metadata={
        "help": "feature spec (default: the run's data spec, or the served model's "
                "metadata)"})
    policy: PolicyConfig = dataclasses.field(default_factory=lambda: PolicyConfig("ucb"),
                                             metadata={"prefix": ""})
    counts: str | None = dataclasses.field(default=None, metadata={
        "help": "CSV/JSONL/Parquet of clicks and impressions per pair since the model's "
                "data ends, keyed by any candidate / context columns (e.g. target_id, "
                "publisher_id, clicks, impressions): evidence of posterior_ts / "
                "posterior_ucb"})
    top_n: int = dataclasses.field(default=10, metadata={"help": "list length"})
    mc_samples: int = _mc_field()
    seed: int = dataclasses.field(default=0, metadata={"help": "Thompson / epsilon randomness"})

    def __post_init__(self):
        check_mc_samples(self.mc_samples)
        if self.top_n < 1:
            raise ValueError(f"top_n must be >= 1. Received: top_n={self.top_n}")


@dataclasses.dataclass(frozen=True)
class OPEConfig:
    """`tfddn ope`: the off-policy value of a policy from logs with propensities."""

    logs: str = dataclasses.field(metadata={
        "help": "CSV/JSONL/Parquet of logged recommendations with a propensity column"})
    out: str | None = dataclasses.field(default=None, metadata={
        "help": "write the estimates to this .json file too"})
    run_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "a run of `tfddn train` / `tune`: the policy's model and DR's reward model"})
    policy: PolicyConfig = dataclasses.field(default_factory=lambda: PolicyConfig("greedy"),
                                             metadata={"prefix": ""})
    mc_samples: int = _mc_field()
    bootstrap: int = dataclasses.field(default=1000, metadata={
        "help": "bootstrap resamples of each interval"})
    confidence: float = dataclasses.field(default=0.95, metadata={
        "help": "interval level"})
    seed: int = dataclasses.field(default=0, metadata={"help": "policy and bootstrap seed"})
