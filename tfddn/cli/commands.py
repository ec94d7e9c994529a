"""What each `tfddn` command does with its parsed config: call the library, print a summary.

Each function takes the command's config(s) and the parsed namespace (for the flags
that are not settings, e.g. `--quiet`) and returns the exit status. They import the
library lazily, so building the parser (and `--help`) never imports TensorFlow.
"""

from __future__ import annotations

import os
import sys

__all__ = ["evaluate", "explain_attention", "explain_importance", "explain_sample", "export",
           "format_preprocess_summary", "generate", "preprocess", "simulate", "train", "tune"]


def format_preprocess_summary(metadata: dict) -> str:
    """A human summary of a `metadata.json` written by `beam.preprocess`."""
    lines = [
        f"rows read        {metadata['rows_read']:>12,}",
        f"rows aggregated  {metadata['rows_aggregated']:>12,}",
        f"rows rejected    {metadata['rows_rejected']:>12,}",
    ]
    for reason, count in sorted(metadata.get("rejected_by_reason", {}).items()):
        lines.append(f"  {reason:<27}{count:>9,}")
    for split in [s for s in ("train", "validation", "eval") if s in metadata["examples"]]:
        ex = metadata["examples"].get(split, 0)
        imp = metadata["impressions"].get(split, 0)
        clk = metadata["clicks"].get(split, 0)
        ctr = clk / imp if imp else float("nan")
        lines.append(f"{split:<10} examples {ex:>12,}   impressions {imp:>12,}   "
                     f"clicks {clk:>10,}   CTR {ctr:.4f}")
    lines.append(f"split: {metadata['split']}")
    sizes = ", ".join(f"{k}={v:,}" for k, v in metadata.get("vocabulary_sizes", {}).items())
    lines.append(f"vocabulary sizes (without OOV): {sizes}")
    return "\n".join(lines)


def generate(config, args) -> int:
    from tfddn.generate import generate as run

    result = run(config, progress=not args.quiet)
    print(result.summary() if hasattr(result, "summary") else result)
    return 0


def preprocess(config, args) -> int:
    from tfddn import console

    if console.verbose_requested(sys.argv):
        pass
    elif config.engine == "rows":  # its encoder imports TensorFlow
        console.quiet_libraries()
    else:
        console.quiet_logs()
    from beam import preprocess as pipeline

    metadata = pipeline.preprocess(config, args.pipeline_args)
    print(format_preprocess_summary(metadata))
    return 0


def train(configs, args) -> int:
    from tfddn.training import train as run

    train_config, model_config = configs
    summary = run(train_config, model_config)
    print(f"trained {summary['model']['kind'].upper()} for {summary['epochs_run']} epochs, "
          f"best validation loss {summary['best_val_loss']:.5f}; run: {train_config.run_dir}")
    return 0


def tune(configs, args) -> int:
    from tfddn.tuning import tune as run

    train_config, tune_config = configs
    summary = run(train_config, tune_config)
    if "tuner_id" in summary:  # a worker of a distributed search (docs/DISTRIBUTED.md)
        print(f"{summary['tuner_id']} ran trials {', '.join(summary['trials_run']) or 'none'}; "
              "the chief writes tuning.json and retrains the best configuration")
        return 0
    print(f"best {summary['model']['kind'].upper()} configuration: {summary['model']}")
    print(f"retrained for {summary['epochs_run']} epochs, best validation loss "
          f"{summary['best_val_loss']:.5f}; run: {train_config.run_dir}")
    return 0


def evaluate(config, args) -> int:
    from tfddn.predict import evaluate_run

    out_dir = config.out_dir or f"{config.run_dir.rstrip('/')}/evaluation"
    metrics = evaluate_run(config.run_dir, config.data_dir, out_dir, config.ground_truth,
                           config.split)
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


def export(config, args) -> int:
    from serving.export import export_run

    version_dir = export_run(config)
    print(f"exported {config.run_dir} -> {version_dir} (signatures serving_default, "
          "mc_dropout, ucb, posterior, explain, regress, spec; checked against the Keras "
          "model)")
    return 0


def _print_report(paths: dict) -> None:
    with open(paths["md"]) as fh:
        print(fh.read())
    print(f"report: {', '.join(paths.values())}")


def explain_importance(config, args) -> int:
    from tfddn.explain import report

    summary = report.importance_run(
        config.run_dir, config.data_dir, config.out_dir, config.split, config.max_rows,
        config.mc_samples, config.method, config.batch_size,
        list(config.features) if config.features else None)
    _print_report(summary["paths"])
    return 0


def explain_sample(config, args) -> int:
    from tfddn.explain import report

    result = report.sample_run(config.run_dir, config.data_dir, list(config.rows),
                               config.out_dir, config.split, config.method, config.mc_samples)
    _print_report(result["paths"])
    return 0


def explain_attention(config, args) -> int:
    from tfddn.explain import report

    result = report.attention_run(config.run_dir, config.data_dir, list(config.rows),
                                  config.out_dir, config.split)
    if result is None:
        print(f"the model of {config.run_dir} has no attention layer (train it with "
              "--history_attention or --interaction_attention); nothing to draw")
        return 0
    for name, weights in result["weights"].items():
        print(f"{name}: weights {list(weights.shape)}")
    print(f"maps: {', '.join(result['paths'].values())}")
    return 0


def simulate(configs, args) -> int:
    from beam.preprocess import preprocess as beam_preprocess
    from tfddn.simulation.plots import plot_days
    from tfddn.simulation.simulator import simulate as run

    config, world_config = configs
    result = run(config, world_config, progress=not args.quiet, preprocess=beam_preprocess)
    plot = plot_days([result], os.path.join(config.out_dir, "days.png"))
    s = result["summary"]
    print(f"{result['label']}: RPM {s['rpm']:.2f}  expected RPM {s['expected_rpm']:.2f}  "
          f"realised-CTR RPM {s['realised_ctr_rpm']:.2f}  CTR {s['ctr']:.4f}  regret/1000 "
          f"{s['regret_per_1000']:.2f}  targets throughput {s['throughput']}  "
          f"({result['seconds']['total']} s)")
    print(f"wrote {os.path.join(config.out_dir, 'result.json')} and {plot}")
    return 0


def demo(config, args) -> int:
    from tfddn.demo import run

    return run(config)
