"""The day-by-day simulator: turnover, traffic, budgets and a tiny run end to end."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from beam.preprocess import run_with
from tfddn import cli
from tfddn.simulation.simulator import SimulationConfig, _rounds, simulate, simulation_spec
from tfddn.simulation.world import SimulationWorld, WorldConfig

TINY_WORLD = WorldConfig(publishers=2, pool_size=20, turnover=0.2, requests_per_day=300,
                         advertisers=15, topics=4, rounds=4)


def test_turnover_keeps_the_pool_and_new_targets_start_at_age_zero():
    world = SimulationWorld(WorldConfig(pool_size=200, turnover=0.15), seed=0, days=14)
    sizes = [len(world.pool(d)) for d in range(15)]
    assert 150 < np.mean(sizes) < 250
    assert world.arrivals == 30
    for day in (1, 5, 14):
        arrived = np.flatnonzero(world.birth == day)
        assert len(arrived) == 30
        assert set(world.pool(day)) >= set(arrived)  # a lifetime is >= 1 day
        req = world.requests(arrived, np.zeros(30, int), np.zeros(30, int), day)
        np.testing.assert_array_equal(world.market.age_days(req), 0)
    # Targets expire: the day-0 pool is mostly gone two weeks later.
    assert len(set(world.pool(0)) & set(world.pool(14))) < 0.2 * sizes[0]


def test_traffic_and_budgets():
    world = SimulationWorld(TINY_WORLD, seed=1, days=3)
    contexts, counts = world.traffic(2)
    assert counts.sum() == 300 and np.all(counts > 0)
    assert contexts.shape == (len(counts), 2) and contexts[:, 1].max() <= 2
    assert world.daily_budget(slots=3) == pytest.approx(4.0 * 300 * 3 / 20)
    unlimited = SimulationWorld(WorldConfig(budget=0), seed=0, days=1)
    assert unlimited.daily_budget(3) == float("inf")
    np.testing.assert_array_equal(_rounds(np.array([10, 3, 0]), 4),
                                  [[3, 3, 2, 2], [1, 1, 1, 0], [0, 0, 0, 0]])


def test_simulation_spec_has_no_timestamp_and_the_min_count():
    spec = simulation_spec(7)
    assert spec.timestamp is None and spec.cpc == "cpc"
    assert spec.feature("target_id").min_count == 7
    assert spec.feature("device").min_count == 1


def test_config_validation():
    with pytest.raises(ValueError, match="policy must be one of"):
        SimulationConfig(out_dir="x", policy="best")
    with pytest.raises(ValueError, match="slots must be >= 1"):
        SimulationConfig(out_dir="x", slots=0)
    with pytest.raises(ValueError, match="budget must be >= 0"):
        WorldConfig(budget=-1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sim"))
    config = SimulationConfig(out_dir=out, days=2, seed=3, model="ddn", policy="ucb", c=1.0,
                              mc_samples=2, first_epochs=1, daily_epochs=1, min_count=5,
                              keep_days=True, throughput_threshold=2)
    return out, config, simulate(config, TINY_WORLD, progress=False, preprocess=run_with)


@pytest.mark.slow
def test_tiny_simulation_end_to_end(tiny_run):
    out, config, result = tiny_run
    assert [d["day"] for d in result["days"]] == [0, 1, 2]
    shown = pd.read_parquet(os.path.join(out, "shown.parquet"))
    world = SimulationWorld(TINY_WORLD, seed=3, days=2)
    for entry in result["days"]:
        day = shown[shown["day"] == entry["day"]]
        assert entry["recommendations"] == 300 * config.slots == day["impressions"].sum()
        assert np.all(day["clicks"] <= day["impressions"])
        assert entry["clicks"] == day["clicks"].sum()
        assert entry["rpm"] == pytest.approx(1000 * (day["clicks"] * day["cpc"]).sum() / 900)
        assert entry["regret_per_1000"] >= -1e-9 or entry["day"] > 0
        # Only live targets are shown, within budget (+ at most one context's round).
        assert set(day["target"]) <= set(world.pool(entry["day"]))
        per_target = day.groupby("target")["impressions"].sum()
        assert per_target.max() <= world.daily_budget(config.slots) + 300 * config.slots / 4
    assert isinstance(result["summary"]["throughput"], int)
    # Each day's logs went through Beam, and day 1's model was warm-started from day 0's.
    logs = pd.read_parquet(os.path.join(out, "logs", "day_001.parquet"))
    assert len(logs) == len(shown[shown["day"] == 1])
    assert {"target_id", "title", "publisher_id", "clicks", "impressions", "cpc"} <= set(logs)
    with open(os.path.join(out, "data", "day_001", "metadata.json")) as fh:
        metadata = json.load(fh)
    assert metadata["rows_aggregated"] == len(shown[shown["day"] <= 1])
    with open(os.path.join(out, "runs", "day_001", "config.json")) as fh:
        run = json.load(fh)
    assert run["warm_start"]["embeddings"]["feature_encoder/encode_target_id"]["rows_copied"] > 1
    assert set(result["seconds"]) >= {"total", "serve", "preprocess", "train"}


@pytest.mark.slow
def test_day_zero_is_the_same_random_day_for_every_policy(tiny_run, tmp_path):
    _, _, ucb = tiny_run
    config = SimulationConfig(out_dir=str(tmp_path), days=1, seed=3, policy="vw-epsilon")
    vw = simulate(config, TINY_WORLD, progress=False, preprocess=run_with)
    assert vw["days"][0] == ucb["days"][0]
    assert vw["seconds"].get("train", 0.0) == 0.0  # VW learns online, no retraining
    assert vw["days"][1]["recommendations"] == 900


def test_cli_simulate(tmp_path, capsys):
    out = str(tmp_path / "sim")
    assert cli.main(["simulate", "--out_dir", out, "--days", "1", "--policy", "random",
                     "--publishers", "2", "--pool_size", "10", "--requests_per_day", "100",
                     "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "random: RPM" in printed and "targets throughput" in printed
    assert os.path.exists(os.path.join(out, "days.png"))
    with open(os.path.join(out, "result.json")) as fh:
        assert json.load(fh)["config"]["policy"] == "random"


@pytest.mark.parametrize("policy", ["random", "vw-squarecb"])
def test_model_free_simulations_are_deterministic(policy, tmp_path):
    """Same seed, same world, traffic, choices and clicks; another seed differs."""
    def run(seed, name):
        config = SimulationConfig(out_dir=str(tmp_path / name), days=2, seed=seed,
                                  policy=policy)
        return simulate(config, TINY_WORLD, progress=False, preprocess=run_with)["days"]

    first, again, other = run(5, "a"), run(5, "b"), run(6, "c")
    assert first == again
    assert first != other


def test_posterior_thompson_without_a_model_is_deterministic_and_fits_its_evidence(tmp_path):
    """Count-only Thompson (global pooled-CTR prior): same seed, same run; the prior
    strength and history decay are fitted by empirical Bayes from day 0 on and recorded;
    the realised-CTR RPM is the shown pairs' realised CTR x CPC per 1000."""
    def run(name):
        config = SimulationConfig(out_dir=str(tmp_path / name), days=2, seed=4,
                                  policy="posterior_ts", prior="global")
        return simulate(config, TINY_WORLD, progress=False, preprocess=run_with)

    first, again = run("a"), run("b")
    assert first["days"] == again["days"] and first["label"] == "global-prior posterior_ts"
    assert set(first["evidence_fits"]) == {0, 1, 2}
    day1 = first["days"][1]
    fit0 = first["evidence_fits"][0]
    assert (day1["prior_strength"], day1["history_decay"]) == (fit0["strength"], fit0["decay"])
    shown = pd.read_parquet(tmp_path / "a" / "shown.parquet")
    for entry in first["days"]:
        day = shown[shown["day"] == entry["day"]]
        assert entry["realised_ctr_rpm"] == pytest.approx(
            1000 * (day["impressions"] * day["realised_ctr"] * day["cpc"]).sum() / 900)
    assert first["seconds"].get("train", 0.0) == 0.0  # no model


