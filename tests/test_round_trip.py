"""generator -> Beam -> tf.data: every click and impression survives the trip."""

import collections
import json
import os

import numpy as np
import pandas as pd
import pytest

from beam import preprocess
from tfddn import cli, data, demo
from tfddn.generate import GenerateConfig, generate


def _read_logs(path: str, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(path, keep_default_na=False)
    if fmt == "parquet":
        return pd.read_parquet(path)
    with open(path) as fh:  # pandas would turn `timestamp` into datetimes
        return pd.DataFrame([json.loads(line) for line in fh])


def _tfrecord_pairs(data_dir):
    """(target, publisher, device, age) -> [clicks, impressions] over every split."""
    spec = data.load_data_spec(data_dir)
    out = collections.Counter()
    for split in ("train", "validation", "eval"):
        ds = data.make_dataset(data.split_files(data_dir, split), spec,
                               data.InputConfig(batch_size=4096, shuffle=False))
        for features, labels in ds:
            keys = zip(features["target_id"].numpy(), features["publisher_id"].numpy(),
                       features["device"].numpy(), features["age_days"].numpy())
            for key, c, n in zip(keys, labels["clicks"].numpy(), labels["impressions"].numpy()):
                key = (key[0].decode(), key[1].decode(), key[2].decode(), float(key[3]))
                out[key + ("clicks",)] += int(c)
                out[key + ("impressions",)] += int(n)
    return out


@pytest.mark.parametrize("log_level, fmt, history", [
    ("aggregated", "csv", False),
    ("impressions", "parquet", True),
    ("aggregated", "jsonl", True),
])
def test_generate_preprocess_read_back_exactly(tmp_path, log_level, fmt, history):
    logs = generate(GenerateConfig(out_dir=str(tmp_path / "logs"), rows=3000, targets=500,
                                   advertisers=50, publishers=30, log_level=log_level,
                                   format=fmt, history=history, seed=3), progress=False)
    out = str(tmp_path / "prep")
    metadata = preprocess.run(["--input", logs.logs_path, "--spec", logs.spec_path,
                               "--out_dir", out])
    assert metadata["rows_read"] == logs.rows
    assert metadata["rows_rejected"] == 0
    assert metadata["rows_aggregated"] == logs.rows
    assert sum(metadata["clicks"].values()) == logs.clicks
    assert sum(metadata["impressions"].values()) == logs.impressions
    assert metadata["split"]["method"] == "time"

    frame = _read_logs(logs.logs_path, fmt)
    if log_level == "impressions":
        frame = frame.assign(clicks=frame["clicked"].astype(int), impressions=1)
    expected = collections.Counter()
    grouped = frame.groupby(["target_id", "publisher_id", "device", "age_days"])
    for (target, publisher, device, age), group in grouped:
        key = (target, publisher, device, float(age))
        expected[key + ("clicks",)] = int(group["clicks"].sum())
        expected[key + ("impressions",)] = int(group["impressions"].sum())
    assert _tfrecord_pairs(out) == +expected


def test_cli_generate_then_preprocess(tmp_path, capsys):
    logs_dir, out = str(tmp_path / "logs"), str(tmp_path / "prep")
    assert cli.main(["generate", "--out_dir", logs_dir, "--rows", "800", "--targets", "100",
                     "--advertisers", "10", "--publishers", "10", "--quiet"]) == 0
    assert cli.main(["preprocess", "--input", f"{logs_dir}/logs.csv", "--spec",
                     f"{logs_dir}/spec.json", "--out_dir", out]) == 0
    printed = capsys.readouterr().out
    assert "rows read                 800" in printed
    metadata = data.read_metadata(out)
    assert metadata["rows_read"] == 800 == metadata["rows_aggregated"]
    # Vocabularies honour min_count (10 training impressions for ids): the rarest
    # target ids of the world are not in the vocabulary and will map to OOV.
    vocab = data.load_vocabulary(out, "target_id")
    assert 0 < len(vocab) == metadata["vocabulary_sizes"]["target_id"]
    train_targets = {t for f, _ in data.make_dataset(  # vocabularies: train + validation
        data.split_files(out, "train") + data.split_files(out, "validation"),
        data.load_data_spec(out), data.InputConfig(shuffle=False)) for t in np.char.decode(
            f["target_id"].numpy().astype(bytes))}
    assert set(vocab) < train_targets


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert demo.main(["--out_dir", str(tmp_path / "demo"), "--rows", "3000",
                      "--direct_num_workers", "1", "--trials", "1", "--epochs", "1",
                      "--sim_days", "1", "--sim_requests", "500",
                      "--model_base_path", str(tmp_path / "saved_models" / "ddn")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("matches metadata") == 3  # train, validation, eval
    assert "coverage_90_randomised" in printed
    assert os.path.exists(tmp_path / "demo" / "runs" / "ddn" / "evaluation" / "metrics.json")
    assert "REST (rows) and gRPC (columns) agree" in printed
    assert "[8/8] explore" in printed and "BBDDN greedy" in printed
    assert "BBDDN posterior_ts" in printed and "vw-squarecb" in printed
    assert os.path.exists(tmp_path / "demo" / "simulation" / "days.png")
    assert "top 10 of" in printed
    assert os.path.exists(tmp_path / "saved_models" / "ddn" / "1" / "saved_model.pb")
    assert "Demo finished" in printed
