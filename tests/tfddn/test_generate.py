"""Tests of `tfddn.generate`: reproducible, consistent logs with a usable ground truth."""

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from tfddn.generate import GenerateConfig, generate
from tfddn.marketplace import Marketplace
from tfddn.spec import load_spec

SMALL = dict(rows=4_000, targets=800, advertisers=150, publishers=40, topics=6, words=200,
             articles=120, days=5, history_length=5)
KEY = ["target_id", "age_days", "publisher_id", "device"]


def _run(root, name, **overrides):
    config = GenerateConfig(out_dir=os.path.join(root, name), **{**SMALL, **overrides})
    return generate(config, progress=False)


def _read_logs(path):
    if path.endswith(".csv"):
        return pd.read_csv(path, keep_default_na=False)
    if path.endswith(".jsonl"):
        with open(path) as fh:
            return pd.DataFrame([json.loads(line) for line in fh])
    return pd.read_parquet(path)


def _bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("generate"))


@pytest.fixture(scope="module")
def d1(root):
    return _run(root, "d1", history=True)


@pytest.fixture(scope="module")
def d2(root):
    return _run(root, "d2", regime="d2", rows=3_000)


@pytest.fixture(scope="module")
def rare(root):
    return _run(root, "rare", regime="rare", rows=50_000)


@pytest.fixture(scope="module")
def rare_imp(root):
    return _run(root, "rare_imp", regime="rare", log_level="impressions", rows=30_000)


def test_same_config_is_byte_identical_and_seed_matters(root, d1):
    again = _run(root, "d1_again", history=True, chunk_rows=997)
    for name in ("logs_path", "ground_truth_path", "spec_path"):
        assert _bytes(getattr(d1, name)) == _bytes(getattr(again, name)), name
    other = _run(root, "d1_seed1", history=True, seed=1)
    a, b = _read_logs(d1.logs_path), _read_logs(other.logs_path)
    assert np.mean(a.target_id.values != b.target_id.values) > 0.9
    assert abs(a.clicks.sum() - b.clicks.sum()) > 0  # a different world, not a relabelling


def test_counts_are_consistent(d1, d2):
    for result in (d1, d2):
        logs = _read_logs(result.logs_path)
        world = json.load(open(result.world_path))["summary"]
        assert len(logs) == result.rows == world["rows"]
        assert (logs.clicks >= 0).all() and (logs.impressions >= 1).all()
        assert (logs.clicks <= logs.impressions).all()
        assert logs.clicks.sum() == result.clicks == world["total_clicks"]
        assert logs.impressions.sum() == result.impressions == world["total_impressions"]
        assert logs.target_id.nunique() == world["distinct_targets"]
        assert logs.advertiser_id.nunique() == world["distinct_advertisers"]
        assert np.mean(logs.impressions < 10) == world["fraction_rows_impressions_lt_10"]
        assert 0.015 < world["mean_empirical_ctr"] < 0.05
        day = (logs.timestamp - 1_767_225_600) // 86_400
        assert day.min() == 0 and day.max() == SMALL["days"] - 1


def test_formats_hold_the_same_rows(root, d1):
    frames = [_read_logs(d1.logs_path)]
    for fmt in ("jsonl", "parquet"):
        frames.append(_read_logs(_run(root, f"d1_{fmt}", history=True, format=fmt).logs_path))
    spec = load_spec(d1.spec_path)
    for feature in spec.by_role("target_tokens", "history"):
        frames[0][feature.name] = frames[0][feature.name].str.split(feature.separator)
    for other in frames[1:]:
        for frame in (frames[0], other):
            for col in ("title", "history"):
                frame[col] = frame[col].map(list)
        pd.testing.assert_frame_equal(frames[0], other, check_dtype=False)