@pytest.mark.slow
def test_posterior_policy_with_a_bbddn_prior_end_to_end(tmp_path):
    config = SimulationConfig(out_dir=str(tmp_path), days=2, seed=3, model="bbddn",
                              policy="posterior_ucb", quantile=0.9, mc_samples=2,
                              first_epochs=1, daily_epochs=1, min_count=5)
    result = simulate(config, TINY_WORLD, progress=False, preprocess=run_with)
    assert result["label"] == "BBDDN posterior_ucb(q=0.9)"
    assert [d["recommendations"] for d in result["days"]] == [900, 900, 900]
    # Day 1 starts at the defaults (no held-out prior on day 0); day 1's fit serves day 2.
    assert (result["days"][1]["prior_strength"], result["days"][1]["history_decay"]) == (1, 0.5)
    fit = result["evidence_fits"][1]
    assert (result["days"][2]["prior_strength"], result["days"][2]["history_decay"]) == (
        fit["strength"], fit["decay"])
    assert np.isfinite(result["summary"]["realised_ctr_rpm"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(policy="greedy", prior="flat"), "needs a posterior policy"),
    (dict(policy="posterior_ts", prior_strength=0.0), "prior_strength must be > 0"),
    (dict(policy="posterior_ts", history_decay=2.0), "history_decay must be in"),
    (dict(policy="posterior_ucb", quantile=1.0), "quantile must be in"),
])
def test_posterior_configuration_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig(out_dir="x", **kwargs)
