"""Candidation (`tfddn rank`): top-N lists from a loaded run and from a served model."""

import os

import numpy as np
import pandas as pd
import pytest

from tfddn import cli, data, training
from tfddn.candidation import LoadedModel, ServedModel, rank, read_table
from tfddn.models.config import ModelConfig
from tfddn.policy import PolicyConfig, make_policy


@pytest.fixture(scope="module")
def run(tiny_marketplace, tmp_path_factory):
    """A DDN without dropout: MC passes agree, so rankings are deterministic."""
    run_dir = str(tmp_path_factory.mktemp("rank") / "run")
    training.train(training.TrainConfig(data_dir=tiny_marketplace["data_dir"], run_dir=run_dir,
                                        epochs=1, verbose=0),
                   ModelConfig(kind="ddn", dropout=0.0, embedding_dim=8, tower_units=(16,),
                               fusion_units=(16,)))
    return run_dir


@pytest.fixture(scope="module")
def tables(tiny_marketplace):
    """Candidates and contexts taken from the generated logs."""
    logs = pd.read_csv(tiny_marketplace["logs"].logs_path, keep_default_na=False)
    spec = data.load_data_spec(tiny_marketplace["data_dir"])
    target = [f.name for f in spec.features if f.tower == "target"]
    context = [f.name for f in spec.features if f.tower == "context"]
    candidates = logs.drop_duplicates("target_id").head(25)[target + ["cpc"]]
    contexts = logs.drop_duplicates(context).head(4)[context]
    return spec, candidates.reset_index(drop=True), contexts.reset_index(drop=True)


def test_greedy_lists_are_the_best_expected_revenue(run, tables):
    spec, candidates, contexts = tables
    source = LoadedModel(run, mc_samples=2)
    ranked = rank(source, spec, candidates, contexts, make_policy(PolicyConfig("greedy")),
                  top_n=5)
    assert len(ranked) == 4 * 5 and list(ranked["rank"][:5]) == [1, 2, 3, 4, 5]
    for i, context in contexts.iterrows():
        cross = candidates.assign(**{c: context[c] for c in contexts.columns})
        scores = source.predict(spec, cross)
        np.testing.assert_allclose(scores["model_stddev"], 0.0, atol=1e-6)  # no dropout
        best = np.argsort(-scores["ctr_mean"] * candidates["cpc"].to_numpy(), kind="stable")
        got = ranked[ranked["context"] == i]
        assert list(got["target_id"]) == list(candidates["target_id"].iloc[best[:5]])
        np.testing.assert_allclose(got["ctr_mean"], scores["ctr_mean"][best[:5]], rtol=1e-6)
        assert (got["publisher_id"] == context["publisher_id"]).all()


def test_ucb_ranks_by_mean_plus_c_data_stddev_times_cpc(run, tables):
    spec, candidates, contexts = tables
    source = LoadedModel(run, mc_samples=1)
    ucb = rank(source, spec, candidates, contexts.head(1),
               make_policy(PolicyConfig("ucb", c=3.0, stddev="data")), top_n=25)
    cross = candidates.assign(**{c: contexts[c].iloc[0] for c in contexts.columns})
    scores = source.predict(spec, cross)
    expected = (scores["ctr_mean"] + 3.0 * scores["data_stddev"]) * candidates["cpc"]
    order = np.argsort(-expected.to_numpy(), kind="stable")
    assert list(ucb["target_id"]) == list(candidates["target_id"].iloc[order])
    assert np.all(ucb["data_stddev"] > 0)


