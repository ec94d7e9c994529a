"""The `tfddn` command line.

Each subcommand only parses arguments into a typed config and calls the library:

    tfddn generate   --out_dir DIR [--rows N --regime d1|d2|rare --format csv|jsonl|parquet ...]
    tfddn preprocess --input 'DIR/logs.csv' --spec DIR/spec.json --output OUT [beam options]
    tfddn train      --data_dir OUT --run_dir RUN --kind reg|mdn|ddn|bbddn [...]
    tfddn tune       --data_dir OUT --run_dir RUN --kind ddn --max_trials 6 [...]
    tfddn evaluate   --run_dir RUN --data_dir OUT [--ground_truth DIR/ground_truth.parquet]
    tfddn export     --run_dir RUN --export_base saved_models/ddn
    tfddn explain    importance|sample|attention --run_dir RUN --data_dir OUT [...]
    tfddn serve      --model_name ddn --model_base_path saved_models/ddn --rest_api_port 8501
    tfddn query      --rest_url http://127.0.0.1:8501 --model_name ddn --instances '[...]'
    tfddn simulate   --out_dir DIR --model ddn --policy ucb --c 1.0 --days 14 [...]
    tfddn rank       --candidates C.parquet --contexts X.csv --run_dir RUN --out top.csv [...]

`tfddn preprocess` is `python -m beam.preprocess`: every flag it does not know is a
Beam pipeline option (`--runner`, `--direct_num_workers`, `--setup_file`, ...).
`tfddn serve` is `python -m serving.server` (TF Serving's flag names) and `tfddn query`
is `python -m serving.client`.

A user error (bad flag value, spec, input, existing output) prints one line,
`tfddn: error: ...`, and exits 2; add `--debug` to any command for the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from typing import Any, Sequence

__all__ = ["add_dataclass_arguments", "dataclass_from_args", "format_preprocess_summary",
           "main"]


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type,
                            exclude: Sequence[str] = ()) -> None:
    """Adds one `--field` option per field of the config dataclass `cls`.

    Help text comes from `field(metadata={"help": ...})`; fields without a default
    become required options; booleans take `--flag` / `--flag false`.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        kind = hints[field.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # `int | None`
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        kwargs: dict[str, Any] = {"help": field.metadata.get("help", "")}
        if field.metadata.get("choices"):
            kwargs["choices"] = field.metadata["choices"]
        if field.default is not dataclasses.MISSING:
            kwargs["default"] = field.default
            kwargs["help"] += f" (default: {field.default})"
        elif field.default_factory is not dataclasses.MISSING:
            kwargs["default"] = field.default_factory()
        else:
            kwargs["required"] = True
        if kind is bool:
            kwargs.update(type=_bool, nargs="?", const=True, metavar="BOOL")
        elif kind in (int, float, str):
            kwargs["type"] = kind
        parser.add_argument(f"--{field.name}", **kwargs)


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


def format_preprocess_summary(metadata: dict) -> str:
    """A human summary of a `metadata.json` written by `beam.preprocess`."""
    lines = [
        f"rows read        {metadata['rows_read']:>12,}",
        f"rows aggregated  {metadata['rows_aggregated']:>12,}",
        f"rows rejected    {metadata['rows_rejected']:>12,}",
    ]
    for reason, count in sorted(metadata.get("rejected_by_reason", {}).items()):
        lines.append(f"  {reason:<27}{count:>9,}")
    for split in ("train", "eval"):
        ex = metadata["examples"].get(split, 0)
        imp = metadata["impressions"].get(split, 0)
        clk = metadata["clicks"].get(split, 0)
        ctr = clk / imp if imp else float("nan")
        lines.append(f"{split:<6} examples {ex:>12,}   impressions {imp:>12,}   "
                     f"clicks {clk:>10,}   CTR {ctr:.4f}")
    lines.append(f"split: {metadata['split']}")
    sizes = ", ".join(f"{k}={v:,}" for k, v in metadata.get("vocabulary_sizes", {}).items())
    lines.append(f"vocabulary sizes (without OOV): {sizes}")
    return "\n".join(lines)


def _cmd_generate(args: argparse.Namespace) -> int:
    from tfddn.generate import GenerateConfig, generate

    result = generate(dataclass_from_args(GenerateConfig, args), progress=not args.quiet)
    print(result.summary() if hasattr(result, "summary") else result)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from tfddn.models.config import ModelConfig
    from tfddn.training import TrainConfig, train

    summary = train(dataclass_from_args(TrainConfig, args), dataclass_from_args(ModelConfig, args))
    print(f"trained {summary['model']['kind'].upper()} for {summary['epochs_run']} epochs, "
          f"best validation loss {summary['best_val_loss']:.5f}; run: {args.run_dir}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from tfddn.training import TrainConfig
    from tfddn.tuning import TuneConfig, tune

    summary = tune(dataclass_from_args(TrainConfig, args), dataclass_from_args(TuneConfig, args))
    print(f"best {summary['model']['kind'].upper()} configuration: {summary['model']}")
    print(f"retrained for {summary['epochs_run']} epochs, best validation loss "
          f"{summary['best_val_loss']:.5f}; run: {args.run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tfddn.predict import evaluate_run

    out_dir = args.out_dir or f"{args.run_dir.rstrip('/')}/evaluation"
    metrics = evaluate_run(args.run_dir, args.data_dir, out_dir, args.ground_truth, args.split)
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"{key:<{width}}  {value:.6g}")
        elif isinstance(value, (int, str)):
            print(f"{key:<{width}}  {value}")
    print(f"report: {out_dir}/summary.md, metrics.json and plots")
    for message in metrics.get("warnings") or ():
        print(f"warning: {message}", file=sys.stderr)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from serving.export import ExportConfig, export_run

    version_dir = export_run(ExportConfig(
        run_dir=args.run_dir, export_base=args.export_base, version=args.version,
        mc_samples=args.mc_samples, check_rows=args.check_rows, spec_path=args.spec))
    print(f"exported {args.run_dir} -> {version_dir} (signatures serving_default, mc_dropout, "
          "ucb, posterior, explain, regress; checked against the Keras model)")
    return 0


def _rows(text: str) -> list[int]:
    try:
        rows = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected row numbers like 0,1,2, got {text!r}")
    if not rows or min(rows) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative row numbers, got {text!r}")
    return rows


def _cmd_explain(args: argparse.Namespace) -> int:
    from tfddn.explain import report

    if args.explain == "importance":
        summary = report.importance_run(args.run_dir, args.data_dir, args.out_dir, args.split,
                                        args.max_rows, args.mc_samples, args.method,
                                        args.batch_size, args.features)
        with open(summary["paths"]["md"]) as fh:
            print(fh.read())
        print(f"report: {', '.join(summary['paths'].values())}")
    elif args.explain == "sample":
        result = report.sample_run(args.run_dir, args.data_dir, args.rows, args.out_dir,
                                   args.split, args.method, args.mc_samples)
        with open(result["paths"]["md"]) as fh:
            print(fh.read())
        print(f"report: {', '.join(result['paths'].values())}")
    else:
        result = report.attention_run(args.run_dir, args.data_dir, args.rows, args.out_dir,
                                      args.split)
        if result is None:
            print(f"the model of {args.run_dir} has no attention layer (train it with "
                  "attention enabled in its ModelConfig); nothing to draw")
            return 0
        for name, weights in result["weights"].items():
            print(f"{name}: weights {list(weights.shape)}")
        print(f"maps: {', '.join(result['paths'].values())}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from tfddn.simulation.plots import plot_days
    from tfddn.simulation.simulator import SimulationConfig, simulate
    from tfddn.simulation.world import WorldConfig

    result = simulate(dataclass_from_args(SimulationConfig, args),
                      dataclass_from_args(WorldConfig, args), progress=not args.quiet)
    plot = plot_days([result], os.path.join(args.out_dir, "days.png"))
    s = result["summary"]
    print(f"{result['label']}: RPM {s['rpm']:.2f}  expected RPM {s['expected_rpm']:.2f}  "
          f"realised-CTR RPM {s['realised_ctr_rpm']:.2f}  CTR {s['ctr']:.4f}  regret/1000 "
          f"{s['regret_per_1000']:.2f}  targets throughput {s['throughput']}  "
          f"({result['seconds']['total']} s)")
    print(f"wrote {os.path.join(args.out_dir, 'result.json')} and {plot}")
    return 0


def _write_table(frame, path: str, spec) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        frame.to_parquet(path)
    elif ext in (".jsonl", ".json"):
        frame.to_json(path, orient="records", lines=True)
    elif ext == ".csv":
        frame = frame.copy()
        for f in spec.features:  # lists -> the spec's separator, as the logs write them
            if f.is_sequence and f.name in frame:
                frame[f.name] = [f.raw(v) for v in frame[f.name]]
        frame.to_csv(path, index=False)
    else:
        raise SystemExit(f"tfddn rank: --out must end in .csv, .jsonl or .parquet. "
                         f"Received: {path}")


def _cmd_rank(args: argparse.Namespace) -> int:
    import numpy as np

    from tfddn import candidation, data
    from tfddn.policy import PolicyConfig, make_policy
    from tfddn.spec import load_spec

    if bool(args.run_dir) == bool(args.rest_url or args.grpc_target):
        raise SystemExit("tfddn rank: give either --run_dir (a loaded model) or "
                         "--rest_url / --grpc_target (a served model)")
    if args.run_dir:
        source = candidation.LoadedModel(args.run_dir, args.mc_samples)
        spec = (load_spec(args.spec) if args.spec else data.load_data_spec(
            source.data_dir))
    else:
        from serving.client import ServingClient

        if not args.spec:
            raise SystemExit("tfddn rank: a served model needs --spec (the data's spec.json)")
        spec = load_spec(args.spec)
        client = ServingClient(args.rest_url, args.grpc_target, model_name=args.model_name)
        source = candidation.ServedModel(
            client, "grpc" if args.grpc_target else "rest",
            mixture=args.policy in ("thompson", "posterior_ts", "posterior_ucb"))
    policy = make_policy(PolicyConfig(name=args.policy, c=args.c, stddev=args.stddev,
                                      epsilon=args.epsilon, quantile=args.quantile))
    counts = None
    if args.counts:
        from tfddn.posterior import PairCounts

        try:
            counts = PairCounts.read(args.counts)
        except ValueError as error:
            raise SystemExit(f"tfddn rank: {error}") from None
    ranked = candidation.rank(source, spec, candidation.read_table(args.candidates),
                              candidation.read_table(args.contexts), policy, args.top_n,
                              np.random.default_rng(args.seed), counts=counts)
    _write_table(ranked, args.out, spec)
    contexts = ranked["context"].nunique()
    print(f"wrote the top {ranked['rank'].max()} of every context ({contexts} contexts, "
          f"{policy}) to {args.out}")
    return 0


def _add_rank_parser(sub) -> None:
    from tfddn.policy import POLICY_NAMES, STDDEV_KINDS

    p = sub.add_parser(
        "rank", help="candidation: the top-N targets of every context from a model",
        description="Scores every candidate target in every context with a loaded run or "
                    "a served model (mc_dropout signature) and writes each context's top N "
                    "by a policy, ranked by expected revenue (score x cpc).")
    p.add_argument("--candidates", required=True,
                   help="CSV/JSONL/Parquet of target features (+ optional cpc column)")
    p.add_argument("--contexts", required=True, help="CSV/JSONL/Parquet of context features")
    p.add_argument("--out", required=True, help="output .csv, .jsonl or .parquet")
    p.add_argument("--run_dir", default=None, help="a run of `tfddn train` / `tune`")
    p.add_argument("--rest_url", default=None, help="a served model's REST base URL")
    p.add_argument("--grpc_target", default=None, help="a served model's gRPC host:port")
    p.add_argument("--model_name", default="ddn", help="served model name (default: ddn)")
    p.add_argument("--spec", default=None,
                   help="feature spec (default for --run_dir: the run's data spec)")
    p.add_argument("--policy", default="ucb", choices=POLICY_NAMES)
    p.add_argument("--c", type=float, default=1.0, help="UCB weight (default: 1)")
    p.add_argument("--stddev", default="total", choices=STDDEV_KINDS,
                   help="UCB stddev (default: total)")
    p.add_argument("--epsilon", type=float, default=0.1)
    p.add_argument("--quantile", type=float, default=None,
                   help="posterior_ucb quantile level in (0, 1) (default: Bayes-UCB's 1 - 1/t)")
    p.add_argument("--counts", default=None,
                   help="CSV/JSONL/Parquet of clicks and impressions per pair since the "
                        "model's data ends, keyed by any candidate / context columns (e.g. "
                        "target_id, publisher_id, clicks, impressions): evidence of "
                        "posterior_ts / posterior_ucb")
    p.add_argument("--top_n", type=int, default=10, help="list length (default: 10)")
    p.add_argument("--mc_samples", type=int, default=16,
                   help="MC-dropout passes of a loaded model (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="Thompson / epsilon randomness")


def _add_explain_parser(sub) -> None:
    explain = sub.add_parser(
        "explain", help="feature importance, per-row saliency and attention of a run",
        description="Debugging with uncertainty (Naor et al.): how the data / model "
                    "uncertainty and the mean change when a categorical feature is "
                    "marginalised out (OOV or mean embedding), and attention maps.")
    commands = explain.add_subparsers(dest="explain", required=True, metavar="WHAT")
    helps = {
        "importance": "per-feature distribution of the uncertainty ratio with the feature "
                      "marginalised (OOV by default) over a split (Zeldes et al. 2018, "
                      "Fig. 4)",
        "sample": "ranked saliency table and heat map of chosen rows (Naor et al.)",
        "attention": "attention maps of chosen rows (models with attention)",
    }
    for name, text in helps.items():
        p = commands.add_parser(name, help=text, description=text)
        p.add_argument("--run_dir", required=True, help="a run of `tfddn train` / `tune`")
        p.add_argument("--data_dir", required=True, help="output of `tfddn preprocess`")
        p.add_argument("--split", default="eval", choices=("train", "eval"))
        p.add_argument("--out_dir", default=None, help="default: RUN_DIR/explain")
        if name == "importance":
            p.add_argument("--max_rows", type=int, default=None,
                           help="first rows of the split only (default: all)")
            p.add_argument("--method", default="oov", choices=("oov", "mean"))
            p.add_argument("--features", type=lambda t: [n for n in t.split(",") if n],
                           default=None,
                           help="comma-separated features to marginalise, each one or a "
                                "+-joined group marginalised together, e.g. "
                                "'target_id+title,publisher_id+publisher_topic,device' "
                                "(default: every categorical, token and history feature)")
            p.add_argument("--mc_samples", type=int, default=16,
                           help="MC-dropout passes for the model-stddev ratio; 0 skips it")
            p.add_argument("--batch_size", type=int, default=256)
        else:
            p.add_argument("--rows", type=_rows, required=True,
                           help="row numbers of the split (file order), e.g. 0,1,2")
        if name == "sample":
            p.add_argument("--method", default="both", choices=("oov", "mean", "both"))
            p.add_argument("--mc_samples", type=int, default=64,
                           help="MC-dropout passes (default: 64)")


def _cmd_preprocess(argv: Sequence[str]) -> int:
    from beam import preprocess

    metadata = preprocess.run(list(argv))
    if metadata is not None:
        print(format_preprocess_summary(metadata))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from tfddn.generate import GenerateConfig

    parser = argparse.ArgumentParser(
        prog="tfddn",
        description="Deep Density Networks: uncertainty-aware CTR prediction.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gen = sub.add_parser(
        "generate", help="write synthetic marketplace logs with known ground truth",
        description="Writes logs, spec.json, ground_truth.parquet and world.json "
                    "for a seeded synthetic marketplace (Zeldes et al. 2018, Sec. 4).")
    add_dataclass_arguments(gen, GenerateConfig)
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    from tfddn.models.config import ModelConfig
    from tfddn.training import TrainConfig
    from tfddn.tuning import TuneConfig

    train_p = sub.add_parser(
        "train", help="fit a REG, MDN or DDN model on preprocessed TFRecords",
        description="Fits a model (Zeldes et al. 2018, Sec. 3) with early stopping on a "
                    "validation slice of the train split; resumable after a kill "
                    "(BackupAndRestore); TensorBoard logs in RUN_DIR/logs.")
    add_dataclass_arguments(train_p, TrainConfig)
    add_dataclass_arguments(train_p, ModelConfig)
    train_p.add_argument("--config", help="JSON/YAML file of these options (flags win)")
    tune_p = sub.add_parser(
        "tune", help="keras-tuner random search, then retrain the best configuration",
        description="Random search over embedding size, layers, units, dropout, mixture "
                    "components and learning rate for one model kind; resumable.")
    add_dataclass_arguments(tune_p, TrainConfig)
    add_dataclass_arguments(tune_p, TuneConfig)
    tune_p.add_argument("--config", help="JSON/YAML file of these options (flags win)")
    eval_p = sub.add_parser(
        "evaluate", help="MSE, NLL, interval coverage, PIT and plots of a trained run")
    eval_p.add_argument("--run_dir", required=True, help="a run of `tfddn train` / `tune`")
    eval_p.add_argument("--data_dir", required=True, help="output of `tfddn preprocess`")
    eval_p.add_argument("--ground_truth", default=None,
                        help="generator's ground_truth.parquet: adds mse_truth and the "
                             "correlation of predicted and true data stddev")
    eval_p.add_argument("--split", default="eval", choices=("train", "eval"))
    eval_p.add_argument("--out_dir", default=None, help="default: RUN_DIR/evaluation")
    export_p = sub.add_parser(
        "export", help="write a versioned SavedModel for TF Serving",
        description="Exports a run with keras.export.ExportArchive to EXPORT_BASE/<version>/ "
                    "(atomically), with the serving_default, mc_dropout and ucb signatures, "
                    "and checks the reloaded SavedModel against the Keras model.")
    export_p.add_argument("--run_dir", required=True, help="a run of `tfddn train` / `tune`")
    export_p.add_argument("--export_base", required=True,
                          help="the model's base path, e.g. saved_models/ddn")
    export_p.add_argument("--version", type=int, default=None,
                          help="version number (default: one more than the highest)")
    export_p.add_argument("--mc_samples", type=int, default=32,
                          help="MC-dropout passes T of mc_dropout and ucb (default: 32)")
    export_p.add_argument("--check_rows", type=int, default=256,
                          help="rows compared at export time (default: 256)")
    export_p.add_argument("--spec", default=None,
                          help="feature spec (default: the run's data_dir/spec.json)")
    _add_explain_parser(sub)
    from tfddn.simulation.simulator import SimulationConfig
    from tfddn.simulation.world import WorldConfig

    sim_p = sub.add_parser(
        "simulate", help="day-by-day marketplace simulation of a model and a policy",
        description="Serves a simulated marketplace with daily target turnover for DAYS "
                    "days: the policy picks a target per request from the model's predicted "
                    "distribution, clicks come from the true CTR, and each day's logs go "
                    "through the Beam pipeline and a warm-started retraining. Reports CTR, "
                    "RPM, regret and targets throughput (Zeldes et al. 2018, Sec. 5).")
    add_dataclass_arguments(sim_p, SimulationConfig)
    add_dataclass_arguments(sim_p, WorldConfig)
    sim_p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_rank_parser(sub)
    for name, text in (("serve", "local TF-Serving-compatible REST + gRPC server "
                                 "(see `tfddn serve --help`)"),
                       ("query", "query a TF Serving endpoint over REST or gRPC "
                                 "(see `tfddn query --help`)")):
        sub.add_parser(name, add_help=False, help=text)
    sub.add_parser(
        "preprocess", add_help=False,
        help="Beam pipeline: raw logs -> TFRecords (see `tfddn preprocess --help`)")
    return parser


def _expand_config_file(argv: list[str]) -> list[str]:
    """`train|tune --config FILE ...`: the file's options first, so command-line flags win.

    The file is JSON or YAML mapping option names (as the flags, without `--`) to values;
    lists become comma-separated values (e.g. `tower_units: [64, 32]`).
    """
    if "--config" not in argv:
        return argv
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise SystemExit("tfddn: --config needs a file name")
    path, rest = argv[i + 1], argv[1:i] + argv[i + 2:]
    with open(path) as fh:
        import yaml  # YAML is a superset of JSON

        values = yaml.safe_load(fh) or {}
    if not isinstance(values, dict):
        raise SystemExit(f"tfddn: {path} must hold a mapping of option -> value")
    tokens = []
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        tokens += [f"--{key}", str(value)]
    return [argv[0], *tokens, *rest]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; a user error prints one line and exits 2 (`--debug`: traceback)."""
    from tfddn.errors import run_main

    return run_main(_main, argv)


def _main(argv: list[str]) -> int:
    if argv and argv[0] in ("train", "tune"):
        argv = _expand_config_file(argv)
    # `preprocess` forwards everything to the Beam pipeline's own parser, so
    # `tfddn preprocess --help` shows the pipeline flags and Beam options pass through.
    if argv and argv[0] == "preprocess":
        return _cmd_preprocess(argv[1:])
    if argv and argv[0] == "serve":
        from serving import server

        return server.main(argv[1:])
    if argv and argv[0] == "query":
        from serving import client

        return client.query_main(argv[1:])
    args = build_parser().parse_args(argv)
    commands = {"generate": _cmd_generate, "train": _cmd_train, "tune": _cmd_tune,
                "evaluate": _cmd_evaluate, "export": _cmd_export, "explain": _cmd_explain,
                "simulate": _cmd_simulate, "rank": _cmd_rank}
    if args.command in commands:
        return commands[args.command](args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