def test_impression_log_expands_the_aggregated_pair_days(root, d1):
    agg = _read_logs(d1.logs_path)
    imp_result = _run(root, "d1_imp", history=True, log_level="impressions",
                      rows=int(agg.impressions.sum()), chunk_rows=5_000)
    imp = _read_logs(imp_result.logs_path)
    assert len(imp) == imp_result.rows == agg.impressions.sum()
    assert set(imp.clicked) <= {0, 1}
    pair = np.repeat(np.arange(len(agg)), agg.impressions.values)
    for col in ("target_id", "publisher_id", "device", "history", "age_days", "cpc"):
        np.testing.assert_array_equal(imp[col].values, agg[col].values[pair])
    np.testing.assert_array_equal(imp.timestamp.values // 86_400,
                                  agg.timestamp.values[pair] // 86_400)
    np.testing.assert_array_equal(np.bincount(pair, imp.clicked.values), agg.clicks.values)
    truncated = _run(root, "d1_imp_cut", history=True, log_level="impressions",
                     rows=int(agg.impressions.sum()) - 3)
    assert len(_read_logs(truncated.logs_path)) == agg.impressions.sum() - 3
    assert _bytes(imp_result.ground_truth_path) == _bytes(d1.ground_truth_path)


def test_d2_rows_are_significant_and_d1_rows_noisy(d1, d2):
    n1 = _read_logs(d1.logs_path).impressions
    n2 = _read_logs(d2.logs_path).impressions
    assert 2 <= n1.median() <= 6
    assert np.mean(n1 == 1) > 0.15
    assert n1.max() > 20 * n1.median()  # heavy tail
    assert n2.min() >= 300 and n2.median() >= 400
    assert n2.median() > 50 * n1.median()
    assert n2.max() > 5 * n2.median()


def test_data_noise_varies_strongly_across_advertisers(d2):
    truth = pd.read_parquet(d2.ground_truth_path)
    per_advertiser = truth.groupby("advertiser_id").true_data_stddev.mean()
    p10, p90 = np.percentile(per_advertiser, [10, 90])
    assert p90 / p10 > 3


def test_empirical_ctr_matches_true_mean(d2):
    logs = _read_logs(d2.logs_path)
    truth = pd.read_parquet(d2.ground_truth_path)
    assert not truth.duplicated(KEY).any()
    joined = logs.merge(truth[KEY + ["true_ctr_mean", "true_data_stddev"]], on=KEY,
                        how="left", validate="many_to_one")
    assert joined.true_ctr_mean.notna().all()
    # Without history the tuple is the pair-day key: rows of one pair-day share one
    # realised CTR, so pool them before adding the data noise (Var = N^2 s^2 per pair-day).
    pairs = joined.groupby(KEY).agg(clicks=("clicks", "sum"), n=("impressions", "sum"),
                                    m=("true_ctr_mean", "first"),
                                    s=("true_data_stddev", "first"))
    n, m, s = pairs.n, pairs.m, pairs.s
    pairs["var"] = n * m * (1 - m) + n ** 2 * s ** 2  # binomial + data noise
    pairs["expected"] = n * m
    pairs["bucket"] = pd.qcut(m, 5, labels=False)
    for _, group in [("all", pairs)] + list(pairs.groupby("bucket")):
        gap = group.clicks.sum() - group.expected.sum()
        assert abs(gap) < 4 * np.sqrt(group["var"].sum()), (gap, np.sqrt(group["var"].sum()))
    assert np.corrcoef(pairs.clicks / n, m)[0, 1] > 0.3


def test_rare_values_exist(d1):
    rows_per_target = _read_logs(d1.logs_path).target_id.value_counts()
    assert np.mean(rows_per_target < 3) > 0.4
    assert rows_per_target.max() > 30


def test_history_driver_positions_point_at_the_target_topic(d1):
    truth = pd.read_parquet(d1.ground_truth_path)
    world = Marketplace(GenerateConfig(out_dir="x", **SMALL, history=True).world_config())
    topics = world.names("topic")
    pos = truth.history_driver_position.values
    assert pos.min() >= -1 and pos.max() < SMALL["history_length"]
    assert 0.3 < np.mean(pos >= 0) < 0.4
    for history, target_topic, p in zip(truth.history, truth.target_topic, pos):
        item_topics = [topics[world.article_topic[int(a[1:])]] for a in history]
        assert len(item_topics) == SMALL["history_length"]
        assert item_topics.count(target_topic) == (p >= 0)
        if p >= 0:
            assert item_topics[p] == target_topic
    planted = truth.true_ctr_mean[pos >= 0].mean() / truth.true_ctr_mean[pos < 0].mean()
    assert planted > 1.5


def test_spec_names_exactly_the_written_columns(root, d1, d2, rare, rare_imp):
    imp = _run(root, "d2_imp", regime="d2", log_level="impressions", rows=500)
    for result in (d1, d2, imp, rare, rare_imp):
        spec = load_spec(result.spec_path)
        assert list(spec.raw_columns) == list(_read_logs(result.logs_path).columns)
        truth = pd.read_parquet(result.ground_truth_path).columns
        assert list(truth[: len(spec.features)]) == list(spec.feature_names)
    assert load_spec(imp.spec_path).clicked == "clicked"
    assert load_spec(d1.spec_path).feature("history").max_length == SMALL["history_length"]
    assert load_spec(d1.spec_path).feature("target_id").min_count == 10
    assert load_spec(d2.spec_path).feature("target_id").min_count == 1000
    assert "user_id" not in load_spec(d1.spec_path).feature_names
    user = load_spec(rare.spec_path).feature("user_id")
    assert (user.role, user.min_count) == ("context_categorical", 10)


def test_world_json_records_true_importance(d1):
    world = json.load(open(d1.world_path))
    assert world["config"] == {**dataclasses.asdict(GenerateConfig(
        out_dir=d1.out_dir, **SMALL, history=True))}
    features = world["true_importance"]["features"]
    assert set(features) >= {"target_id", "advertiser_id", "history", "title", "age_days"}
    total = sum(f["variance"] for f in features.values())
    assert 0.5 < total / world["true_importance"]["logit_variance"] < 2.0
    noise = world["noise_importance"]["features"]
    assert max(noise, key=lambda k: noise[k]["share"]) == "advertiser_id"


@pytest.mark.parametrize("field, value, shown", [
    ("rows", 0, "rows=0"), ("regime", "d3", "regime='d3'"), ("format", "xml", "format='xml'"),
    ("log_level", "clicks", "log_level='clicks'"), ("seed", -2, "seed=-2"),
    ("words", 3, "words=3"), ("history", "yes", "history='yes'"), ("out_dir", "", "out_dir=''"),
    ("users", 0, "users=0"),
])
def test_config_validation_shows_the_bad_value(field, value, shown):
    with pytest.raises(ValueError, match=shown):
        GenerateConfig(**{"out_dir": "x", **SMALL, field: value})


def test_rare_ctr_is_half_a_percent(rare, rare_imp):
    for result in (rare, rare_imp):
        summary = json.load(open(result.world_path))["summary"]
        assert abs(summary["mean_true_ctr"] - 0.005) < 0.001  # 0.0050-0.0054 over 20 seeds
        assert 0.0035 < result.clicks / result.impressions < 0.0065  # 0.0044-0.0061
    logs = _read_logs(rare.logs_path)
    assert logs.clicks.sum() == rare.clicks and logs.impressions.sum() == rare.impressions
    assert _read_logs(rare_imp.logs_path).clicked.sum() == rare_imp.clicks


def test_rare_rows_have_one_or_two_impressions_after_grouping(rare, rare_imp):
    """Grouped by every feature, as `tfddn preprocess` does, most rows have n = 1-2."""
    for result in (rare, rare_imp):
        logs = _read_logs(result.logs_path)
        groups = logs.groupby(list(load_spec(result.spec_path).feature_names))
        n = groups.impressions.sum() if "impressions" in logs else groups.size()
        assert np.mean(n <= 2) >= 0.8  # 0.830-0.845 over 20 seeds
        assert 0.55 < np.mean(n == 1) < 0.65  # 0.589-0.606
        assert n.max() < 30
    users = _read_logs(rare_imp.logs_path).user_id.value_counts()
    assert np.mean(users <= 2) > 0.6  # 0.72-0.73: most users are seen once or twice,
    assert users.iloc[0] > 300  # 593-760: a few heavy ones repeat (Zipf)


def test_rare_ground_truth_covers_every_tuple_and_depends_on_the_user(rare):
    logs = _read_logs(rare.logs_path)
    truth = pd.read_parquet(rare.ground_truth_path)
    key = [name for name in load_spec(rare.spec_path).feature_names if name != "title"]
    assert "user_id" in key and "user_age_group" in key
    assert not truth.duplicated(key).any()
    assert len(truth) == logs.groupby(key).ngroups
    joined = logs.merge(truth[key + ["true_ctr_mean"]], on=key, how="left",
                        validate="many_to_one")
    assert joined.true_ctr_mean.notna().all()
    world = Marketplace(GenerateConfig(out_dir="x", **{**SMALL, "regime": "rare"})
                        .world_config())
    user = truth.user_id.str[1:].astype(int).values
    assert np.corrcoef(logit(truth.true_ctr_mean), world.user_effect[user])[0, 1] > 0.25
    features = json.load(open(rare.world_path))["true_importance"]["features"]
    assert features["user_id"]["share"] > 0.1  # 0.14-0.24 over 20 seeds
    assert features["user_age_group*target_topic"]["share"] > 0.02  # 0.04-0.11


def test_rare_is_deterministic_per_seed(root):
    first = _run(root, "rare_a", regime="rare", log_level="impressions", rows=20_000)
    again = _run(root, "rare_b", regime="rare", log_level="impressions", rows=20_000,
                 chunk_rows=3_001)
    for name in ("logs_path", "ground_truth_path", "spec_path"):
        assert _bytes(getattr(first, name)) == _bytes(getattr(again, name)), name
    other = _run(root, "rare_seed1", regime="rare", log_level="impressions", rows=20_000,
                 seed=1)
    a, b = _read_logs(first.logs_path), _read_logs(other.logs_path)
    assert np.mean(a.user_id.values != b.user_id.values) > 0.9
