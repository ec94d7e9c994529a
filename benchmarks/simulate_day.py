"""Where a simulated day's time goes: scoring, policy, oracle, logs, Beam, training.

Runs `tfddn simulate` (default world: 30 publishers x 3 devices, 200 live targets,
10,000 requests x 3 slots a day) for `--days` days with a BBDDN + posterior Thompson
sampling (issue #11: the policy step must stay <= 20% of a simulated day), a DDN + UCB
and, side by side in the same run, Vowpal Wabbit (squarecb), which learns online and
needs no Beam or training, then prints the seconds per simulated day of every stage
and its share.

    python benchmarks/simulate_day.py --days 3

Stages: `score` (T MC-dropout passes over every context x live target), `policy` (the
policy picking lists, in rounds, under budgets; VW's online learning is here; the
posterior policies' per-request posteriors too), `evidence` (the posterior policies'
empirical-Bayes fit after each day; VW's learning from the random day 0),
`oracle` (the same traffic served greedily on the true CTR), `logs` (Parquet),
`preprocess` (the Beam pipeline over the window's logs, DirectRunner), `train`
(warm-started retraining incl. saving and reloading the run). Day 0 (random, first
model trained from scratch for `first_epochs`) is included, so per-day figures are
averages over days 0..D.
"""

from __future__ import annotations

import argparse
import os
import tempfile

STAGES = ("score", "policy", "evidence", "oracle", "logs", "preprocess", "train")
RUNS = {"BBDDN + posterior TS": dict(model="bbddn", policy="posterior_ts"),
        "DDN + UCB": dict(model="ddn", policy="ucb"),
        "VW squarecb": dict(policy="vw-squarecb")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--out_dir", default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)

    from tfddn.simulation.simulator import SimulationConfig, simulate
    from tfddn.simulation.world import WorldConfig

    root = args.out_dir or tempfile.mkdtemp(prefix="simulate_day_")
    results = {}
    for name, kwargs in RUNS.items():
        config = SimulationConfig(out_dir=os.path.join(root, kwargs["policy"]), days=args.days,
                                  **kwargs)
        results[name] = simulate(config, WorldConfig(), progress=True)
    days = args.days + 1
    print(f"\nseconds per simulated day (mean over days 0..{args.days}; "
          f"{WorldConfig().requests_per_day:,} requests x 3 slots a day)")
    print(f"{'stage':<12}" + "".join(f"{name:>24}" for name in results))
    for stage in (*STAGES, "total"):
        cells = []
        for result in results.values():
            seconds = result["seconds"].get(stage, 0.0)
            share = seconds / result["seconds"]["total"]
            cells.append(f"{seconds / days:>13.2f} ({share:>5.1%})")
        print(f"{stage:<12}" + "".join(f"{c:>24}" for c in cells))
    posterior, ddn, vw = (r["seconds"] for r in results.values())
    print(f"\nposterior TS: policy step {posterior['policy'] / posterior['total']:.1%} of a "
          f"simulated day (target <= 20%), policy + evidence fit "
          f"{(posterior['policy'] + posterior.get('evidence', 0)) / posterior['total']:.1%}; "
          f"its policy step / UCB's: {posterior['policy'] / ddn['policy']:.1f}x")
    print(f"DDN + UCB day / VW day: {ddn['total'] / vw['total']:.2f}x; a 14-day DDN "
          f"simulation: ~{ddn['total'] / days * 15 / 60:.1f} min on this machine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
