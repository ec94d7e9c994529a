"""Tables 2 and 3 of Zeldes et al. (2018) on the simulator, with baselines, over seeds.

Runs `tfddn simulate` (one subprocess per simulation, `--jobs` at a time) for every
configuration below and every seed, then aggregates:

* **Table 2 analogue**: RPM of REG (greedy), MDN (UCB) and DDN (UCB), c = 1; the paper
  reports DDN +2.9% over REG and +1.7% over MDN (online A/B test).
* **Table 3 analogue**: DDN with UCB at c in {0, 0.5, 1, 1.5}: RPM and targets-throughput
  lift against c = 0 (greedy); the paper reports +6.5% throughput at -0.05% RPM for
  c = 0.5, up to +11.7% at -0.3% RPM for c = 1.5.
* **Baselines** on the same simulator and features: epsilon-greedy and Thompson
  sampling on the DDN, Vowpal Wabbit's `cb_explore_adf` (squarecb, epsilon), random.

Every configuration of a seed shares the world, the traffic and the random day 0, so
lifts are computed per seed (paired) and then averaged; the +- figures are 95%
t-intervals over seeds (`tfddn.simulation.metrics.mean_ci`). Writes
`OUT/tables.md`, `OUT/tables.json`, `OUT/tradeoff.png` and `OUT/days_seed<S>.png`.

Example (the run in docs/RESULTS.md):
    .venv/bin/python docs/experiments/exploration_tables.py --out_dir runs/exploration \\
        --seeds 0,1,2 --jobs 2
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
from tfddn.simulation.plots import plot_days, plot_tradeoff

CONFIGS = {
    "reg-greedy": ["--kind", "reg", "--policy", "greedy"],
    "mdn-ucb1": ["--kind", "mdn", "--policy", "ucb", "--c", "1"],
    "ddn-ucb0": ["--kind", "ddn", "--policy", "ucb", "--c", "0"],
    "ddn-ucb0.5": ["--kind", "ddn", "--policy", "ucb", "--c", "0.5"],
    "ddn-ucb1": ["--kind", "ddn", "--policy", "ucb", "--c", "1"],
    "ddn-ucb1.5": ["--kind", "ddn", "--policy", "ucb", "--c", "1.5"],
    "ddn-epsilon": ["--kind", "ddn", "--policy", "epsilon_greedy", "--epsilon", "0.1"],
    "ddn-thompson": ["--kind", "ddn", "--policy", "thompson"],
    "vw-squarecb": ["--policy", "vw-squarecb"],
    "vw-epsilon": ["--policy", "vw-epsilon", "--epsilon", "0.1"],
    "random": ["--policy", "random"],
}
TABLE2 = ("reg-greedy", "mdn-ucb1", "ddn-ucb1")
TABLE3 = ("ddn-ucb0", "ddn-ucb0.5", "ddn-ucb1", "ddn-ucb1.5")
BASELINES = ("ddn-ucb1", "ddn-epsilon", "ddn-thompson", "vw-squarecb", "vw-epsilon",
             "random")
METRICS = ("rpm", "expected_rpm", "throughput", "regret_per_1000", "ctr")


def _run(name: str, seed: int, args) -> dict:
    out = os.path.join(args.out_dir, name, f"seed{seed}")
    path = os.path.join(out, "result.json")
    if os.path.exists(path) and not args.rerun:  # resumable
        with open(path) as fh:
            return json.load(fh)
    command = [sys.executable, "-m", "tfddn.cli", "simulate", "--out_dir", out,
               "--mc_samples", "16",  # the passes the tables were measured with
               "--seed", str(seed), "--days", str(args.days), "--quiet", *CONFIGS[name],
               *args.simulate_args]
    os.makedirs(out, exist_ok=True)
    start = time.time()
    with open(os.path.join(out, "simulate.log"), "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    with open(path) as fh:
        result = json.load(fh)
    print(f"{name:>13} seed {seed}: RPM {result['summary']['rpm']:.2f}  throughput "
          f"{result['summary']['throughput']}  ({time.time() - start:.0f} s)", flush=True)
    return result


def _cell(values) -> str:
    mean, half = mean_ci(values)
    return f"{mean:.2f} +- {half:.2f}" if np.isfinite(half) else f"{mean:.2f}"


def _pct(values) -> str:
    mean, half = mean_ci(100.0 * np.asarray(values))
    return f"{mean:+.1f}% +- {half:.1f}" if np.isfinite(half) else f"{mean:+.1f}%"


def _lifts(results, names, reference, seeds, key):
    return {n: [results[n][s]["summary"][key] / results[reference][s]["summary"][key] - 1.0
                for s in seeds] for n in names}


def _table(results, names, seeds, reference) -> list[str]:
    lines = ["| configuration | RPM | expected RPM | RPM lift vs " + reference
             + " | throughput | throughput lift | regret / 1000 | CTR x 1000 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rpm = _lifts(results, names, reference, seeds, "rpm")
    thr = _lifts(results, names, reference, seeds, "throughput")
    for n in names:
        s = {k: [results[n][seed]["summary"][k] for seed in seeds] for k in METRICS}
        lines.append(f"| {results[n][seeds[0]]['label']} | {_cell(s['rpm'])} | "
                     f"{_cell(s['expected_rpm'])} | {_pct(rpm[n])} | {_cell(s['throughput'])} "
                     f"| {_pct(thr[n])} | {_cell(s['regret_per_1000'])} | "
                     f"{_cell(1000 * np.array(s['ctr']))} |")
    return lines


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", default="runs/exploration")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--jobs", type=int, default=2, help="simulations at a time")
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    parser.add_argument("--rerun", action="store_true", help="ignore finished results")
    parser.add_argument("--aggregate_only", action="store_true",
                        help="run nothing: tabulate the seeds whose every configuration "
                             "has finished")
    args, args.simulate_args = parser.parse_known_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [n for n in CONFIGS if not args.only or n in args.only.split(",")]
    begin = time.time()
    if args.aggregate_only:
        seeds = [s for s in seeds if all(os.path.exists(os.path.join(
            args.out_dir, n, f"seed{s}", "result.json")) for n in names)]
        if not seeds:
            raise SystemExit("no seed has every configuration finished")
    jobs = [(n, s) for s in seeds for n in names]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda job: _run(*job, args), jobs))
    results = {n: {} for n in names}
    for (n, s), result in zip(jobs, done):
        results[n][s] = result
    lines = [f"Seeds {seeds}, {args.days} days after the random day 0; mean +- 95% "
             f"t-interval over seeds; lifts are paired per seed.", ""]
    tables = {"Table 2 analogue": (TABLE2, "reg-greedy"),
              "Table 3 analogue": (TABLE3, "ddn-ucb0"),
              "Baselines": (BASELINES, "ddn-ucb1")}
    for title, (members, reference) in tables.items():
        if all(m in names for m in members):
            lines += [f"### {title}", "", *_table(results, members, seeds, reference), ""]
    with open(os.path.join(args.out_dir, "tables.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if all(m in names for m in TABLE3):
        points = []
        for n in TABLE3:
            rpm = [results[n][s]["summary"]["rpm"] for s in seeds]
            thr = [results[n][s]["summary"]["throughput"] for s in seeds]
            points.append({"label": n.replace("ddn-ucb", "c="), "rpm": mean_ci(rpm)[0],
                           "rpm_ci": np.nan_to_num(mean_ci(rpm)[1]),
                           "throughput": mean_ci(thr)[0],
                           "throughput_ci": np.nan_to_num(mean_ci(thr)[1])})
        plot_tradeoff(points, os.path.join(args.out_dir, "tradeoff.png"),
                      "DDN + UCB: RPM vs targets throughput over c")
    plot_days([results[n][seeds[0]] for n in names],
              os.path.join(args.out_dir, f"days_seed{seeds[0]}.png"))
    summary = {"command": " ".join(["docs/experiments/exploration_tables.py", *(argv or
                                                                                 sys.argv[1:])]),
               "seeds": seeds, "days": args.days, "seconds": round(time.time() - begin),
               "results": {n: {s: results[n][s]["summary"] for s in seeds} for n in names}}
    with open(os.path.join(args.out_dir, "tables.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


if __name__ == "__main__":
    run()
