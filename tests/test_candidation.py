"""Candidation (`tfddn rank`): top-N lists from a loaded run and from a served model,
candidate sets per context, score columns, the spec from the server."""

import json

import numpy as np
import pandas as pd
import pytest

from tfddn import data, training
from tfddn.candidation import LoadedModel, ServedModel, candidate_sets, rank
from tfddn.cli.rank import run as rank_main
from tfddn.configs import RankConfig
from tfddn.models.config import ModelConfig
from tfddn.policy import PolicyConfig, make_policy
from tfddn.served import served_spec
from tfddn.tables import read_table

SCORES = ["ctr_mean", "data_stddev", "model_stddev", "total_stddev", "score"]


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


@pytest.fixture(scope="module")
def served(run, tmp_path_factory):
    """The run exported and served by `tfddn serve` (REST and gRPC)."""
    from serving.export import ExportConfig, export_run
    from serving.server import ServerHandle
    from serving.server_config import ServerConfig

    base = str(tmp_path_factory.mktemp("served") / "ddn")
    export_run(ExportConfig(run_dir=run, export_base=base, mc_samples=4))
    handle = ServerHandle.start(ServerConfig(model_name="ddn", model_base_path=base))
    yield handle
    handle.stop()


def _expected(source, spec, candidates, context):
    """Every candidate's predictions in one context."""
    return source.predict(spec, candidates.assign(**{c: context[c] for c in context.index}))


def test_greedy_lists_are_the_best_expected_revenue(run, tables):
    spec, candidates, contexts = tables
    source = LoadedModel(run, mc_samples=2)
    ranked = rank(source, spec, candidates, contexts, make_policy(PolicyConfig("greedy")),
                  top_n=5)
    assert len(ranked) == 4 * 5 and list(ranked["rank"][:5]) == [1, 2, 3, 4, 5]
    for i, context in contexts.iterrows():
        scores = _expected(source, spec, candidates, context)
        np.testing.assert_allclose(scores["model_stddev"], 0.0, atol=1e-6)  # no dropout
        revenue = scores["ctr_mean"] * candidates["cpc"].to_numpy()
        best = np.argsort(-revenue, kind="stable")[:5]
        got = ranked[ranked["context"] == i]
        assert list(got["target_id"]) == list(candidates["target_id"].iloc[best])
        np.testing.assert_allclose(got["ctr_mean"], scores["ctr_mean"][best], rtol=1e-6)
        np.testing.assert_allclose(got["score"], revenue[best], rtol=1e-6)
        np.testing.assert_allclose(got["total_stddev"], scores["data_stddev"][best], rtol=1e-5)
        assert (got["publisher_id"] == context["publisher_id"]).all()


def test_ucb_score_is_mean_plus_c_data_stddev_times_cpc(run, tables):
    spec, candidates, contexts = tables
    source = LoadedModel(run, mc_samples=2)
    ucb = rank(source, spec, candidates, contexts.head(1),
               make_policy(PolicyConfig("ucb", c=3.0, stddev="data")), top_n=25)
    scores = _expected(source, spec, candidates, contexts.iloc[0])
    expected = (scores["ctr_mean"] + 3.0 * scores["data_stddev"]) * candidates["cpc"]
    order = np.argsort(-expected.to_numpy(), kind="stable")
    assert list(ucb["target_id"]) == list(candidates["target_id"].iloc[order])
    np.testing.assert_allclose(ucb["score"], expected.to_numpy()[order], rtol=1e-6)
    np.testing.assert_allclose(ucb["data_stddev"], scores["data_stddev"][order], rtol=1e-6)
    assert np.all(ucb["data_stddev"] > 0)


