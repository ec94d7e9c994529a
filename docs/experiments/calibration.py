"""REG / MDN / DDN / BBDDN on D1, D2 and rare over seeds: calibration and accuracy (issue #10).

For every regime and seed: generate logs, Beam-preprocess them, train each kind with the
default architecture (no tuning: the kinds differ only in the head and the loss), time
the fit steps, and evaluate on the held-out last day against the generator's ground
truth. Then print one markdown table per regime with the mean and a 95% t-interval over
the seeds of each metric.

    .venv/bin/python docs/experiments/calibration.py --out_dir runs/calibration --seeds 0,1,2
    .venv/bin/python docs/experiments/calibration.py --out_dir runs/calibration --seeds 0,1,2 \\
        --aggregate_only          # tabulate what has finished

Runs are resumable: a finished (regime, seed, kind) is not trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from scipy import stats

KINDS = ("reg", "mdn", "ddn", "bbddn")
REGIMES = {  # generate flags per regime
    "d1": ["--regime", "d1"],
    "d2": ["--regime", "d2"],
    "rare": ["--regime", "rare", "--log_level", "impressions"],
}
COLUMNS = ("mse_truth", "predicted_clicks_ratio", "truth_clicks_ratio", "ece", "nll",
           "coverage_90_randomised", "stddev_corr_truth", "mass_below_zero",
           "train_examples_per_s")


def _tfddn(*args) -> None:
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "tfddn"), *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _prepare(out: str, regime: str, seed: int, rows: int) -> str:
    base = os.path.join(out, regime, f"seed{seed}")
    data = os.path.join(base, "data")
    if not os.path.exists(os.path.join(data, "metadata.json")):
        _tfddn("generate", "--out_dir", os.path.join(base, "logs"), "--rows", str(rows),
               "--seed", str(seed), "--quiet", *REGIMES[regime])
        _tfddn("preprocess", "--input", os.path.join(base, "logs", "logs.csv"), "--spec",
               os.path.join(base, "logs", "spec.json"), "--out_dir", data, "--overwrite")
    return base


def _train(base: str, kind: str, seed: int, epochs: int) -> None:
    """One run in a fresh process (clean TF state), timing the fit steps only."""
    run_dir = os.path.join(base, kind)
    if os.path.exists(os.path.join(run_dir, "timing.json")):
        return
    code = f"""
import json, time, keras
from tfddn.training import TrainConfig, train
from tfddn.models.config import ModelConfig

class Timer(keras.callbacks.Callback):
    seconds, examples = 0.0, 0
    def on_train_batch_begin(self, batch, logs=None):
        self.t = time.perf_counter()
    def on_train_batch_end(self, batch, logs=None):
        self.seconds += time.perf_counter() - self.t
        self.examples += 1024

timer = Timer()
summary = train(TrainConfig(data_dir={os.path.join(base, "data")!r}, run_dir={run_dir!r},
                            epochs={epochs}, patience=2, seed={seed}, verbose=0),
                ModelConfig(kind={kind!r}), callbacks=(timer,))
json.dump({{"train_examples_per_s": timer.examples / timer.seconds,
           "epochs_run": summary["epochs_run"]}}, open({run_dir!r} + "/timing.json", "w"))
"""
    subprocess.run([sys.executable, "-c", code], check=True, stderr=subprocess.DEVNULL)


def _evaluate(base: str, kind: str) -> dict:
    run_dir = os.path.join(base, kind)
    metrics_path = os.path.join(run_dir, "evaluation", "metrics.json")
    if not os.path.exists(metrics_path):
        _tfddn("evaluate", "--run_dir", run_dir, "--data_dir", os.path.join(base, "data"),
               "--ground_truth", os.path.join(base, "logs", "ground_truth.parquet"))
    with open(metrics_path) as fh:
        metrics = json.load(fh)
    with open(os.path.join(run_dir, "timing.json")) as fh:
        metrics.update(json.load(fh))
    return metrics


def _cell(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.4g}"
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
    return f"{mean:.4g} ± {half:.2g}"


def table(results: dict, regime: str, seeds) -> str:
    header = ["kind", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind in KINDS:
        runs = [results.get((regime, seed, kind)) for seed in seeds]
        runs = [r for r in runs if r is not None]
        if runs:
            lines.append("| " + " | ".join([kind.upper(), *(_cell([r.get(c) for r in runs])
                                                             for c in COLUMNS)]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out_dir", default="runs/calibration")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--regimes", default="d1,d2,rare")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--rows", type=int, default=50_000,
                        help="log rows per regime (impressions for rare)")
    parser.add_argument("--rare_rows", type=int, default=150_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--aggregate_only", action="store_true")
    parser.add_argument("--skip_evaluate", action="store_true")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    regimes, kinds = args.regimes.split(","), args.kinds.split(",")
    results = {}
    for regime in regimes:
        for seed in seeds:
            rows = args.rare_rows if regime == "rare" else args.rows
            base = os.path.join(args.out_dir, regime, f"seed{seed}")
            if not args.aggregate_only:
                base = _prepare(args.out_dir, regime, seed, rows)
            for kind in kinds:
                start = time.time()
                if not args.aggregate_only:
                    _train(base, kind, seed, args.epochs)
                if args.skip_evaluate:
                    print(f"{regime} seed {seed} {kind}: trained ({time.time() - start:.0f} s)",
                          flush=True)
                    continue
                try:
                    results[regime, seed, kind] = _evaluate(base, kind)
                except (FileNotFoundError, subprocess.CalledProcessError) as error:
                    print(f"{regime} seed {seed} {kind}: not available ({error})", flush=True)
                    continue
                r = results[regime, seed, kind]
                print(f"{regime} seed {seed} {kind}: clicks ratio "
                      f"{r['predicted_clicks_ratio']:.3f}, mse_truth {r['mse_truth']:.3g} "
                      f"({time.time() - start:.0f} s)", flush=True)
    for regime in regimes:
        print(f"\n### {regime} ({len(seeds)} seeds: mean ± 95% t-interval)\n")
        print(table(results, regime, seeds))


if __name__ == "__main__":
    main()
