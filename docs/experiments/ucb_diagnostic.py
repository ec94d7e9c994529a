"""How much does UCB reorder the greedy ranking, and does its bonus favour new targets?

Loads the last model of a `tfddn simulate` run (`OUT/runs/day_<D-1>`, which served day
D) and scores every context x live target of day D, T = 16 MC-dropout passes, then
prints: the stddevs relative to the mean, the Spearman correlation and top-10 overlap
between the greedy order (mean x CPC) and the UCB order ((mean + c total) x CPC) per
context, and the bonus (total stddev / mean) of targets that arrived in the last two
days against older ones.

Example:
    .venv/bin/python docs/experiments/ucb_diagnostic.py --sim_dir runs/exploration/ddn-ucb1/seed0
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from scipy import stats

from tfddn import training
from tfddn._logio import ValueNames
from tfddn.simulation.simulator import _score, simulation_spec
from tfddn.simulation.world import SimulationWorld, WorldConfig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sim_dir", required=True, help="a `tfddn simulate` --out_dir")
    parser.add_argument("--mc_samples", type=int, default=16)
    args = parser.parse_args(argv)
    with open(os.path.join(args.sim_dir, "result.json")) as fh:
        result = json.load(fh)
    config, days = result["config"], result["config"]["days"]
    model, model_config, _ = training.load_run(
        os.path.join(args.sim_dir, "runs", f"day_{days - 1:03d}"))
    world = SimulationWorld(WorldConfig(**result["world"]), config["seed"], days)
    pool = world.pool(days)
    contexts, _ = world.traffic(days)
    parts, _ = _score(model, model_config, simulation_spec(config["min_count"]),
                      ValueNames(world.market), world, pool, contexts, days, args.mc_samples)
    mean, data, model_sd = parts["ctr_mean"], parts["data_stddev"], parts["model_stddev"]
    total = np.sqrt(data ** 2 + model_sd ** 2)
    cpc = world.cpc(pool)
    print(f"{len(contexts)} contexts x {len(pool)} live targets on day {days}")
    for name, sd in (("data", data), ("model", model_sd), ("total", total)):
        q = np.percentile(sd / mean, [25, 50, 75])
        print(f"{name:>5} stddev / mean: median {q[1]:.3f} (IQR {q[0]:.3f}-{q[2]:.3f})")
    for c in (0.5, 1.0, 1.5):
        rho, overlap = [], []
        for i in range(len(contexts)):
            greedy, ucb = mean[i] * cpc, (mean[i] + c * total[i]) * cpc
            rho.append(stats.spearmanr(greedy, ucb)[0])
            overlap.append(len(set(np.argsort(-greedy)[:10]) & set(np.argsort(-ucb)[:10])) / 10)
        print(f"c = {c}: Spearman(greedy, UCB order) {np.mean(rho):.3f}, "
              f"top-10 overlap {np.mean(overlap):.2f} (mean over contexts)")
    new = world.birth[pool] >= days - 1
    ratio = total / mean
    print(f"total stddev / mean: new targets (arrived day {days - 1} or {days}, n={new.sum()}) "
          f"median {np.median(ratio[:, new]):.3f}, older (n={(~new).sum()}) "
          f"{np.median(ratio[:, ~new]):.3f}")
    ratio = model_sd / mean
    print(f"model stddev / mean: new {np.median(ratio[:, new]):.3f}, "
          f"older {np.median(ratio[:, ~new]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
