"""How good are `tfddn ope`'s estimates? Bias, RMSE and interval coverage on simulator logs.

For every seed, `tfddn.simulation.bandit_logs.draw_bandit_logs` serves `--requests`
recommendations in a seeded marketplace with a known stochastic logging policy (softmax
over a noisy true logit, 20% uniform exploration, exact propensities) and Bernoulli
clicks from the true CTR. Each target policy runs on a `NoisyOracle` model (the true
CTR with logit noise `--noise`; also DR's reward model), and its exact value
`sum_x P(x) sum_a pi(a|x) q(x, a)` is compared with what `tfddn.ope.run_ope` estimates
from the logs written to disk (IPS, SNIPS, DR, 95% percentile bootstrap intervals). The
naive estimate, the logged CTR itself, is shown for contrast.

Prints one Markdown table (per policy and estimator: mean truth, bias, RMSE, coverage,
mean interval width, mean effective sample size). A script, not a test.

Example:
    .venv/bin/python docs/experiments/ope_coverage.py --seeds 20 --requests 5000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from tfddn.configs import OPEConfig  # noqa: E402
from tfddn.marketplace import Marketplace, MarketplaceConfig  # noqa: E402
from tfddn.ope import ESTIMATORS, run_ope  # noqa: E402
from tfddn.ope_logs import score_contexts  # noqa: E402
from tfddn.policy import PolicyConfig, make_policy  # noqa: E402
from tfddn.simulation.bandit_logs import (BanditLogsConfig, NoisyOracle,  # noqa: E402
                                          draw_bandit_logs)

POLICIES = (PolicyConfig("greedy"), PolicyConfig("ucb", c=1.0),
            PolicyConfig("epsilon_greedy", epsilon=0.1), PolicyConfig("thompson"))


def _one(market, seed: int, args, root: str) -> list[dict]:
    bandit = draw_bandit_logs(market, BanditLogsConfig(requests=args.requests,
                                                       candidates=args.candidates), seed=seed)
    paths = bandit.write(os.path.join(root, str(seed)))
    oracle = NoisyOracle(bandit, noise=args.noise, seed=seed)
    rows = []
    for policy in POLICIES:
        truth = bandit.true_value(score_contexts(
            oracle, bandit.spec, bandit.contexts, bandit.candidates, make_policy(policy),
            bandit.context_key, samples=20_000, rng=np.random.default_rng([seed, 1])))["ctr"]
        result = run_ope(OPEConfig(logs=paths["logs"], candidates=paths["candidates"],
                                   spec=paths["spec"], context_key=bandit.context_key,
                                   policy=policy, bootstrap=args.bootstrap, seed=seed),
                         source=oracle)
        estimates = {name: result["estimates"][name]["ctr"] for name in ESTIMATORS}
        logged = result["logged"]["ctr"]
        estimates["naive"] = {"value": logged, "low": logged, "high": logged}
        for name, e in estimates.items():
            rows.append({"policy": policy.name, "estimator": name, "truth": truth,
                         "error": e["value"] - truth,
                         "covered": e["low"] <= truth <= e["high"],
                         "width": e["high"] - e["low"],
                         "ess": result["effective_sample_size"]})
    return rows


def run(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    start = time.time()
    market = Marketplace(MarketplaceConfig(targets=2000, advertisers=200, publishers=30,
                                           seed=0))
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for seed in range(args.seeds):
            rows += _one(market, seed, args, root)
    print(f"{args.seeds} seeds x {args.requests} logged requests, {args.candidates} "
          f"candidates per publisher, oracle logit noise {args.noise}, "
          f"{args.bootstrap} bootstrap resamples ({time.time() - start:.0f} s)\n")
    print("| policy | estimator | mean truth | bias | RMSE | 95% coverage | mean width | "
          "mean ESS |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for policy in POLICIES:
        for name in (*ESTIMATORS, "naive"):
            group = [r for r in rows if r["policy"] == policy.name and r["estimator"] == name]
            error = np.array([r["error"] for r in group])
            coverage = f"{sum(r['covered'] for r in group)}/{len(group)}"
            width = f"{np.mean([r['width'] for r in group]):.4f}" if name != "naive" else "-"
            print(f"| {policy.name} | {name.upper() if name != 'naive' else 'naive (logged CTR)'} "
                  f"| {np.mean([r['truth'] for r in group]):.4f} | {error.mean():+.4f} "
                  f"| {np.sqrt((error ** 2).mean()):.4f} "
                  f"| {coverage if name != 'naive' else '-'} | {width} "
                  f"| {np.mean([r['ess'] for r in group]):.0f} |")


if __name__ == "__main__":
    run()