def test_context_key_ranks_each_context_among_its_own_candidates(run, tables, tmp_path):
    """`--context_key site`: a context only ever gets candidates of its site (ints in the
    Parquet candidates match the CSV's cells), its list is the greedy order of that set,
    and a site without candidates gets no rows."""
    spec, candidates, contexts = tables
    sites, context_sites = np.array([1] * 10 + [2] * 15), [1, 2, 1, 3]
    candidates.assign(site=sites).to_parquet(tmp_path / "candidates.parquet")
    contexts.assign(site=context_sites).to_csv(tmp_path / "contexts.csv", index=False)
    out = str(tmp_path / "top.csv")
    config = RankConfig(candidates=str(tmp_path / "candidates.parquet"),
                        contexts=str(tmp_path / "contexts.csv"), out=out, run_dir=run,
                        policy=PolicyConfig("greedy"), context_key="site", top_n=12,
                        mc_samples=2)
    assert rank_main(config) == 0
    ranked = read_table(out, spec)
    assert sorted(ranked["context"].unique()) == [0, 1, 2]            # site 3: no rows
    assert ranked.groupby("context").size().tolist() == [10, 12, 10]  # min(top_n, set)
    site_of = dict(zip(candidates["target_id"], sites))
    assert (ranked["target_id"].map(site_of) == ranked["site"]).all()
    source = LoadedModel(run, mc_samples=2)
    for i in (0, 1):
        members = candidates[sites == context_sites[i]].reset_index(drop=True)
        scores = _expected(source, spec, members, contexts.iloc[i])
        revenue = scores["ctr_mean"] * members["cpc"].to_numpy()
        best = np.argsort(-revenue, kind="stable")[:12]
        got = ranked[ranked["context"] == i]
        assert list(got["target_id"]) == list(members["target_id"].iloc[best])
        np.testing.assert_allclose(got["score"], revenue[best], rtol=1e-5)
        np.testing.assert_allclose(got["ctr_mean"], scores["ctr_mean"][best], rtol=1e-5)
    assert isinstance(ranked["title"][0], str) and " " in "".join(ranked["title"])


def test_pairs_list_each_contexts_candidates(run, tables, tmp_path):
    spec, candidates, contexts = tables
    contexts = contexts.assign(request=["r0", "r1", "r2", "r3"])
    ids = candidates["target_id"]
    pairs = pd.DataFrame({"request": ["r0", "r0", "r0", "r1", "r1", "r1"],
                          "target_id": [ids[7], ids[3], ids[20], ids[5], ids[9], ids[5]]})
    sets = candidate_sets(candidates, contexts, spec, pairs=pairs, context_id="request")
    assert [list(s) for s in sets] == [[3, 7, 20], [5, 9], [], []]  # repeated pair once
    source = LoadedModel(run, mc_samples=2)
    ranked = rank(source, spec, candidates, contexts, make_policy(PolicyConfig("greedy")),
                  top_n=10, sets=sets)
    assert ranked.groupby("request").size().to_dict() == {"r0": 3, "r1": 2}
    first = ranked[ranked["request"] == "r0"]
    scores = _expected(source, spec, candidates.iloc[[3, 7, 20]], contexts.iloc[0])
    revenue = scores["ctr_mean"] * candidates["cpc"].to_numpy()[[3, 7, 20]]
    np.testing.assert_allclose(first["score"], np.sort(revenue)[::-1], rtol=1e-5)
    # Row numbers name the contexts without an id column (the output's `context`).
    by_row = candidate_sets(candidates, contexts, pairs=pd.DataFrame(
        {"context": [1, 1], "target_id": [ids[0], ids[1]]}))
    assert [list(s) for s in by_row] == [[], [0, 1], [], []]
    with pytest.raises(ValueError, match="unknown candidate.*'nope'"):
        candidate_sets(candidates, contexts, pairs=pd.DataFrame(
            {"request": ["r0"], "target_id": ["nope"]}), context_id="request")
    with pytest.raises(ValueError, match="context key or a pairs table, not both"):
        candidate_sets(candidates, contexts, context_key=("site",), pairs=pairs)
    with pytest.raises(ValueError, match="--context_key or --pairs, not both"):
        RankConfig(candidates="c.csv", contexts="x.csv", out="o.csv", run_dir=run,
                   context_key=("site",), pairs="p.csv")
    with pytest.raises(ValueError, match="either --run_dir"):
        RankConfig(candidates="c.csv", contexts="x.csv", out="o.csv")