def test_cli_rank_from_a_run_and_from_a_served_model(run, tables, tmp_path):
    from serving.client import ServingClient
    from serving.export import ExportConfig, export_run
    from serving.server import ServerHandle
    from serving.server_config import ServerConfig

    spec, candidates, contexts = tables
    candidates.to_parquet(tmp_path / "candidates.parquet")
    contexts.to_csv(tmp_path / "contexts.csv", index=False)
    out = str(tmp_path / "top.csv")
    assert cli.main(["rank", "--candidates", str(tmp_path / "candidates.parquet"),
                     "--contexts", str(tmp_path / "contexts.csv"), "--run_dir", run,
                     "--out", out, "--policy", "greedy", "--top_n", "3"]) == 0
    loaded = read_table(out)
    assert len(loaded) == 12 and set(loaded["rank"]) == {1, 2, 3}
    assert isinstance(loaded["title"][0], str)  # token lists joined as in the logs

    base = str(tmp_path / "export")
    export_run(ExportConfig(run_dir=run, export_base=base, mc_samples=4))
    handle = ServerHandle.start(ServerConfig(model_name="ddn", model_base_path=base))
    try:
        client = ServingClient(handle.rest_url, handle.grpc_target, model_name="ddn")
        served = rank(ServedModel(client, "grpc"), spec, candidates, contexts,
                      make_policy(PolicyConfig("greedy")), top_n=3)
        # The posterior signature over REST: no counts -> the prior's mean; 1000
        # impressions of 0 clicks pull every posterior mean down.
        cross = candidates.assign(**{c: contexts[c].iloc[0] for c in contexts.columns})
        columns = ServedModel.columns(spec, cross)
        zeros = np.zeros(len(cross), np.float32)
        prior = client.predict({**columns, "clicks": zeros, "impressions": zeros,
                                "quantile": zeros + 0.9}, "posterior", transport="rest")
        after = client.predict({**columns, "clicks": zeros, "impressions": zeros + 1000,
                                "quantile": zeros + 0.9}, "posterior", transport="rest")
        deterministic = LoadedModel(run, mc_samples=1).predict(spec, cross)["ctr_mean"]
    finally:
        handle.stop()
    np.testing.assert_allclose(prior["posterior_mean"], deterministic, rtol=1e-4)
    assert np.all(prior["ucb_score"] > prior["posterior_mean"])
    assert np.all(after["posterior_mean"] < prior["posterior_mean"])
    assert list(served["target_id"]) == list(loaded["target_id"])
    np.testing.assert_allclose(served["ctr_mean"], loaded["ctr_mean"], rtol=1e-5)
    with pytest.raises(SystemExit, match="either --run_dir"):
        cli.main(["rank", "--candidates", "a.csv", "--contexts", "b.csv", "--out", out])
    with pytest.raises(ValueError, match="columns missing"):
        rank(LoadedModel(run), spec, candidates.drop(columns=["title"]), contexts,
             make_policy(PolicyConfig("greedy")))
    assert os.path.exists(out)


def test_cli_rank_with_counts_explores_by_the_posterior(run, tables, tmp_path):
    """`tfddn rank --counts`: a pair with many clicks rises to the top of its context under
    posterior_ucb and stays unchanged elsewhere; a bad counts file is refused by name."""
    spec, candidates, contexts = tables
    candidates.to_parquet(tmp_path / "candidates.parquet")
    contexts.to_csv(tmp_path / "contexts.csv", index=False)
    args = ["rank", "--candidates", str(tmp_path / "candidates.parquet"), "--contexts",
            str(tmp_path / "contexts.csv"), "--run_dir", run, "--policy", "posterior_ucb",
            "--quantile", "0.9", "--top_n", "5", "--mc_samples", "2"]
    assert cli.main([*args, "--out", str(tmp_path / "prior.csv")]) == 0
    prior = read_table(str(tmp_path / "prior.csv"))
    first = prior[prior["context"] == 0]
    # The cheapest-ranked candidate that is not in context 0's list, made a proven winner.
    outsider = next(t for t in candidates.sort_values("cpc", ascending=False)["target_id"]
                    if t not in set(first["target_id"]))
    pd.DataFrame({"target_id": [outsider], "publisher_id": [contexts["publisher_id"][0]],
                  "device": [contexts["device"][0]], "clicks": [600], "impressions": [1000]}
                 ).to_csv(tmp_path / "counts.csv", index=False)
    assert cli.main([*args, "--out", str(tmp_path / "post.csv"), "--counts",
                     str(tmp_path / "counts.csv")]) == 0
    post = read_table(str(tmp_path / "post.csv"))
    top = post[post["context"] == 0].iloc[0]
    assert top["target_id"] == outsider and (top["clicks"], top["impressions"]) == (600, 1000)
    same_publisher = contexts["publisher_id"] == contexts["publisher_id"][0]
    same_device = contexts["device"] == contexts["device"][0]
    for i in np.flatnonzero(~(same_publisher & same_device)):  # other contexts: no evidence
        assert list(post[post["context"] == i]["target_id"]) == list(
            prior[prior["context"] == i]["target_id"])
    pd.DataFrame({"target_id": ["x"], "clicks": [5], "impressions": [2]}).to_csv(
        tmp_path / "bad.csv", index=False)
    with pytest.raises(SystemExit, match="counts file .*bad.csv: counts need clicks <= "):
        cli.main([*args, "--out", str(tmp_path / "x.csv"), "--counts", str(tmp_path / "bad.csv")])
