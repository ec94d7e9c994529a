"""The `tfddn` command line.

Each subcommand parses its flags into typed configs (`tfddn.configs`, through
`tfddn.flags`) and calls the library:

    tfddn generate   --out_dir DIR [--rows N --regime d1|d2|rare --format csv|jsonl|parquet ...]
    tfddn preprocess --input 'DIR/logs.csv' --spec DIR/spec.json --out_dir DATA [beam options]
    tfddn train      --data_dir DATA --run_dir RUN --kind reg|mdn|ddn|bbddn [...]
    tfddn tune       --data_dir DATA --run_dir RUN --kind ddn --max_trials 6 [...]
    tfddn evaluate   --run_dir RUN --data_dir DATA [--ground_truth DIR/ground_truth.parquet]
    tfddn predict    --run_dir RUN --out predictions.parquet [--split eval | --input rows.csv]
    tfddn export     --run_dir RUN --model_base_path saved_models/ddn
    tfddn explain    importance|sample|attention --run_dir RUN --data_dir DATA [...]
    tfddn serve      --model_name ddn --model_base_path saved_models/ddn --rest_api_port 8501
    tfddn query      --rest_url http://127.0.0.1:8501 --model_name ddn --instances '[...]'
    tfddn rank       --candidates C.parquet --contexts X.csv --run_dir RUN --out top.csv [...]
    tfddn ope        --logs logged.parquet --candidates C.parquet --run_dir RUN --policy ucb
    tfddn simulate   --out_dir DIR --kind ddn --policy ucb --c 1.0 --days 14 [...]
    tfddn demo       [--out_dir demo_out --rows 200000]

Every command takes `--config FILE` (JSON or YAML; flags given on the command line win),
`--verbose` (TensorFlow's, absl's and Beam's logs; also `TFDDN_VERBOSE=1`) and `--debug`
(the traceback of a user error, which otherwise prints one line, `tfddn: error: ...`,
exit status 2). The flag names are one vocabulary across commands (`tfddn.configs`);
older names still work, with a deprecation note. `--help` never imports TensorFlow.
Every flag `tfddn preprocess` does not know is a Beam pipeline option (`--runner`,
`--direct_num_workers`, `--setup_file`, ...); `tfddn serve` takes TF Serving's flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from typing import Sequence

from tfddn.cli.commands import format_preprocess_summary
from tfddn.console import VERBOSE_FLAG
from tfddn.flags import (add_config_file_argument, add_dataclass_arguments,
                         dataclass_from_args, merge_config_file)

__all__ = ["COMMANDS", "add_dataclass_arguments", "build_parser", "dataclass_from_args",
           "format_preprocess_summary", "main"]


@dataclasses.dataclass(frozen=True)
class _Command:
    help: str
    configs: tuple[str, ...] = ()  # "module:Class", imported only for this command
    run: str = ""  # "module:function(config(s), args) -> int"
    description: str = ""
    progress: bool = False  # adds --quiet (no progress bars)
    tensorflow: bool = True  # imports TensorFlow: start it quietly


_EXPLAIN = {
    "importance": _Command(
        "per-feature distribution of the uncertainty ratio with the feature marginalised "
        "(OOV by default) over a split (Zeldes et al. 2018, Fig. 4)",
        ("tfddn.configs:ImportanceConfig",), "tfddn.cli.commands:explain_importance"),
    "sample": _Command(
        "ranked saliency table and heat map of chosen rows (Naor et al.)",
        ("tfddn.configs:SampleConfig",), "tfddn.cli.commands:explain_sample"),
    "attention": _Command(
        "attention maps of chosen rows (models with attention)",
        ("tfddn.configs:AttentionConfig",), "tfddn.cli.commands:explain_attention"),
}

COMMANDS = {
    "generate": _Command(
        "write synthetic marketplace logs with known ground truth",
        ("tfddn.generate:GenerateConfig",), "tfddn.cli.commands:generate",
        "Writes logs, spec.json, ground_truth.parquet and world.json for a seeded "
        "synthetic marketplace (Zeldes et al. 2018, Sec. 4).", progress=True,
        tensorflow=False),
    "preprocess": _Command(
        "Beam pipeline: raw logs -> TFRecords, vocabularies, metadata, dead letter",
        ("beam.config:PreprocessConfig",), "tfddn.cli.commands:preprocess",
        tensorflow=False),  # the batched engine does not use it
    "train": _Command(
        "fit a REG, MDN, DDN or BBDDN model on preprocessed TFRecords",
        ("tfddn.configs:TrainConfig", "tfddn.models.config:ModelConfig"),
        "tfddn.cli.commands:train",
        "Fits a model (Zeldes et al. 2018, Sec. 3) with early stopping on a validation "
        "slice of the train split; resumable after a kill; TensorBoard logs in "
        "RUN_DIR/logs."),
    "tune": _Command(
        "keras-tuner random search, then retrain the best configuration",
        ("tfddn.configs:TrainConfig", "tfddn.configs:TuneConfig"), "tfddn.cli.commands:tune",
        "Random search over embedding size, layers, units, dropout, mixture components and "
        "learning rate for one model kind; resumable."),
    "evaluate": _Command(
        "MSE, NLL, calibration, interval coverage, PIT and plots of a trained run",
        ("tfddn.configs:EvaluateConfig",), "tfddn.cli.commands:evaluate"),
    "predict": _Command(
        "per-row predictions (mean, stddevs, quantiles) of a split or a raw file",
        ("tfddn.configs:PredictConfig",), "tfddn.cli.predict:run"),
    "export": _Command(
        "write a versioned SavedModel for TF Serving",
        ("tfddn.configs:ExportConfig",), "tfddn.cli.commands:export",
        "Exports a run with keras.export.ExportArchive to MODEL_BASE_PATH/<version>/ "
        "(atomically) with the serving_default, mc_dropout, ucb, posterior, explain, regress "
        "and spec signatures, and checks the reloaded SavedModel against the Keras model."),
    "explain": _Command(
        "feature importance, per-row saliency and attention of a run",
        description="Debugging with uncertainty (Naor et al.): how the data / model "
                    "uncertainty and the mean change when a categorical feature is "
                    "marginalised out (OOV or mean embedding), and attention maps."),
    "serve": _Command("local TF-Serving-compatible REST + gRPC server (TF Serving's flags)"),
    "query": _Command(
        "query a TF Serving endpoint over REST or gRPC, print a table",
        ("tfddn.configs:QueryConfig",), "serving.client:query",
        "Sends one predict (or metadata / status) request to a TF Serving compatible "
        "server and prints the outputs as a table.", tensorflow=False),
    "rank": _Command(
        "candidation: the top-N targets of every context by a policy, with scores",
        ("tfddn.configs:RankConfig",), "tfddn.cli.rank:run",
        "Scores the candidate targets of every context (all of them, or those sharing a "
        "key column) with a loaded run or a served model and writes each context's top N "
        "by a policy, ranked by expected revenue (score x cpc), with the score columns."),
    "ope": _Command(
        "off-policy value of a policy from logs with propensities (IPS, SNIPS, DR)",
        ("tfddn.configs:OPEConfig",), "tfddn.cli.ope:run"),
    "simulate": _Command(
        "day-by-day marketplace simulation of a model and a policy",
        ("tfddn.simulation.config:SimulationConfig", "tfddn.simulation.world:WorldConfig"),
        "tfddn.cli.commands:simulate",
        "Serves a simulated marketplace with daily target turnover for DAYS days: the "
        "policy picks targets per request from the model's predicted distribution, clicks "
        "come from the true CTR, and each day's logs go through the Beam pipeline and a "
        "warm-started retraining. Reports CTR, RPM, regret and targets throughput "
        "(Zeldes et al. 2018, Sec. 5).", progress=True),
    "demo": _Command(
        "the main job end to end on the bundled default marketplace (`make demo`)",
        ("tfddn.configs:DemoConfig",), "tfddn.cli.commands:demo"),
}
_DELEGATED = {"serve": "serving.server:main"}  # TF Serving's own flag names


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _add_command_arguments(parser: argparse.ArgumentParser, command: _Command) -> None:
    for path in command.configs:
        add_dataclass_arguments(parser, _load(path))
    add_config_file_argument(parser)
    if command.progress:
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(_command=command)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `tfddn` parser; only `command`'s flags are built (all of them when None)."""
    parser = argparse.ArgumentParser(
        prog="tfddn", description="Deep Density Networks: uncertainty-aware CTR prediction.",
        epilog="Every command also takes --config FILE, --verbose and --debug; "
               "`tfddn COMMAND --help` lists its flags.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, spec in COMMANDS.items():
        p = sub.add_parser(name, help=spec.help, description=spec.description or spec.help,
                           add_help=name not in _DELEGATED)
        if name == "explain":
            what = p.add_subparsers(dest="explain", required=True, metavar="WHAT")
            for sub_name, sub_spec in _EXPLAIN.items():
                q = what.add_parser(sub_name, help=sub_spec.help, description=sub_spec.help)
                if command in (None, "explain"):
                    _add_command_arguments(q, sub_spec)
        elif name not in _DELEGATED and command in (None, name):
            if name == "preprocess":
                from beam.config import EPILOG

                p.epilog = EPILOG
            _add_command_arguments(p, spec)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; a user error prints one line and exits 2 (`--debug`: traceback)."""
    from tfddn.errors import run_main

    return run_main(_main, argv)


def _main(argv: list[str]) -> int:
    from tfddn import console

    argv = _old_progress_flag(argv)
    verbose = console.verbose_requested(argv)
    argv = [a for a in argv if a != console.VERBOSE_FLAG]
    name = argv[0] if argv else None
    if name in _DELEGATED:
        if not verbose and not {"-h", "--help"} & set(argv):
            console.quiet_libraries()
        return _load(_DELEGATED[name])(argv[1:], prog=f"tfddn {name}")
    parser = build_parser(name if name in COMMANDS else None)
    if name == "preprocess":
        args, pipeline_args = parser.parse_known_args(argv)
    else:
        args, pipeline_args = parser.parse_args(argv), []
    command: _Command = args._command
    args.pipeline_args = pipeline_args
    merge_config_file(args, _subparser(parser, args))  # checked against its own flags
    configs = [dataclass_from_args(_load(path), args) for path in command.configs]
    grpc = bool(getattr(configs[0], "grpc_target", None))  # TF Serving's protos load TF
    if (command.tensorflow or grpc) and not verbose:
        console.quiet_libraries()
    return _load(command.run)(configs[0] if len(configs) == 1 else tuple(configs), args)


def _old_progress_flag(argv: list[str]) -> list[str]:
    """`tfddn train|tune --verbose N` (Keras' verbosity, before `--progress` had its name)."""
    if not argv or argv[0] not in ("train", "tune"):
        return argv
    argv = list(argv)
    for i, token in enumerate(argv[:-1]):
        if token == VERBOSE_FLAG and argv[i + 1] in ("0", "1", "2"):
            print(f"tfddn {argv[0]}: note: --verbose {argv[i + 1]} is deprecated; use "
                  f"--progress {argv[i + 1]} (--verbose alone keeps TensorFlow's logs)",
                  file=sys.stderr)
            argv[i] = "--progress"
    return argv


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The (sub)command's own parser, which `--config` values are checked against."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub = actions[0].choices[args.command]
    if getattr(args, "explain", None):
        inner = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        sub = inner[0].choices[args.explain]
    return sub