def test_served_model_ranks_without_a_spec_file(run, tables, served, tmp_path, capsys):
    """The spec comes from the served model's `spec` signature (REST and gRPC); the
    served lists and scores equal the loaded run's."""
    from serving.client import ServingClient, query_main

    spec, candidates, contexts = tables
    candidates.to_parquet(tmp_path / "candidates.parquet")
    contexts.to_csv(tmp_path / "contexts.csv", index=False)
    files = dict(candidates=str(tmp_path / "candidates.parquet"),
                 contexts=str(tmp_path / "contexts.csv"), policy=PolicyConfig("greedy"),
                 top_n=3, mc_samples=2)
    assert rank_main(RankConfig(out=str(tmp_path / "loaded.csv"), run_dir=run, **files)) == 0
    assert rank_main(RankConfig(out=str(tmp_path / "served.csv"),
                                grpc_target=served.grpc_target, **files)) == 0
    assert "top 3 of 4 contexts" in capsys.readouterr().out
    loaded, over_grpc = (read_table(str(tmp_path / f"{n}.csv"), spec)
                         for n in ("loaded", "served"))
    assert list(over_grpc["target_id"]) == list(loaded["target_id"])
    for column in SCORES:
        np.testing.assert_allclose(over_grpc[column], loaded[column], rtol=1e-5, atol=1e-8)
    client = ServingClient(served.rest_url, served.grpc_target, model_name="ddn")
    try:
        assert served_spec(client, "rest") == spec == ServedModel(client, "grpc").spec()
        # The posterior signature over REST: no counts -> the prior's mean; 1000
        # impressions of 0 clicks pull every posterior mean down.
        cross = candidates.assign(**{c: contexts[c].iloc[0] for c in contexts.columns})
        columns = ServedModel.columns(spec, cross)
        zeros = np.zeros(len(cross), np.float32)
        prior = client.predict({**columns, "clicks": zeros, "impressions": zeros,
                                "quantile": zeros + 0.9}, "posterior", transport="rest")
        after = client.predict({**columns, "clicks": zeros, "impressions": zeros + 1000,
                                "quantile": zeros + 0.9}, "posterior", transport="rest")
    finally:
        client.close()
    deterministic = LoadedModel(run, mc_samples=2).predict(spec, cross)["ctr_mean"]
    np.testing.assert_allclose(prior["posterior_mean"], deterministic, rtol=1e-4)
    assert np.all(prior["ucb_score"] > prior["posterior_mean"])
    assert np.all(after["posterior_mean"] < prior["posterior_mean"])
    # `tfddn query`: the input file's signature_name, unless --signature_name differs.
    request = {"signature_name": "mc_dropout",
               "inputs": {k: list(v[:2]) for k, v in columns.items()}}
    (tmp_path / "request.json").write_text(json.dumps(request))
    query = ["--rest_url", served.rest_url, "--model_name", "ddn",
             "--input_file", str(tmp_path / "request.json")]
    assert query_main(query) == 0 and "model_stddev" in capsys.readouterr().out
    assert query_main([*query, "--signature_name", "mc_dropout"]) == 0
    capsys.readouterr()
    assert query_main([*query, "--signature_name", "serving_default"]) == 2
    assert ("'serving_default' conflicts with the signature_name 'mc_dropout'"
            in capsys.readouterr().err)  # one line, exit status 2


