"""`make demo`: the main job end to end on the bundled default marketplace.

Stages (each prints what it did):

1. generate a seeded synthetic marketplace (`tfddn generate`),
2. preprocess it with the Beam pipeline on the DirectRunner (`tfddn preprocess`),
3. read the TFRecords back with `tfddn.data` and check that every click and
   impression survived the trip,
4. keras-tuner search (a few trials) for a DDN, then retrain the best configuration,
5. evaluate it on the held-out last day against the generator's ground truth, and train
   a BBDDN (Beta mixture, exact Beta-Binomial likelihood) with the same architecture to
   print the two models' calibration side by side,
6. export it as a versioned SavedModel (serving_default, mc_dropout, ucb, explain),
7. serve it with the local TF-Serving-compatible server and query it over REST and gRPC:
   the top candidates of one publisher ranked by UCB, with the mean and every stddev,
8. explore: a few simulated days of a marketplace with turnover and budgets: posterior
   Thompson sampling (the BBDDN's distribution as the prior, each pair's own clicks as
   evidence, within the day) against BBDDN greedy and Vowpal Wabbit squarecb, each day's
   logs through Beam and a warm-started retraining (`tfddn simulate`; the full
   comparison is docs/experiments/posterior_exploration.py).
"""

from __future__ import annotations

import logging
import os
import sys
import time

__all__ = ["main"]


def _stage(number: int, total: int, title: str) -> float:
    print(f"\n[{number}/{total}] {title}", flush=True)
    return time.perf_counter()


