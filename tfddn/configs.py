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

__all__ = ["AttentionConfig", "DemoConfig", "EvaluateConfig", "ExportConfig",
           "ImportanceConfig", "MC_SAMPLES", "MIN_MC_SAMPLES", "OPEConfig", "PredictConfig",
           "QueryConfig", "RankConfig", "SampleConfig", "TrainConfig", "TuneConfig", "check_mc_samples",
           "check_one_model"]

MC_SAMPLES = 32
"""MC-dropout passes T of every command that measures model uncertainty."""
MIN_MC_SAMPLES = 2
"""The fewest passes with a model stddev (one pass has none)."""


def check_mc_samples(value: int, allow_zero: bool = False) -> None:
    if not (value >= MIN_MC_SAMPLES or (allow_zero and value == 0)):
        zero = " (or 0 to skip the model stddev)" if allow_zero else ""
        raise ValueError(f"mc_samples must be >= {MIN_MC_SAMPLES}{zero}. "
                         f"Received: mc_samples={value}")


def check_one_model(config) -> None:
    """A loaded run or a served model, exactly one."""
    if bool(config.run_dir) == bool(config.rest_url or config.grpc_target):
        raise ValueError(f"give either --run_dir (a loaded model) or --rest_url / "
                         f"--grpc_target (a served model). Received: "
                         f"run_dir={config.run_dir!r}, rest_url={config.rest_url!r}, "
                         f"grpc_target={config.grpc_target!r}")