def test_counts_raise_a_proven_pair_under_the_posterior(run, tables, tmp_path):
    """`--counts`: a pair with many clicks rises to the top of its context under
    posterior_ucb and stays unchanged elsewhere; a bad counts file is refused by name."""
    spec, candidates, contexts = tables
    candidates.to_parquet(tmp_path / "candidates.parquet")
    contexts.to_csv(tmp_path / "contexts.csv", index=False)
    files = dict(candidates=str(tmp_path / "candidates.parquet"),
                 contexts=str(tmp_path / "contexts.csv"), run_dir=run, top_n=5,
                 mc_samples=2, policy=PolicyConfig("posterior_ucb", quantile=0.9))
    rank_main(RankConfig(out=str(tmp_path / "prior.csv"), **files))
    prior = read_table(str(tmp_path / "prior.csv"))
    first = prior[prior["context"] == 0]
    # The cheapest-ranked candidate that is not in context 0's list, made a proven winner.
    outsider = next(t for t in candidates.sort_values("cpc", ascending=False)["target_id"]
                    if t not in set(first["target_id"]))
    pd.DataFrame({"target_id": [outsider], "publisher_id": [contexts["publisher_id"][0]],
                  "device": [contexts["device"][0]], "clicks": [600], "impressions": [1000]}
                 ).to_csv(tmp_path / "counts.csv", index=False)
    rank_main(RankConfig(out=str(tmp_path / "post.csv"), counts=str(tmp_path / "counts.csv"),
                         **files))
    post = read_table(str(tmp_path / "post.csv"))
    top = post[post["context"] == 0].iloc[0]
    assert top["target_id"] == outsider and (top["clicks"], top["impressions"]) == (600, 1000)
    assert top["score"] > 0.5 * candidates.set_index("target_id")["cpc"][outsider]
    same_publisher = contexts["publisher_id"] == contexts["publisher_id"][0]
    same_device = contexts["device"] == contexts["device"][0]
    for i in np.flatnonzero(~(same_publisher & same_device)):  # other contexts: no evidence
        assert list(post[post["context"] == i]["target_id"]) == list(
            prior[prior["context"] == i]["target_id"])
    pd.DataFrame({"target_id": ["x"], "clicks": [5], "impressions": [2]}).to_csv(
        tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="counts file .*bad.csv: counts need clicks <= "):
        rank_main(RankConfig(out=str(tmp_path / "x.csv"), counts=str(tmp_path / "bad.csv"),
                             **files))


def test_ope_with_a_served_model_equals_the_loaded_run(run, tables, served, tmp_path):
    """`tfddn ope --grpc_target`: the spec and predictions come from the server; with
    dropout 0 the estimates equal the loaded run's."""
    from tfddn.cli.ope import run as ope_main
    from tfddn.configs import OPEConfig

    spec, candidates, contexts = tables
    rows = []  # every context shows every 5th candidate, uniformly at random: p = 1/25
    for i, context in contexts.iterrows():
        for j in range(i % 5, len(candidates), 5):
            rows.append({**context.to_dict(), **candidates.iloc[j].to_dict(),
                         "propensity": 1 / len(candidates), "clicks": int((i + j) % 3 == 0),
                         "impressions": 1})
    pd.DataFrame(rows).to_parquet(tmp_path / "logs.parquet")
    candidates.to_parquet(tmp_path / "candidates.parquet")
    common = dict(logs=str(tmp_path / "logs.parquet"),
                  candidates=str(tmp_path / "candidates.parquet"),
                  target_key=("target_id",), bootstrap=200, mc_samples=2)
    results = {}
    for name, where in (("loaded", {"run_dir": run}),
                        ("served", {"grpc_target": served.grpc_target})):
        out = str(tmp_path / f"{name}.json")
        assert ope_main(OPEConfig(out=out, **where, **common)) == 0
        results[name] = json.loads(open(out).read())
    assert results["served"]["rows"] == len(rows)
    for estimator, value in results["loaded"]["estimates"].items():
        for key in ("value", "low", "high"):
            assert results["served"]["estimates"][estimator]["ctr"][key] == pytest.approx(
                value["ctr"][key], rel=1e-5, abs=1e-9)
    with pytest.raises(ValueError, match="give either --run_dir"):
        ope_main(OPEConfig(out=None, run_dir=run, grpc_target=served.grpc_target, **common))
