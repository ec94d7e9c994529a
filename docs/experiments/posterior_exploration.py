"""Issue #11: posterior exploration (model prior + the pair's own counts) against VW and
count-only Thompson sampling, on the day-by-day simulator, over seeds.

Runs `tfddn simulate` (one subprocess per simulation, `--jobs` at a time, resumable) for
the configurations below, the first group on `--seeds`, the second (the quantile sweep
and ablations) on `--sweep_seeds`, in priority order so that an interrupted run still
tabulates the main comparison. Every configuration of a seed shares the world, traffic
and random day 0, so differences are paired per seed; +- are 95% t-intervals over seeds
(`tfddn.simulation.metrics.mean_ci`). Writes OUT/posterior.md, OUT/posterior.json and
OUT/sweep.png (RPM-throughput over the exploration parameter, the paper's Table 3 shape).

Example (the run in docs/RESULTS.md):
    .venv/bin/python docs/experiments/posterior_exploration.py --out_dir runs/posterior \\
        --seeds 0,1,2,3,4 --sweep_seeds 0,1,2 --jobs 2
The larger world (1,000 live targets), a subset of the configurations:
    .venv/bin/python docs/experiments/posterior_exploration.py --out_dir runs/posterior_large \\
        --seeds 0,1,2 --sweep_seeds 0,1,2 --days 7 --only bbddn-pts,vw-squarecb,flat-ts \\
        --simulate_args="--pool_size 1000"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tfddn.simulation.metrics import mean_ci
from tfddn.simulation.plots import plot_tradeoff

MAIN = {  # every seed of --seeds
    "bbddn-pts": ["--kind", "bbddn", "--policy", "posterior_ts"],
    "vw-squarecb": ["--policy", "vw-squarecb"],
    "flat-ts": ["--policy", "posterior_ts", "--prior", "flat"],
    "global-ts": ["--policy", "posterior_ts", "--prior", "global"],
    "mdn-pts": ["--kind", "mdn", "--policy", "posterior_ts"],
}
SWEEP = {  # the seeds of --sweep_seeds, in this order of priority
    "bbddn-pucb": ["--kind", "bbddn", "--policy", "posterior_ucb"],
    "bbddn-greedy": ["--kind", "bbddn", "--policy", "greedy"],
    "bbddn-pucb-q0.95": ["--kind", "bbddn", "--policy", "posterior_ucb", "--quantile", "0.95"],
    "bbddn-pts-face": ["--kind", "bbddn", "--policy", "posterior_ts", "--prior_strength", "1",
                       "--history_decay", "0"],
    "ddn-pts": ["--kind", "ddn", "--policy", "posterior_ts"],
    "reg-greedy": ["--kind", "reg", "--policy", "greedy"],
    "bbddn-pucb-q0.8": ["--kind", "bbddn", "--policy", "posterior_ucb", "--quantile", "0.8"],
    "ddn-ucb1": ["--kind", "ddn", "--policy", "ucb", "--c", "1"],
    "vw-epsilon": ["--policy", "vw-epsilon", "--epsilon", "0.1"],
}
SWEEP_ORDER = ("bbddn-greedy", "bbddn-pucb-q0.8", "bbddn-pucb", "bbddn-pucb-q0.95", "bbddn-pts")
METRICS = ("rpm", "realised_ctr_rpm", "expected_rpm", "regret_per_1000", "throughput")
REFERENCES = ("vw-squarecb", "flat-ts", "global-ts", "mdn-pts", "bbddn-greedy",
              "bbddn-pts-face", "ddn-pts", "reg-greedy", "ddn-ucb1", "vw-epsilon")
PAIRS = ([("bbddn-pts", r) for r in REFERENCES] + [("bbddn-pucb", r) for r in REFERENCES]
         + [("bbddn-pucb-q0.95", "bbddn-greedy"), ("bbddn-pucb-q0.8", "bbddn-greedy")])
"""(candidate, reference) pairs whose paired differences are tabulated."""


def _run(name: str, seed: int, args) -> dict | None:
    out = os.path.join(args.out_dir, name, f"seed{seed}")
    path = os.path.join(out, "result.json")
    if os.path.exists(path):  # resumable
        with open(path) as fh:
            return json.load(fh)
    if args.aggregate_only:
        return None
    command = [sys.executable, "-m", "tfddn.cli", "simulate", "--out_dir", out,
               "--mc_samples", "16", "--seed",  # the passes the tables were measured with
               str(seed), "--days", str(args.days), "--quiet", *{**MAIN, **SWEEP}[name],
               *args.simulate_args.split()]
    os.makedirs(out, exist_ok=True)
    start = time.time()
    with open(os.path.join(out, "simulate.log"), "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    with open(path) as fh:
        result = json.load(fh)
    s = result["summary"]
    print(f"{name:>17} seed {seed}: expected RPM {s['expected_rpm']:.2f}  realised-CTR RPM "
          f"{s['realised_ctr_rpm']:.2f}  throughput {s['throughput']}  "
          f"({time.time() - start:.0f} s)", flush=True)
    return result


def _cell(values, digits=2) -> str:
    mean, half = mean_ci(values)
    return f"{mean:.{digits}f} +- {half:.{digits}f}" if np.isfinite(half) else f"{mean:.{digits}f}"


def _tables(results) -> list[str]:
    lines = ["| configuration | seeds | RPM | realised-CTR RPM | expected RPM | regret / 1000 "
             "| throughput | fitted strength / decay (last day) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, by_seed in results.items():
        if not by_seed:
            continue
        values = {k: [r["summary"][k] for r in by_seed.values()] for k in METRICS}
        last = [r["days"][-1] for r in by_seed.values()]
        fitted = ("-" if "prior_strength" not in last[0] else
                  ", ".join(f"{d['prior_strength']:g}/{d['history_decay']:g}" for d in last))
        label = next(iter(by_seed.values()))["label"]
        lines.append(f"| {label} | {len(by_seed)} | " + " | ".join(
            _cell(values[k]) for k in METRICS) + f" | {fitted} |")
    for candidate, reference in PAIRS:
        seeds = sorted(set(results.get(candidate, {})) & set(results.get(reference, {})))
        if seeds:
            lines += ["", f"Paired differences, {candidate} minus {reference} "
                      f"(seeds {seeds}; positive = {candidate} better):", ""]
            lines += ["| metric | mean +- 95% CI | per seed |", "|---|---:|---|"]
            for key in ("realised_ctr_rpm", "expected_rpm", "rpm", "regret_per_1000",
                        "throughput"):
                sign = -1.0 if key == "regret_per_1000" else 1.0
                diff = [sign * (results[candidate][s]["summary"][key]
                                - results[reference][s]["summary"][key]) for s in seeds]
                lines.append(f"| {key}{' (reduction)' if sign < 0 else ''} | {_cell(diff)} | "
                             + " / ".join(f"{d:+.2f}" for d in diff) + " |")
    return lines


def _fits(results) -> list[str]:
    """What empirical Bayes chose: prior strength, history decay and the predictive gain."""
    lines = ["", "Empirical-Bayes fits (every day's fit, all seeds): median strength, share of "
             "days by fitted decay, mean log-likelihood gain per pair over strength 1 (at the "
             "fitted decay):", "",
             "| configuration | fits | median strength | decay 0 / 0.25 / 0.5 / 0.75 / 1 | "
             "gain (nats / pair) |", "|---|---:|---:|---|---:|"]
    for by_seed in results.values():
        fits = [f for r in by_seed.values() for f in r.get("evidence_fits", {}).values()]
        if not fits:
            continue
        decays = [f["decay"] for f in fits]
        shares = " / ".join(f"{np.mean([d == x for d in decays]):.0%}"
                            for x in (0.0, 0.25, 0.5, 0.75, 1.0))
        gain = np.mean([f["log_likelihood"] - f["log_likelihood_at_strength_1"] for f in fits])
        lines.append(f"| {next(iter(by_seed.values()))['label']} | {len(fits)} | "
                     f"{np.median([f['strength'] for f in fits]):g} | {shares} | {gain:.4f} |")
    return lines


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", default="runs/posterior")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--sweep_seeds", default="0,1,2")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--jobs", type=int, default=2, help="simulations at a time")
    parser.add_argument("--only", default="",
                        help="comma-separated configuration names to run (default: all)")
    parser.add_argument("--simulate_args", default="",
                        help="extra `tfddn simulate` flags for every run, e.g. the world's size")
    parser.add_argument("--aggregate_only", action="store_true",
                        help="run nothing: tabulate the finished simulations")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    sweep_seeds = [int(s) for s in args.sweep_seeds.split(",")]
    # Priority: the main comparison and the first two sweep points on the sweep seeds,
    # then the main comparison's other seeds, then the rest of the sweep.
    sweep = list(SWEEP)
    jobs = ([(n, s) for s in sweep_seeds for n in [*MAIN, *sweep[:2]] if s in seeds]
            + [(n, s) for s in seeds if s not in sweep_seeds for n in MAIN]
            + [(n, s) for n in sweep[2:] for s in sweep_seeds])
    if args.only:
        unknown = set(args.only.split(",")) - {*MAIN, *SWEEP}
        if unknown:
            parser.error(f"unknown configurations: {', '.join(sorted(unknown))}")
        jobs = [(n, s) for n, s in jobs if n in args.only.split(",")]
    begin = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda job: _run(*job, args), jobs))
    results = {n: {} for n in {**MAIN, **SWEEP}}
    for (n, s), result in zip(jobs, done):
        if result is not None:
            results[n][s] = result
    lines = [f"{args.days} days after the random day 0; mean +- 95% t-interval over seeds.", "",
             *_tables(results), *_fits(results)]
    with open(os.path.join(args.out_dir, "posterior.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    points = []
    for n in SWEEP_ORDER:
        common = sorted(set(results[n]) & set(sweep_seeds))
        if not common:
            continue
        rpm = [results[n][s]["summary"]["expected_rpm"] for s in common]
        thr = [results[n][s]["summary"]["throughput"] for s in common]
        points.append({"label": results[n][common[0]]["label"].replace("BBDDN ", ""),
                       "rpm": mean_ci(rpm)[0], "rpm_ci": np.nan_to_num(mean_ci(rpm)[1]),
                       "throughput": mean_ci(thr)[0],
                       "throughput_ci": np.nan_to_num(mean_ci(thr)[1])})
    if points:
        plot_tradeoff(points, os.path.join(args.out_dir, "sweep.png"),
                      "BBDDN posterior policies: expected RPM vs throughput")
    summary = {"command": " ".join(["docs/experiments/posterior_exploration.py",
                                    *(argv or sys.argv[1:])]),
               "days": args.days, "seconds": round(time.time() - begin),
               "results": {n: {s: r["summary"] for s, r in by.items()}
                           for n, by in results.items()}}
    with open(os.path.join(args.out_dir, "posterior.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


if __name__ == "__main__":
    run()
