"""`tfddn simulate`: what a model and a policy would earn and explore, day by day.

Each simulated day (Zeldes et al. 2018, Sec. 5 ran the same comparison online):

1. the live pool of the day (`SimulationWorld.pool`) is scored for every context by
   the current model, T MC-dropout passes in one batched graph
   (`tfddn.uncertainty.mc_dropout_params` -> `decompose_params`);
2. the policy (`tfddn.policy`) picks one target per request from those predictions
   (Vowpal Wabbit instead learns online, request by request, `tfddn.simulation.vw`);
   a posterior policy (`posterior_ts`, `posterior_ucb`) also sees each pair's counts
   of the day's earlier rounds and, discounted, of earlier days
   (`tfddn.simulation.evidence`), and needs no model with `prior="flat"` / `"global"`;
3. clicks are drawn from the world's realised CTR of each shown pair
   (Binomial(impressions, CTR of the pair that day));
4. the day's aggregated logs (one row per shown (target, publisher, device), the
   generator's columns) are written as Parquet, the last `window_days` days go through
   the **same Beam pipeline** (`beam.preprocess`) and the model is retrained on them,
   **warm-started** from yesterday's run (`TrainConfig.warm_start_from`: embedding
   rows matched by value, new targets start from OOV).

Day 0 bootstraps: every simulation serves day 0 at random (the same traffic and
clicks for every policy of a seed) and trains its first model on it (VW learns from its
logs, a posterior policy keeps its counts). Metrics are reported from day 1 on: CTR,
RPM = 1000 x revenue / recommendations (realised clicks), expected RPM (the shown pairs'
true expected CTR x CPC: no click noise), realised-CTR RPM (their realised CTR of the day
x CPC: no Bernoulli noise, but credit for finding the day's good pairs, as learners that
adapt within the day do), regret against an oracle that shows each context its highest
expected-revenue live target, and targets throughput
(`tfddn.simulation.metrics.targets_throughput`).

Example:
    >>> result = simulate(SimulationConfig(out_dir="runs/sim", days=14),
    ...                   WorldConfig(pool_size=200))
    >>> result["summary"]["rpm"], result["summary"]["throughput"]
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import time
from typing import Callable
from collections import defaultdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from tfddn.generate import GenerateConfig, build_spec
from tfddn.policy import CandidatePredictions, Greedy, PolicyConfig, make_policy
from tfddn.simulation.config import (MODEL_KINDS, POLICIES, POSTERIOR_POLICIES, VW_POLICIES,
                                     SimulationConfig)
from tfddn.simulation.evidence import Evidence
from tfddn.simulation.world import SimulationWorld, WorldConfig

__all__ = ["MODEL_KINDS", "POLICIES", "SimulationConfig", "simulate", "simulation_spec"]

_ID_FEATURES = ("target_id", "advertiser_id", "title", "publisher_id")


def simulation_spec(min_count: int):
    """The generator's aggregated-log spec without a timestamp (hash split), ids at
    `min_count` impressions."""
    spec = build_spec(GenerateConfig(out_dir="unused", rows=1))
    features = tuple(dataclasses.replace(f, min_count=min_count) if f.name in _ID_FEATURES
                     else f for f in spec.features)
    return dataclasses.replace(spec, features=features, timestamp=None, name="simulation")


def _policy(config: SimulationConfig):
    name = "random" if config.policy == "random" else config.policy
    return make_policy(PolicyConfig(name=name, c=config.c, stddev=config.stddev,
                                    epsilon=config.epsilon, quantile=config.quantile))


def _vw_policy(config: SimulationConfig):
    from tfddn.simulation.vw import VowpalWabbitBandit, VWConfig

    algorithm = config.policy.split("-", 1)[1]
    return VowpalWabbitBandit(VWConfig(algorithm=algorithm, epsilon=config.epsilon,
                                       seed=config.seed))


def _score(model, model_config, spec, names, world, pool, contexts, day, mc_samples):
    """MC-dropout predictions for every (context, live target): `[M, C]` arrays + params."""
    from tfddn.candidation import mc_predictions

    m, c = len(contexts), len(pool)
    req = world.requests(np.tile(pool, m), np.repeat(contexts[:, 0], c),
                         np.repeat(contexts[:, 1], c), day)
    parts, params = mc_predictions(model, model_config, spec, names.feature_columns(req),
                                   mc_samples)
    return ({k: v.reshape(m, c) for k, v in parts.items()},
            params.reshape(mc_samples, m, c, -1))


def _subset(predictions, index, counts=None, prior_strength=1.0):
    """The `CandidatePredictions` of the candidates `index` (budgets left), with the
    `(clicks, impressions)` `counts` of the posterior policies."""
    p = predictions
    return CandidatePredictions(
        ctr_mean=p.ctr_mean[index], data_stddev=p.data_stddev[index],
        model_stddev=p.model_stddev[index], cpc=p.cpc[index],
        mixture=None if p.mixture is None else p.mixture[:, index],
        num_components=p.num_components, family=p.family,
        clicks=None if counts is None else counts[0][index],
        impressions=None if counts is None else counts[1][index],
        prior_strength=prior_strength,
        prior_mixture=None if p.prior_mixture is None else p.prior_mixture.take(index))


def _context_predictions(scored, model_config, i, cpc):
    if scored is None:  # no model yet (day 0) or a model-free policy
        zeros = np.zeros(len(cpc))
        return CandidatePredictions(ctr_mean=zeros, data_stddev=zeros, model_stddev=zeros,
                                    cpc=cpc)
    parts, params = scored
    density = model_config.is_density
    return CandidatePredictions(
        ctr_mean=parts["ctr_mean"][i], data_stddev=parts["data_stddev"][i],
        model_stddev=parts["model_stddev"][i], cpc=cpc,
        mixture=params[:, i] if density else None,
        num_components=model_config.num_components if density else 1,
        family=model_config.family or "gaussian")


def _rounds(counts: np.ndarray, rounds: int) -> np.ndarray:
    """`[M, rounds]` requests of each context per round (the day's traffic spread evenly)."""
    base, extra = np.divmod(counts, rounds)
    return base[:, None] + (np.arange(rounds)[None, :] < extra[:, None])


def _serve_day(config, world, names, spec, model, model_config, policy, day, rng, timings,
               evidence=None):
    """Serves every request of `day`: the shown pairs with outcomes, the oracle's
    expected revenue on the same traffic and, for the evidence fit, the model's
    predictions of the shown pairs (None without a model).

    The day runs in `rounds` rounds (hours); in each, the contexts take turns in a random
    order and serve their share of requests from the targets whose daily budget
    (`WorldConfig.budget`) is not spent yet, so no policy can send all traffic to a
    handful of targets, as advertisers' budgets prevent in a real marketplace.
    """
    pool = world.pool(day)
    contexts, counts = world.traffic(day)
    m, c = len(contexts), len(pool)
    cpc = world.cpc(pool)
    req = world.requests(np.tile(pool, m), np.repeat(contexts[:, 0], c),
                         np.repeat(contexts[:, 1], c), day)
    realised = world.realised_ctr(req).reshape(m, c)
    expected = world.expected_ctr(req).reshape(m, c)
    start = time.perf_counter()
    scored = (_score(model, model_config, spec, names, world, pool, contexts, day,
                     config.mc_samples) if model is not None else None)
    timings["score"] += time.perf_counter() - start
    actions = _vw_actions(world, pool) if hasattr(policy, "serve") else None
    # A posterior policy's evidence: discounted earlier days + today's earlier rounds.
    seen = evidence.seen(day, pool, contexts) if evidence is not None else None
    strength = evidence.strength if evidence is not None else 1.0

    def allocate(policy, predictions, order_rng, seen=None):
        """Serves the day's requests with `policy`; `[M, C]` impressions and clicks."""
        remaining = np.full(c, world.daily_budget(config.slots), dtype=np.float64)
        impressions = np.zeros((m, c), dtype=np.int64)
        clicks = np.zeros((m, c), dtype=np.int64)
        vw = hasattr(policy, "serve")  # Vowpal Wabbit: learns request by request
        for per_context in _rounds(counts, world.config.rounds).T:
            for i in order_rng.permutation(m):
                live = np.flatnonzero(remaining > 0)
                if per_context[i] == 0 or len(live) == 0:
                    continue
                if vw:
                    # cb_explore_adf chooses one action: a list of `slots` is served as
                    # `slots` decisions (duplicates possible).
                    chosen, clicked = policy.serve(
                        _vw_shared(names, *contexts[i], world), [actions[j] for j in live],
                        cpc[live], int(per_context[i]) * config.slots,
                        lambda j, row=realised[i, live]: int(rng.random() < row[j]), rng)
                    shown = np.bincount(chosen, minlength=len(live))
                    won = np.bincount(chosen, weights=clicked, minlength=len(live))
                else:
                    evidence_i = None if seen is None else (seen[0][i] + clicks[i],
                                                            seen[1][i] + impressions[i])
                    chosen = policy.select(_subset(predictions[i], live, evidence_i, strength),
                                           int(per_context[i]), rng,
                                           slots=min(config.slots, len(live)))
                    shown = np.bincount(chosen.ravel(), minlength=len(live))
                    won = rng.binomial(shown, realised[i, live])
                impressions[i, live] += shown
                clicks[i, live] += won.astype(np.int64)
                remaining[live] -= shown
        return impressions, clicks

    start = time.perf_counter()
    free = evidence.model_free(day, cpc) if evidence is not None else None
    predictions = [free or _context_predictions(scored, model_config, i, cpc) for i in range(m)]
    if seen is not None:  # the posterior policies' priors, once a day per context
        predictions = [dataclasses.replace(p, prior_mixture=p.prior()) for p in predictions]
    impressions, clicks = allocate(policy, predictions,
                                   np.random.default_rng([config.seed, day, 1]), seen)
    timings["policy"] += time.perf_counter() - start
    start = time.perf_counter()
    # The oracle serves the same traffic under the same budgets, greedy on the expected
    # CTR (it knows the world): its expected revenue is what the day could have earned.
    zeros = np.zeros(c)
    truth = [CandidatePredictions(ctr_mean=expected[i], data_stddev=zeros, model_stddev=zeros,
                                  cpc=cpc) for i in range(m)]
    oracle, _ = allocate(Greedy(), truth, np.random.default_rng([config.seed, day, 1]))
    oracle_revenue = float((oracle * expected * cpc[None, :]).sum())
    timings["oracle"] += time.perf_counter() - start
    rows_m, rows_c = np.nonzero(impressions)
    frame = pd.DataFrame({
        "target": pool[rows_c], "publisher": contexts[rows_m, 0],
        "device": contexts[rows_m, 1], "impressions": impressions[rows_m, rows_c],
        "clicks": clicks[rows_m, rows_c], "cpc": cpc[rows_c],
        "expected_ctr": expected[rows_m, rows_c], "realised_ctr": realised[rows_m, rows_c],
        "birth": world.birth[pool[rows_c]]})
    shown = None  # the prior of the shown pairs, for the posterior policies' evidence fit
    if evidence is not None and scored is not None and free is None:
        parts, params = scored
        density = model_config.is_density
        shown = CandidatePredictions(
            ctr_mean=parts["ctr_mean"][rows_m, rows_c],
            data_stddev=parts["data_stddev"][rows_m, rows_c],
            model_stddev=parts["model_stddev"][rows_m, rows_c], cpc=cpc[rows_c],
            mixture=params[:, rows_m, rows_c] if density else None,
            num_components=model_config.num_components if density else 1,
            family=model_config.family or "gaussian")
    return frame, oracle_revenue, shown


def _vw_learn_day(bandit, frame: pd.DataFrame, names, world, rng) -> None:
    """Teaches `bandit` the random day's logs: every impression as one decision of a
    uniform policy over the day's pool (propensity 1 / pool size), in random order."""
    pool = world.pool(int(frame["day"].iloc[0]))
    position = {t: j for j, t in enumerate(pool)}
    actions, cpc = _vw_actions(world, pool), world.cpc(pool)
    for (publisher, device), group in frame.groupby(["publisher", "device"], sort=True):
        chosen = np.repeat([position[t] for t in group["target"]], group["impressions"])
        clicked = np.concatenate([np.arange(n) < k for n, k in
                                  zip(group["impressions"], group["clicks"])]).astype(np.int64)
        order = rng.permutation(len(chosen))
        bandit.learn(_vw_shared(names, publisher, device, world), actions, cpc, chosen[order],
                     clicked[order], np.full(len(chosen), 1.0 / len(pool)))


def _vw_shared(names, publisher, device, world) -> dict:
    market = world.market
    return {"publisher_id": names.arrays["publisher"][int(publisher)].as_py(),
            "publisher_topic": f"topic{market.publisher_topic[publisher]:02d}",
            "device": names.arrays["device"][int(device)].as_py()}


def _vw_actions(world, pool) -> list[dict]:
    market, out = world.market, []
    for t in pool:
        words = market.title_tokens[t][: market.title_length[t]]
        out.append({"target_id": f"t{t}", "advertiser_id": f"adv{market.target_advertiser[t]}",
                    "target_topic": f"topic{market.target_topic[t]:02d}",
                    "title": [f"w{w}" for w in words]})
    return out


def _write_logs(frame: pd.DataFrame, names, world, day: int, path: str) -> None:
    req = world.requests(frame["target"].to_numpy(), frame["publisher"].to_numpy(),
                         frame["device"].to_numpy(), day)
    columns = names.feature_columns(req)
    columns.update(clicks=pa.array(frame["clicks"].to_numpy(np.int64)),
                   impressions=pa.array(frame["impressions"].to_numpy(np.int64)),
                   cpc=pa.array(frame["cpc"].to_numpy(np.float64)))
    pq.write_table(pa.table(columns), path)


def _day_metrics(frame: pd.DataFrame, oracle: float, day: int) -> dict:
    recommendations = int(frame["impressions"].sum())
    revenue = float((frame["clicks"] * frame["cpc"]).sum())
    expected = float((frame["impressions"] * frame["expected_ctr"] * frame["cpc"]).sum())
    realised = float((frame["impressions"] * frame["realised_ctr"] * frame["cpc"]).sum())
    new = (frame["birth"] >= 0) & (frame["birth"] >= day - 1)  # arrived today or yesterday
    n = recommendations
    return {"day": day, "recommendations": n, "clicks": int(frame["clicks"].sum()),
            "ctr": float(frame["clicks"].sum() / n), "revenue": revenue,
            "rpm": 1000.0 * revenue / n, "expected_rpm": 1000.0 * expected / n,
            "realised_ctr_rpm": 1000.0 * realised / n,
            "regret_per_1000": 1000.0 * (oracle - expected) / n,
            "distinct_pairs": int(len(frame)),
            "distinct_targets": int(frame["target"].nunique()),
            "new_target_share": float(frame.loc[new, "impressions"].sum() / n)}


def _retrain(config, model_config, spec, out, day, previous_run, timings, preprocess):
    from tfddn import training

    if preprocess is None:
        raise ValueError("a simulation that trains models needs the Beam pipeline: pass "
                         "simulate(..., preprocess=beam.preprocess.run_with)")

    first = max(0, day - config.window_days + 1)
    files = [os.path.join(out, "logs", f"day_{d:03d}.parquet") for d in range(first, day + 1)]
    inputs = os.path.join(out, "logs", "window")
    if os.path.exists(inputs):
        shutil.rmtree(inputs)
    os.makedirs(inputs)
    for path in files:  # the window as one input glob; a hard link where the filesystem can
        target = os.path.join(inputs, os.path.basename(path))
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    data_dir, run_dir = (os.path.join(out, kind, f"day_{day:03d}") for kind in ("data", "runs"))
    start = time.perf_counter()
    preprocess(input=os.path.join(inputs, "*.parquet"), spec=spec, output=data_dir,
               overwrite=True, eval_fraction=0.05)
    timings["preprocess"] += time.perf_counter() - start
    start = time.perf_counter()
    epochs = config.first_epochs if previous_run is None else config.daily_epochs
    training.train(training.TrainConfig(
        data_dir=data_dir, run_dir=run_dir, epochs=epochs, patience=2, seed=config.seed + day,
        verbose=0, warm_start_from=previous_run), model_config)
    model, model_config, _ = training.load_run(run_dir)
    timings["train"] += time.perf_counter() - start
    if not config.keep_days and previous_run is not None:
        for kind in ("data", "runs"):
            shutil.rmtree(os.path.join(out, kind, f"day_{day - 1:03d}"), ignore_errors=True)
    return model, model_config, run_dir


def simulate(config: SimulationConfig, world_config: WorldConfig = WorldConfig(),
             progress: bool = True, preprocess: Callable[..., dict] | None = None) -> dict:
    """Runs the simulation (module docstring); writes and returns `result.json`'s dict.

    Args:
        config: the model, policy and seed.
        world_config: the marketplace's size.
        progress: show a progress bar over the days.
        preprocess: the Beam pipeline, called with `beam.config.PreprocessConfig`'s
            fields as keywords (`beam.preprocess.run_with`); needed unless the policy
            trains no model (VW, posterior policies without a model prior). The library
            does not import `beam/` itself.
    """
    from tfddn._logio import ValueNames
    from tfddn.models.config import ModelConfig
    from tfddn.simulation import metrics

    begin = time.perf_counter()
    out = os.path.abspath(config.out_dir)
    for stale in glob.glob(os.path.join(out, "logs", "day_*.parquet")):
        os.remove(stale)
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    spec = simulation_spec(config.min_count)
    spec_path = os.path.join(out, "spec.json")
    spec.save(spec_path)
    world = SimulationWorld(world_config, config.seed, config.days)
    names = ValueNames(world.market)
    model_config = ModelConfig(kind=config.model, dropout=config.dropout)
    policy = (_vw_policy(config) if config.policy in VW_POLICIES else _policy(config))
    evidence = (Evidence(config.prior, config.prior_strength, config.history_decay,
                         config.window_days, config.seed)
                if config.policy in POSTERIOR_POLICIES else None)
    explore = make_policy(PolicyConfig(name="random"))
    timings = defaultdict(float)
    model, run_dir, frames, days = None, None, [], []
    bar = tqdm(range(config.days + 1), desc=config.label, unit="day", disable=not progress)
    for day in bar:
        rng = np.random.default_rng([config.seed, 0xDA7, day])
        start = time.perf_counter()
        serving = policy if day > 0 else explore
        frame, oracle, shown = _serve_day(
            config, world, names, spec, model if day > 0 else None, model_config, serving,
            day, rng, timings, evidence if day > 0 else None)
        timings["serve"] += time.perf_counter() - start
        frame["day"] = day
        frames.append(frame)
        days.append(_day_metrics(frame, oracle, day))
        start = time.perf_counter()
        if evidence is not None:
            days[-1]["prior_strength"], days[-1]["history_decay"] = (evidence.strength,
                                                                     evidence.decay)
            evidence.add_day(day, frame, shown)
        if day == 0 and hasattr(policy, "learn"):  # VW learns from the random day 0 too
            _vw_learn_day(policy, frame, names, world, np.random.default_rng([config.seed, 7]))
        timings["evidence"] += time.perf_counter() - start
        start = time.perf_counter()
        _write_logs(frame, names, world, day,
                    os.path.join(out, "logs", f"day_{day:03d}.parquet"))
        timings["logs"] += time.perf_counter() - start
        if config.uses_model and day < config.days:
            model, model_config, run_dir = _retrain(config, model_config, spec, out, day,
                                                    run_dir, timings, preprocess)
        bar.set_postfix(rpm=f"{days[-1]['rpm']:.1f}", pairs=days[-1]["distinct_pairs"])
    if hasattr(policy, "finish"):
        policy.finish()
    log = pd.concat(frames, ignore_index=True)
    log["pair"] = list(zip(log["target"], log["publisher"], log["device"]))
    throughput = metrics.targets_throughput(log[["pair", "day", "impressions", "clicks"]],
                                            threshold=config.throughput_threshold)
    for entry in days:
        row = throughput.loc[entry["day"]] if entry["day"] in throughput.index else None
        entry["throughput"] = int(row["throughput"]) if row is not None else 0
        entry["reached_significance"] = (int(row["reached_significance"])
                                         if row is not None else 0)
    scored = [d for d in days if d["day"] >= 1]
    recommendations = sum(d["recommendations"] for d in scored)
    summary = {
        "rpm": 1000.0 * sum(d["revenue"] for d in scored) / recommendations,
        "expected_rpm": float(np.mean([d["expected_rpm"] for d in scored])),
        "realised_ctr_rpm": float(np.mean([d["realised_ctr_rpm"] for d in scored])),
        "ctr": sum(d["clicks"] for d in scored) / recommendations,
        "regret_per_1000": float(np.mean([d["regret_per_1000"] for d in scored])),
        "throughput": int(sum(d["throughput"] for d in scored)),
        "distinct_pairs": float(np.mean([d["distinct_pairs"] for d in scored])),
        "new_target_share": float(np.mean([d["new_target_share"] for d in scored])),
    }
    result = {"label": config.label, "config": dataclasses.asdict(config),
              "world": dataclasses.asdict(world_config), "summary": summary, "days": days,
              "evidence_fits": {} if evidence is None else evidence.fits,
              "seconds": {"total": round(time.perf_counter() - begin, 1),
                          **{k: round(v, 1) for k, v in timings.items()}}}
    log.drop(columns=["pair"]).to_parquet(os.path.join(out, "shown.parquet"))
    with open(os.path.join(out, "result.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    return result