def _mc_field(help_text: str = "MC-dropout passes T (model stddev, Thompson)"):
    return dataclasses.field(default=MC_SAMPLES, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to fit a model (the architecture is a `ModelConfig`)."""

    data_dir: str = dataclasses.field(metadata={"help": "output of `tfddn preprocess`"})
    run_dir: str = dataclasses.field(metadata={"help": "where the model, logs and config go"})
    epochs: int = dataclasses.field(default=20, metadata={"help": "maximum epochs"})
    batch_size: int = dataclasses.field(default=1024, metadata={
        "help": "examples per step; with several workers (TF_CONFIG), of all of them together"})
    patience: int = dataclasses.field(default=3, metadata={
        "help": "early stopping: epochs without validation-loss improvement"})
    validation_fraction: float = dataclasses.field(default=0.1, metadata={
        "help": "share of the train split held out for early stopping / tuning, for data "
                "preprocessed without a validation split (otherwise the preprocessing's "
                "--validation_fraction decided)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of weights, dropout, order"})
    mixed_precision: bool = dataclasses.field(default=False, metadata={
        "help": "compute in float16 (GPU), keep variables and the loss in float32"})
    verbose: int = dataclasses.field(default=1, metadata={
        "help": "0 silent, 1 progress bar, 2 one line per epoch", "flag": "progress",
        "choices": (0, 1, 2)})
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
        "help": "split to evaluate", "choices": ("train", "validation", "eval")})
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
        "help": "output of `tfddn preprocess` whose --split is predicted and whose spec "
                "reads --input (default: the run's data_dir)"})
    split: str = dataclasses.field(default="eval", metadata={
        "help": "split of --data_dir to predict", "choices": ("train", "validation", "eval")})
    input: str | None = dataclasses.field(default=None, metadata={
        "help": "a raw CSV/JSONL/Parquet file of rows as logged to predict instead of a "
                "split"})
    mc_samples: int = _mc_field()
    seed: int = dataclasses.field(default=0, metadata={
        "help": "MC-dropout seed (the same seed, batch size and row order give the same "
                "numbers)"})
    quantiles: tuple[float, ...] = dataclasses.field(default=(0.05, 0.5, 0.95), metadata={
        "help": "comma-separated levels in (0, 1) of the predicted CTR distribution's "
                "quantiles, written as columns q05, q50, ... (REG: none)"})
    batch_size: int = dataclasses.field(default=2048, metadata={
        "help": "rows per model call (memory is flat in the number of rows)"})
    keep_columns: tuple[str, ...] = dataclasses.field(default=(), metadata={
        "help": "comma-separated columns of --input copied to the output, e.g. an id to "
                "join on"})

    def __post_init__(self):
        check_mc_samples(self.mc_samples)
        for name in ("quantiles", "keep_columns"):  # one value given alone
            if isinstance(getattr(self, name), (str, int, float)):
                object.__setattr__(self, name, (getattr(self, name),))
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        if not all(0.0 < q < 1.0 for q in self.quantiles) or \
                len(set(self.quantiles)) != len(self.quantiles):
            raise ValueError(f"quantiles must be distinct levels in (0, 1). "
                             f"Received: quantiles={self.quantiles}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or \
                self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1. "
                             f"Received: batch_size={self.batch_size!r}")
        if self.keep_columns and not self.input:
            raise ValueError(f"keep_columns copies columns of --input; a split has only "
                             f"its features and labels. Received: "
                             f"keep_columns={self.keep_columns}")


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
        "help": "feature spec (default: the run's data spec, or the served model's own, "
                "from its `spec` signature)"})
    policy: PolicyConfig = dataclasses.field(default_factory=lambda: PolicyConfig("ucb"),
                                             metadata={"prefix": ""})
    counts: str | None = dataclasses.field(default=None, metadata={
        "help": "CSV/JSONL/Parquet of clicks and impressions per pair since the model's "
                "data ends, keyed by any candidate / context columns (e.g. target_id, "
                "publisher_id, clicks, impressions): evidence of posterior_ts / "
                "posterior_ucb"})
    context_key: tuple[str, ...] = dataclasses.field(default=(), metadata={
        "help": "comma-separated columns of both --contexts and --candidates that pick each "
                "context's candidate set, e.g. site_id or campaign_id (default: every "
                "candidate in every context)"})
    pairs: str | None = dataclasses.field(default=None, metadata={
        "help": "CSV/JSONL/Parquet of (context, candidate) pairs, columns --context_id and "
                "--candidate_id: each context is ranked against its listed candidates only"})
    context_id: str | None = dataclasses.field(default=None, metadata={
        "help": "column of --contexts and --pairs naming each context (default: its row "
                "number, the `context` column of --pairs and of the output)"})
    candidate_id: str = dataclasses.field(default="target_id", metadata={
        "help": "column of --candidates and --pairs naming each candidate"})
    top_n: int = dataclasses.field(default=10, metadata={"help": "list length"})
    mc_samples: int = _mc_field()
    seed: int = dataclasses.field(default=0, metadata={"help": "Thompson / epsilon randomness"})

    def __post_init__(self):
        check_mc_samples(self.mc_samples)
        if self.top_n < 1:
            raise ValueError(f"top_n must be >= 1. Received: top_n={self.top_n}")
        check_one_model(self)
        if isinstance(self.context_key, str):  # one column given as a string
            object.__setattr__(self, "context_key", (self.context_key,))
        if self.context_key and self.pairs:
            raise ValueError(f"give --context_key or --pairs, not both. Received: "
                             f"context_key={self.context_key}, pairs={self.pairs!r}")


@dataclasses.dataclass(frozen=True)
class OPEConfig:
    """`tfddn ope`: the off-policy value of a policy from logs with propensities."""

    logs: str = dataclasses.field(metadata={
        "help": "CSV/JSONL/Parquet of logged recommendations, one row each: the context "
                "features, the shown target's features, the propensity, clicks and "
                "optionally impressions (docs/OPE.md)"})
    candidates: str = dataclasses.field(metadata={
        "help": "CSV/JSONL/Parquet of the targets a policy may show (target features, "
                "optional cpc, and the --context_key columns)"})
    out: str | None = dataclasses.field(default=None, metadata={
        "help": "write the estimates to this .json file too"})
    context_key: tuple[str, ...] = dataclasses.field(default=(), metadata={
        "help": "columns of both --logs and --candidates that pick each context's candidate "
                "set, e.g. publisher_id (default: every candidate in every context)"})
    target_key: tuple[str, ...] = dataclasses.field(default=(), metadata={
        "help": "columns naming the shown target among its context's candidates, e.g. "
                "target_id (default: all the spec's target features)"})
    propensity_column: str = dataclasses.field(default="propensity", metadata={
        "help": "column of the logging policy's probability of the shown target, in (0, 1]"})
    spec: str | None = dataclasses.field(default=None, metadata={
        "help": "feature spec (default: the run's data spec)"})
    run_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "a run of `tfddn train` / `tune`: the policy's model and DR's reward model"})
    rest_url: str | None = dataclasses.field(default=None, metadata={
        "help": "a served model's REST base URL (instead of --run_dir)"})
    grpc_target: str | None = dataclasses.field(default=None, metadata={
        "help": "a served model's gRPC host:port (instead of --run_dir)"})
    model_name: str = dataclasses.field(default="ddn", metadata={"help": "served model name"})
    policy: PolicyConfig = dataclasses.field(default_factory=lambda: PolicyConfig("greedy"),
                                             metadata={"prefix": ""})
    mc_samples: int = _mc_field()
    bootstrap: int = dataclasses.field(default=1000, metadata={
        "help": "bootstrap resamples of each interval"})
    confidence: float = dataclasses.field(default=0.95, metadata={
        "help": "interval level"})
    policy_samples: int = dataclasses.field(default=1000, metadata={
        "help": "draws per context that estimate a sampling policy's (thompson, "
                "posterior_ts) action probabilities"})
    seed: int = dataclasses.field(default=0, metadata={
        "help": "seed of the MC-dropout masks, the policy's draws and the bootstrap"})

    def __post_init__(self):
        check_mc_samples(self.mc_samples)
        for name in ("bootstrap", "policy_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1. Received: {name}={value!r}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1). "
                             f"Received: confidence={self.confidence!r}")
        for name in ("context_key", "target_key"):
            if isinstance(getattr(self, name), str):  # one column given as a string
                object.__setattr__(self, name, (getattr(self, name),))


@dataclasses.dataclass(frozen=True)
class _ExplainConfig:
    run_dir: str = dataclasses.field(metadata={"help": "a run of `tfddn train` / `tune`"})
    data_dir: str = dataclasses.field(metadata={"help": "output of `tfddn preprocess`"})
    split: str = dataclasses.field(default="eval", metadata={
        "help": "split whose rows are explained", "choices": ("train", "validation", "eval")})
    out_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "where the report goes (default: RUN_DIR/explain)"})


def _check_rows(rows) -> None:
    if not rows or min(rows) < 0:
        raise ValueError(f"--rows needs non-negative row numbers of the split, e.g. 0,1,2. "
                         f"Received: rows={list(rows)}")


@dataclasses.dataclass(frozen=True)
class ImportanceConfig(_ExplainConfig):
    """`tfddn explain importance`: per-feature uncertainty ratios over a split."""

    max_rows: int | None = dataclasses.field(default=None, metadata={
        "help": "first rows of the split only (default: all)"})
    method: str = dataclasses.field(default="oov", metadata={
        "help": "how a feature is marginalised", "choices": ("oov", "mean")})
    features: tuple[str, ...] | None = dataclasses.field(default=None, metadata={
        "help": "comma-separated features to marginalise, each one or a +-joined group "
                "marginalised together, e.g. 'target_id+title,publisher_id,device' "
                "(default: every categorical, token and history feature)"})
    mc_samples: int = _mc_field("MC-dropout passes for the model-stddev ratio; 0 skips it")
    batch_size: int = dataclasses.field(default=256, metadata={"help": "rows per batch"})

    def __post_init__(self):
        check_mc_samples(self.mc_samples, allow_zero=True)


@dataclasses.dataclass(frozen=True)
class SampleConfig(_ExplainConfig):
    """`tfddn explain sample`: ranked saliency table and heat map of chosen rows."""

    rows: tuple[int, ...] = dataclasses.field(default=(), metadata={
        "help": "row numbers of the split (file order), e.g. 0,1,2 (required)"})
    method: str = dataclasses.field(default="both", metadata={
        "help": "how a feature is marginalised", "choices": ("oov", "mean", "both")})
    mc_samples: int = _mc_field()

    def __post_init__(self):
        _check_rows(self.rows)
        check_mc_samples(self.mc_samples)


@dataclasses.dataclass(frozen=True)
class AttentionConfig(_ExplainConfig):
    """`tfddn explain attention`: attention maps of chosen rows."""

    rows: tuple[int, ...] = dataclasses.field(default=(), metadata={
        "help": "row numbers of the split (file order), e.g. 0,1,2 (required)"})

    def __post_init__(self):
        _check_rows(self.rows)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """`tfddn demo` (`make demo`): the main job end to end on the bundled marketplace."""

    out_dir: str = dataclasses.field(default="demo_out", metadata={
        "help": "working directory", "aliases": ("out",)})
    rows: int = dataclasses.field(default=200_000, metadata={
        "help": "aggregated log rows to generate (the paper's scale is --rows 10000000)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "generator and model seed"})
    trials: int = dataclasses.field(default=3, metadata={"help": "keras-tuner trials"})
    epochs: int = dataclasses.field(default=6, metadata={
        "help": "max epochs of the final DDN"})
    model_base_path: str = dataclasses.field(default="saved_models/ddn", metadata={
        "help": "SavedModel base path", "aliases": ("export_base",)})
    c: float = dataclasses.field(default=1.0, metadata={
        "help": "UCB exploration weight c in mean + c * stddev", "aliases": ("ucb_c",)})
    sim_days: int = dataclasses.field(default=3, metadata={
        "help": "simulated days of stage 8 after the random day 0 (0 skips the stage)"})
    sim_requests: int = dataclasses.field(default=6000, metadata={
        "help": "requests per simulated day"})
    direct_num_workers: int = dataclasses.field(default=1, metadata={
        "help": "DirectRunner worker processes for the Beam stage (1: in-process; 2+ runs "
                "multi_processing, faster on large inputs)"})


@dataclasses.dataclass(frozen=True)
class QueryConfig:
    """`tfddn query`: one request to a TF Serving endpoint, printed as a table."""

    model_name: str = dataclasses.field(metadata={"help": "served model name"})
    rest_url: str | None = dataclasses.field(default=None, metadata={
        "help": "a served model's REST base URL, e.g. http://localhost:8501"})
    grpc_target: str | None = dataclasses.field(default=None, metadata={
        "help": "a served model's gRPC host:port, e.g. localhost:8500"})
    transport: str | None = dataclasses.field(default=None, metadata={
        "help": "default: rest when --rest_url is given, else grpc",
        "choices": ("rest", "grpc")})
    version: int | None = dataclasses.field(default=None, metadata={
        "help": "a model version (default: the newest)"})
    label: str | None = dataclasses.field(default=None, metadata={
        "help": "a version label, e.g. stable (instead of --version)"})
    signature_name: str | None = dataclasses.field(default=None, metadata={
        "help": "default: the input file's signature_name, else serving_default"})
    instances: str | None = dataclasses.field(default=None, metadata={
        "help": "row format, inline JSON list"})
    inputs: str | None = dataclasses.field(default=None, metadata={
        "help": "columnar format, inline JSON object or value"})
    input_file: str | None = dataclasses.field(default=None, metadata={
        "help": "a JSON request body with 'instances' or 'inputs'"})
    metadata: bool = dataclasses.field(default=False, metadata={
        "help": "print the signatures instead"})
    status: bool = dataclasses.field(default=False, metadata={
        "help": "print the version states instead"})

    def __post_init__(self):
        if not self.rest_url and not self.grpc_target:
            raise ValueError("give --rest_url or --grpc_target")
        if self.version is not None and self.label is not None:
            raise ValueError(f"give --version or --label, not both. Received: "
                             f"version={self.version}, label={self.label!r}")
        given = [name for name in ("instances", "inputs", "input_file", "metadata", "status")
                 if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give one of --instances, --inputs, --input_file, --metadata or "
                             f"--status. Received: {given or 'none'}")
