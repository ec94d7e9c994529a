"""End to end: `beam.preprocess.run` on small CSV / JSONL / Parquet logs, read back."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from beam_test_utils import (DAY, MARKET_HEADER, MARKET_SPEC, read_examples, read_vocab,
                             write_csv, write_lines)

from beam import preprocess
from beam.split import stable_fraction

# (target_id, title, age, publisher, history, clicks, impressions, cpc, ts)
ROWS = [
    ("t1", "red shoe", 1.5, "p1", "x|y", 1, 10, 0.5, 100),
    ("t1", "red shoe", 1.5, "p1", "x|y", 2, 30, 1.0, 200),   # same key as the row above
    ("t2", "blue hat", 2.0, "p2", "x", 0, 5, 0.25, 300),
    ("t3", "red", 3.0, "p1", "", 1, 1, 2.0, 400),            # t3: 1 impression < min_count 2
    ("t1", "red shoe", 1.5, "p2", "y", 1, 20, 0.5, DAY + 10),
    ("t4", "green", 4.0, "p3", "z", 2, 8, 0.25, 2 * DAY + 5),   # last day -> eval
    ("t1", "red shoe", 1.5, "p1", "x|y", 0, 2, 0.5, 2 * DAY + 6),
]


def _tf_example(target_id, title, age, publisher, history, clicks, impressions, cpc):
    return {"target_id": [target_id], "title": title, "age": [age], "publisher": [publisher],
            "history": history, "clicks": [clicks], "impressions": [impressions], "cpc": [cpc]}


EXPECTED_TRAIN = [
    _tf_example("t1", ["red", "shoe"], 1.5, "p1", ["x", "y"], 3, 40, 0.875),
    _tf_example("t2", ["blue", "hat"], 2.0, "p2", ["x"], 0, 5, 0.25),
    _tf_example("t3", ["red"], 3.0, "p1", [], 1, 1, 2.0),
    _tf_example("t1", ["red", "shoe"], 1.5, "p2", ["y"], 1, 20, 0.5),
]
EXPECTED_EVAL = [
    _tf_example("t4", ["green"], 4.0, "p3", ["z"], 2, 8, 0.25),
    _tf_example("t1", ["red", "shoe"], 1.5, "p1", ["x", "y"], 0, 2, 0.5),
]


def _sorted(examples):
    return sorted(examples, key=lambda e: json.dumps(e, sort_keys=True))


def _write_inputs(folder):
    """The same logs as CSV, JSONL (real lists) and Parquet (lists, int timestamps)."""
    csv_path = write_csv(folder / "logs.csv", MARKET_HEADER, ROWS)
    records = [dict(zip(MARKET_HEADER, row)) for row in ROWS]
    for record in records:
        record["title"] = record["title"].split()
        record["history"] = [h for h in record["history"].split("|") if h]
    jsonl_path = write_lines(folder / "logs.jsonl", [json.dumps(r) for r in records])
    parquet_path = folder / "logs.parquet"
    pd.DataFrame(records).to_parquet(parquet_path)
    return {"csv": csv_path, "jsonl": jsonl_path, "parquet": str(parquet_path)}


@pytest.fixture(scope="module")
def market_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("market")
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps(MARKET_SPEC))
    runs = {}
    for fmt, path in _write_inputs(root).items():
        output = str(root / f"out_{fmt}")
        runs[fmt] = (preprocess.run(["--input", path, "--spec", str(spec_path),
                                     "--out_dir", output, "--num_shards", "2",
                                     "--validation_fraction", "0"]), output)
    return runs


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_examples_and_totals_per_format(fmt, market_runs):
    metadata, output = market_runs[fmt]
    assert read_examples(output, "train") == _sorted(EXPECTED_TRAIN)
    assert read_examples(output, "eval") == _sorted(EXPECTED_EVAL)
    assert (metadata["rows_read"], metadata["rows_aggregated"], metadata["rows_rejected"]) == (
        7, 7, 0)
    assert metadata["examples"] == {"train": 4, "validation": 0, "eval": 2}
    assert metadata["clicks"] == {"train": 5, "validation": 0, "eval": 2}
    assert metadata["impressions"] == {"train": 66, "validation": 0, "eval": 10}
    assert metadata["input_format"] == fmt
    assert len(metadata["files"]["train"]) == 2


def test_vocabularies_from_train_with_min_count(market_runs):
    metadata, output = market_runs["csv"]
    assert read_vocab(output, "target_id") == ["t1", "t2"]        # t3 (1 impression) -> OOV
    assert read_vocab(output, "title") == ["red", "shoe", "blue", "hat"]  # 61, 60, 5, 5
    assert read_vocab(output, "publisher") == ["p1", "p2"]        # p3 only in eval
    assert read_vocab(output, "history") == ["y", "x"]            # 60, 45
    assert metadata["vocabulary_sizes"] == {"target_id": 2, "title": 4, "publisher": 2,
                                            "history": 2}


def test_numeric_stats_split_and_spec(market_runs):
    metadata, output = market_runs["csv"]
    stats = metadata["numeric_stats"]["age"]
    assert stats["mean"] == pytest.approx(2.0)
    assert stats["std"] == pytest.approx((1.5 / 4) ** 0.5)
    assert (stats["min"], stats["max"], stats["count"]) == (1.5, 3.0, 4)
    split = metadata["split"]
    assert (split["method"], split["first_eval_bucket"], split["num_time_buckets"]) == (
        "time", 2, 3)
    with open(os.path.join(output, "spec.json")) as fh:
        assert json.load(fh) == metadata["spec"]


def test_impression_level_logs_aggregate_to_the_same_examples(tmp_path, run_preprocess):
    header = [c for c in MARKET_HEADER if c not in ("clicks", "impressions")] + ["clicked"]
    rows = []
    for *features, clicks, impressions, cpc, ts in ROWS:
        for i in range(impressions):
            clicked = ["1", "true", "True"][i % 3] if i < clicks else ["0", "false"][i % 2]
            rows.append((*features, cpc, ts, clicked))
    spec = {**MARKET_SPEC, "log_format": "impressions", "clicked": "clicked"}
    del spec["clicks"], spec["impressions"]
    metadata, output = run_preprocess(write_csv(tmp_path / "imps.csv", header, rows), spec,
                                      "--validation_fraction", "0")
    assert metadata["rows_read"] == metadata["rows_aggregated"] == 76
    assert read_examples(output, "train") == _sorted(EXPECTED_TRAIN)
    assert read_examples(output, "eval") == _sorted(EXPECTED_EVAL)
    assert metadata["impressions"] == {"train": 66, "validation": 0, "eval": 10}


def test_validation_split_is_a_stable_hash_of_the_train_keys(tmp_path, run_preprocess):
    path = _write_inputs(tmp_path)["csv"]
    fraction = 0.5
    metadata, output = run_preprocess(path, MARKET_SPEC, "--validation_fraction",
                                      str(fraction))
    train, validation = read_examples(output, "train"), read_examples(output, "validation")
    assert _sorted(train + validation) == _sorted(EXPECTED_TRAIN)  # nothing lost or doubled
    assert read_examples(output, "eval") == _sorted(EXPECTED_EVAL)
    assert 0 < len(validation) < len(EXPECTED_TRAIN)  # this fraction splits these keys
    _, again = run_preprocess(path, MARKET_SPEC, "--validation_fraction", str(fraction),
                              name="again")
    assert read_examples(again, "validation") == validation  # deterministic
    assert metadata["examples"] == {"train": len(train), "validation": len(validation),
                                    "eval": 2}
    assert metadata["split"]["validation_fraction"] == fraction
    # Vocabularies and statistics still cover every training example, validation included.
    assert read_vocab(output, "title") == ["red", "shoe", "blue", "hat"]
    assert metadata["numeric_stats"]["age"]["count"] == 4


USER_SPEC = {
    "name": "user", "clicks": "clk", "impressions": "imps",
    "features": {"ad": {"role": "target_categorical", "dtype": "int64"},
                 "site": {"role": "context_categorical", "min_count": 3},
                 "ua_device": {"role": "context_categorical"}},
}


def test_user_style_csv_with_own_columns_and_hash_split(tmp_path, run_preprocess):
    header = ["day", "ua_device", "clk", "site", "imps", "ad", "extra"]
    rows = [(d, device, (ad * d) % 3, f"s{ad % 4}", 3 + ad % 5, 1000 + ad, "ignored")
            for d in range(2) for ad in range(30) for device in ("mobile", "desktop")]
    path = write_csv(tmp_path / "user.csv", header, rows)
    first, output = run_preprocess(path, USER_SPEC, "--eval_fraction", "0.3", name="a")
    again, _ = run_preprocess(path, USER_SPEC, "--eval_fraction", "0.3", name="b")

    assert first["rows_read"] == first["rows_aggregated"] == 120
    assert sum(first["examples"].values()) == 60  # the two days share a key: no timestamp
    assert sum(first["clicks"].values()) == sum(r[2] for r in rows)
    assert sum(first["impressions"].values()) == sum(r[4] for r in rows)
    assert first["split"]["method"] == "hash" and first["split"]["eval_fraction"] == 0.3
    assert 0 < first["examples"]["eval"] < 60
    assert (again["examples"], again["clicks"]) == (first["examples"], first["clicks"])
    train = read_examples(output, "train")
    assert all(isinstance(e["ad"][0], int) and e["ad"][0] >= 1000 for e in train)
    assert set(train[0]) == {"ad", "site", "ua_device", "clicks", "impressions"}
    expected_eval = sorted(  # eval = keys whose MD5 fraction is below eval_fraction
        (ad, site, device) for _, device, _, site, _, ad, _ in rows[:60]
        if stable_fraction(json.dumps([None, ad, site, device], separators=(",", ":"))) < 0.3)
    eval_keys = sorted((e["ad"][0], e["site"][0], e["ua_device"][0])
                       for e in read_examples(output, "eval"))
    assert eval_keys == expected_eval
    vocab_ad = read_vocab(output, "ad")
    assert len(vocab_ad) == first["vocabulary_sizes"]["ad"] and vocab_ad[0].isdigit()


def test_single_time_bucket_falls_back_to_hash_split(tmp_path, run_preprocess):
    rows = [(f"t{i}", "a", 1.0, "p", "", 1, 2, 0.5, 60 * i) for i in range(40)]
    metadata, _ = run_preprocess(write_csv(tmp_path / "day.csv", MARKET_HEADER, rows),
                                 MARKET_SPEC, "--eval_fraction", "0.5")
    assert metadata["split"]["method"] == "hash"
    assert "only 1 time bucket" in metadata["split"]["reason"]
    assert sum(metadata["examples"].values()) == 40
    assert 0 < metadata["examples"]["eval"] < 40


def test_refuses_to_mix_runs_without_overwrite(tmp_path, run_preprocess):
    path = write_csv(tmp_path / "logs.csv", MARKET_HEADER, ROWS)
    run_preprocess(path, MARKET_SPEC, name="same")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_preprocess(path, MARKET_SPEC, name="same")
    metadata, _ = run_preprocess(path, MARKET_SPEC, "--overwrite", name="same")
    assert metadata["rows_read"] == 7


def test_missing_spec_column_fails_before_running(tmp_path, run_preprocess):
    path = write_csv(tmp_path / "logs.csv", [c for c in MARKET_HEADER if c != "cpc"],
                     [row[:7] + row[8:] for row in ROWS])
    with pytest.raises(ValueError, match="'cpc'"):
        run_preprocess(path, MARKET_SPEC)


def test_help_lists_the_flags():
    out = subprocess.run([sys.executable, "-m", "beam.preprocess", "--help"], check=True,
                         capture_output=True, text=True, cwd=os.path.dirname(
                             os.path.dirname(os.path.dirname(__file__)))).stdout
    for flag in ("--input", "--input_format", "--spec", "--out_dir", "--eval_fraction",
                 "--eval_buckets", "--num_shards", "--overwrite", "--runner"):
        assert flag in out