def _done(start: float) -> None:
    print(f"      done in {time.perf_counter() - start:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m tfddn.demo` (= `tfddn demo`): flags from `tfddn.configs.DemoConfig`."""
    from tfddn.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


def run(args) -> int:
    """Runs the demo's stages with the settings of a `tfddn.configs.DemoConfig`."""
    # Keep the demo's output to what it says; Beam and TF log at INFO by default.
    logging.getLogger().setLevel(logging.WARNING)

    from tfddn.cli.commands import format_preprocess_summary
    from tfddn.generate import GenerateConfig, generate

    total = 8 if args.sim_days > 0 else 7
    logs_dir = os.path.join(args.out_dir, "logs")
    data_dir = os.path.join(args.out_dir, "preprocessed")

    start = _stage(1, total, f"generate {args.rows:,} rows of marketplace logs -> {logs_dir}")
    result = generate(GenerateConfig(out_dir=logs_dir, rows=args.rows, seed=args.seed))
    print(result.summary())
    _done(start)

    start = _stage(2, total, f"Beam preprocessing (DirectRunner) -> {data_dir}")
    from beam import preprocess

    pipeline_args = []
    if args.direct_num_workers > 1:
        pipeline_args = ["--direct_num_workers", str(args.direct_num_workers),
                         "--direct_running_mode", "multi_processing"]
    metadata = preprocess.run_with(pipeline_args, input=result.logs_path,
                                   spec=result.spec_path, output=data_dir, overwrite=True)
    print(format_preprocess_summary(metadata))
    _done(start)

    start = _stage(3, total, "read the TFRecords back with tfddn.data")
    totals = _tfrecord_totals(data_dir)
    for split, (examples, clicks, impressions) in totals.items():
        ok = (examples == metadata["examples"][split]
              and clicks == metadata["clicks"][split]
              and impressions == metadata["impressions"][split])
        print(f"      {split:<10} {examples:>9,} examples {clicks:>9,} clicks "
              f"{impressions:>11,} impressions  {'matches metadata' if ok else 'MISMATCH'}")
        if not ok:
            print("demo: the TFRecords do not match metadata.json", file=sys.stderr)
            return 1
    _done(start)

    run_dir = os.path.join(args.out_dir, "runs", "ddn")
    start = _stage(4, total, f"tune a DDN ({args.trials} keras-tuner trials), retrain the best "
                             f"-> {run_dir}")
    from tfddn.training import TrainConfig
    from tfddn.tuning import TuneConfig, tune

    summary = tune(TrainConfig(data_dir=data_dir, run_dir=run_dir, epochs=args.epochs,
                               patience=2, seed=args.seed, verbose=2),
                   TuneConfig(kind="ddn", max_trials=args.trials, trial_epochs=2))
    print(f"      best configuration: {summary['model']}")
    _done(start)

    report_dir = os.path.join(run_dir, "evaluation")
    bbddn_dir = os.path.join(args.out_dir, "runs", "bbddn")
    start = _stage(5, total, f"evaluate on the last day vs ground truth -> {report_dir}; "
                             f"train a BBDDN of the same architecture -> {bbddn_dir}")
    _evaluate_both(args, summary, data_dir, run_dir, bbddn_dir, result.ground_truth_path)
    _done(start)

    start = _stage(6, total, f"export a SavedModel -> {args.model_base_path}/<version>")
    from serving.export import ExportConfig, export_run

    version_dir = export_run(ExportConfig(run_dir=run_dir, export_base=args.model_base_path))
    print(f"      {version_dir} (checked against the Keras model)")
    _done(start)

    start = _stage(7, total, "serve it (TF Serving REST + gRPC protocol) and rank candidates")
    _serve_and_rank(args, result, os.path.abspath(args.model_base_path))
    _done(start)

    if args.sim_days > 0:
        start = _stage(8, total, f"explore: {args.sim_days} simulated days, BBDDN posterior "
                                 f"Thompson vs BBDDN greedy vs VW -> {args.out_dir}/simulation")
        _simulate(args)
        _done(start)
    print(f"\nDemo finished. Data: {data_dir}  model: {run_dir}/model.keras  "
          f"report: {report_dir}/summary.md  SavedModel: {version_dir}")
    return 0


def _evaluate_both(args, summary, data_dir, run_dir, bbddn_dir, ground_truth) -> None:
    """Stage 5: the tuned DDN and a BBDDN of the same architecture, side by side."""
    import dataclasses

    from tfddn.models.config import ModelConfig
    from tfddn.predict import evaluate_run
    from tfddn.training import TrainConfig, train

    bbddn = dataclasses.replace(ModelConfig(**summary["model"]), kind="bbddn")
    train(TrainConfig(data_dir=data_dir, run_dir=bbddn_dir, epochs=args.epochs, patience=2,
                      seed=args.seed, verbose=2), bbddn)
    metrics = {name: evaluate_run(run, data_dir, os.path.join(run, "evaluation"), ground_truth)
               for name, run in (("DDN", run_dir), ("BBDDN", bbddn_dir))}
    print(f"      {'metric':<24}{'DDN':>10}{'BBDDN':>10}   meaning")
    for key, meaning in _SHOWN_METRICS:
        cells = "".join(f"{_number(m.get(key)):>10}" for m in metrics.values())
        print(f"      {key:<24}{cells}   {meaning}")
    for name, m in metrics.items():
        for warning in m.get("warnings") or ():
            print(f"      warning ({name}): {warning}")


def _number(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def _simulate(args) -> None:
    from beam import preprocess
    from tfddn.simulation.plots import plot_days
    from tfddn.simulation.simulator import SimulationConfig, simulate
    from tfddn.simulation.world import WorldConfig

    world = WorldConfig(publishers=20, pool_size=150, requests_per_day=args.sim_requests)
    results = []
    for policy in ("posterior_ts", "greedy", "vw-squarecb"):
        config = SimulationConfig(out_dir=os.path.join(args.out_dir, "simulation", policy),
                                  days=args.sim_days, seed=args.seed, policy=policy,
                                  model="bbddn", first_epochs=4)
        results.append(simulate(config, world, progress=True, preprocess=preprocess.run_with))
    print(f"      {'policy':<24}{'RPM':>8}{'exp. RPM':>10}{'real.-CTR RPM':>15}"
          f"{'regret/1000':>13}{'throughput':>12}{'new-target share':>18}")
    for r in results:
        s = r["summary"]
        print(f"      {r['label']:<24}{s['rpm']:>8.2f}{s['expected_rpm']:>10.2f}"
              f"{s['realised_ctr_rpm']:>15.2f}{s['regret_per_1000']:>13.2f}"
              f"{s['throughput']:>12}{s['new_target_share']:>18.1%}")
    print("      (RPM counts realised clicks; expected RPM the true expected CTR, without "
          "click noise; realised-CTR RPM the day's realised CTR of what was shown)")
    path = plot_days(results, os.path.join(args.out_dir, "simulation", "days.png"))
    print(f"      per-day RPM / throughput / regret: {path}")


def _candidates(logs_path: str, spec, limit: int = 200):
    """One publisher's context and up to `limit` candidate targets from the last day."""
    import pandas as pd

    logs = pd.read_csv(logs_path, keep_default_na=False)
    last_day = logs[logs[spec.timestamp] >= logs[spec.timestamp].max() - 86400]
    publisher = last_day["publisher_id"].value_counts().index[0]
    context = last_day[last_day["publisher_id"] == publisher].iloc[0]
    targets = last_day.drop_duplicates("target_id").head(limit)
    rows = []
    for _, target in targets.iterrows():
        row = {}
        for f in spec.features:
            value = (target if f.tower == "target" else context)[f.name]
            if f.is_sequence:  # as logged: the signatures split and pad in the graph
                value = f.raw(str(value))
            elif f.is_numeric:
                value = float(value)
            row[f.name] = value
        rows.append(row)
    return publisher, rows


def _serve_and_rank(args, result, export_base: str) -> None:
    import numpy as np

    from serving.client import ServingClient
    from serving.server import ServerHandle
    from serving.server_config import ServerConfig
    from tfddn.spec import load_spec

    spec = load_spec(result.spec_path)
    publisher, rows = _candidates(result.logs_path, spec)
    handle = ServerHandle.start(ServerConfig(model_name="ddn", model_base_path=export_base))
    try:
        print(f"      serving on {handle.rest_url} (REST) and {handle.grpc_target} (gRPC)")
        client = ServingClient(handle.rest_url, handle.grpc_target, model_name="ddn")
        rest = client.predict(rows, "serving_default", transport="rest")
        grpc = client.predict({k: [r[k] for r in rows] for k in rows[0]}, "serving_default",
                              transport="grpc")
        agree = np.allclose(rest["ctr_mean"], grpc["ctr_mean"], rtol=1e-6)
        print(f"      serving_default over REST (rows) and gRPC (columns) "
              f"{'agree' if agree else 'DISAGREE'} on {len(rows)} candidates")
        mc = client.predict(rows, "mc_dropout", transport="rest")
        ucb = client.predict([{**r, "c": args.c} for r in rows], "ucb", transport="grpc")
    finally:
        handle.stop()
    order = np.argsort(-ucb["score"])[:10]
    print(f"\n      top 10 of {len(rows)} candidates for {publisher} by UCB "
          f"(mean + {args.c:g} x total stddev; stddevs from MC dropout):")
    print(f"      {'target':<10}{'ucb':>8}{'mean':>8}{'data sd':>9}{'model sd':>9}{'total sd':>9}")
    for i in order:
        print(f"      {rows[i]['target_id']:<10}{ucb['score'][i]:>8.4f}{mc['ctr_mean'][i]:>8.4f}"
              f"{mc['data_stddev'][i]:>9.4f}{mc['model_stddev'][i]:>9.4f}"
              f"{mc['total_stddev'][i]:>9.4f}")
    if not agree:
        raise RuntimeError("REST and gRPC answers differ")


_SHOWN_METRICS = (
    ("mse", "MSE of the mean vs empirical CTR (paper's metric)"),
    ("mse_truth", "MSE of the mean vs the true CTR"),
    ("predicted_clicks_ratio", "predicted / observed clicks (1 = calibrated)"),
    ("ece", "impression-weighted calibration error over CTR bins"),
    ("nll", "-log P(clicks | x, n), exact Binomial (every kind)"),
    ("coverage_90_randomised", "share of rows inside the 90% predictive interval"),
    ("stddev_corr_truth", "corr(predicted, true data stddev)"),
)


def _tfrecord_totals(data_dir: str) -> dict[str, tuple[int, int, int]]:
    from tfddn import data

    spec = data.load_data_spec(data_dir)
    totals = {}
    for split in ("train", "validation", "eval"):
        ds = data.make_dataset(data.split_files(data_dir, split), spec,
                               data.InputConfig(batch_size=8192, shuffle=False))
        examples = clicks = impressions = 0
        for _, labels in ds:
            examples += int(labels["clicks"].shape[0])
            clicks += int(labels["clicks"].numpy().astype("int64").sum())
            impressions += int(labels["impressions"].numpy().astype("int64").sum())
        totals[split] = (examples, clicks, impressions)
    return totals


if __name__ == "__main__":
    sys.exit(main())
