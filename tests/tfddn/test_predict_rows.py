"""`tfddn predict`: per-row predictions of a split and of a raw file (`tfddn.predict`)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tfddn import data, training
from tfddn.candidation import mc_predictions
from tfddn.cli.predict import run
from tfddn.configs import PredictConfig
from tfddn.models.config import ModelConfig
from tfddn.predict import iter_predictions, predictive_quantiles, quantile_column
from tfddn.tables import feature_columns, read_table

PREDICTED = ["ctr_mean", "data_stddev", "model_stddev", "total_stddev", "q05", "q50", "q95"]
SMALL = dict(embedding_dim=8, tower_units=(16,), fusion_units=(16,), dropout=0.2)


def _train(data_dir, run_dir, kind):
    training.train(training.TrainConfig(data_dir=data_dir, run_dir=run_dir, epochs=1,
                                        verbose=0), ModelConfig(kind=kind, **SMALL))
    return run_dir


@pytest.fixture(scope="module")
def ddn(tiny_marketplace, tmp_path_factory):
    return _train(tiny_marketplace["data_dir"], str(tmp_path_factory.mktemp("p") / "ddn"), "ddn")


@pytest.fixture(scope="module")
def reg(tiny_marketplace, tmp_path_factory):
    return _train(tiny_marketplace["data_dir"], str(tmp_path_factory.mktemp("p") / "reg"), "reg")


def test_split_and_raw_file_give_identical_numbers(ddn, tiny_marketplace, tmp_path, capsys):
    """The eval split to CSV (token lists joined as logged), that CSV back in as a raw
    file: the same rows, seed and batch size give the same numbers, to the last bit."""
    spec = data.load_data_spec(tiny_marketplace["data_dir"])
    split_out, raw_out = str(tmp_path / "split.csv"), str(tmp_path / "raw.parquet")
    assert run(PredictConfig(run_dir=ddn, out=split_out, mc_samples=8, batch_size=128)) == 0
    assert "ctr_mean, data_stddev, model_stddev, total_stddev, q05, q50, q95" in \
        capsys.readouterr().out
    split = read_table(split_out, spec)
    examples = data.read_metadata(tiny_marketplace["data_dir"])["examples"]["eval"]
    assert len(split) == examples > 128  # more than one batch
    assert list(split.columns) == [*spec.feature_names, "clicks", "impressions", "cpc",
                                   *PREDICTED]
    assert split["title"].map(lambda cell: isinstance(cell, str)).all()  # "w1 w2", as logged
    assert split["title"].str.contains(" ").any()
    run(PredictConfig(run_dir=ddn, out=raw_out, input=split_out, mc_samples=8,
                      batch_size=128, keep_columns=("clicks",)))
    raw = pd.read_parquet(raw_out)
    assert list(raw.columns) == [*spec.feature_names, "clicks", *PREDICTED]
    assert list(raw["title"][0]) == split["title"][0].split(" ")  # Parquet keeps lists
    for column in PREDICTED:  # the model's float32 outputs (the CSV's shortest repr)
        exact = np.float32 if column in PREDICTED[:4] else np.float64
        np.testing.assert_array_equal(raw[column].astype(exact), split[column].astype(exact),
                                      err_msg=column)
    np.testing.assert_array_equal(raw["clicks"], split["clicks"])
    # The decomposition: total^2 = data^2 + model^2, dropout gives a model stddev.
    np.testing.assert_allclose(split["total_stddev"], np.hypot(split["data_stddev"],
                                                               split["model_stddev"]),
                               rtol=1e-5)
    assert (split["model_stddev"] > 0).mean() > 0.99
    assert np.all(split["q05"] < split["q50"]) and np.all(split["q50"] < split["q95"])
    # Another seed draws other dropout masks: other model stddevs, the same mean roughly.
    other = pd.concat(iter_predictions(PredictConfig(run_dir=ddn, out=raw_out, mc_samples=8,
                                                     batch_size=128, seed=1)))
    assert not np.allclose(other["model_stddev"], split["model_stddev"])
    np.testing.assert_allclose(other["ctr_mean"], split["ctr_mean"], atol=0.01)


def test_reg_rows_have_the_mean_and_model_stddev_of_the_library(reg, tiny_marketplace,
                                                                 tmp_path):
    """A raw JSONL file of logged rows through REG: only `ctr_mean` and `model_stddev`,
    equal to `mc_predictions` over the same rows with the same dropout seed."""
    from tfddn.uncertainty import seed_dropout

    spec = data.load_data_spec(tiny_marketplace["data_dir"])
    logs = pd.read_csv(tiny_marketplace["logs"].logs_path, keep_default_na=False).head(50)
    logs.to_json(tmp_path / "rows.jsonl", orient="records", lines=True)
    out = str(tmp_path / "reg.csv")
    run(PredictConfig(run_dir=reg, out=out, input=str(tmp_path / "rows.jsonl"),
                      mc_samples=4, batch_size=64, seed=3))
    rows = read_table(out, spec)
    assert list(rows.columns) == [*spec.feature_names, "ctr_mean", "model_stddev"]
    model, model_config, _ = training.load_run(reg)
    seed_dropout(model, 3)
    parts, _ = mc_predictions(model, model_config, spec, feature_columns(spec, logs), 4)
    np.testing.assert_allclose(rows["ctr_mean"], parts["ctr_mean"], rtol=1e-6)
    np.testing.assert_allclose(rows["model_stddev"], parts["model_stddev"], rtol=1e-5,
                               atol=1e-9)
    assert (rows["model_stddev"] > 0).all()


def test_quantiles_of_known_mixtures():
    """Quantiles of the T passes' equal-weight mixture: one Gaussian pass, two passes
    symmetric about 0.2, and a Beta checked against scipy."""
    ddn = ModelConfig(kind="ddn", num_components=1, **SMALL)
    one = np.array([[[0.0, 0.1, 0.02]]])                          # [T=1, N=1, 3K]
    q = predictive_quantiles(one, ddn, (0.05, 0.5, 0.95))[:, 0]
    np.testing.assert_allclose(q, [0.1 - 1.6448536 * 0.02, 0.1, 0.1 + 1.6448536 * 0.02],
                               atol=1e-9)
    two = np.array([[[0.0, 0.1, 0.02]], [[0.0, 0.3, 0.02]]])      # T=2 passes
    q = predictive_quantiles(two, ddn, (0.05, 0.5, 0.95))[:, 0]
    np.testing.assert_allclose([q[1], q[0] + q[2]], [0.2, 0.4], atol=1e-9)
    # The 5 % tail is the lower pass's 10 % tail (the upper pass has ~no mass there).
    np.testing.assert_allclose(q[0], 0.1 - 1.2815516 * 0.02, atol=1e-7)
    bbddn = ModelConfig(kind="bbddn", num_components=2, **SMALL)
    beta = np.array([[[0.0, -50.0, 0.2, 0.5, 10.0, 10.0]]])     # weight ~1 on Beta(2, 8)
    q = predictive_quantiles(beta, bbddn, (0.05, 0.5, 0.95))[:, 0]
    np.testing.assert_allclose(q, stats.beta(2, 8).ppf([0.05, 0.5, 0.95]), rtol=1e-6)
    with pytest.raises(ValueError, match="kind='reg'"):
        predictive_quantiles(one, ModelConfig(kind="reg", **SMALL), (0.5,))
    assert [quantile_column(v) for v in (0.05, 0.5, 0.95, 0.975)] == \
        ["q05", "q50", "q95", "q97.5"]


def test_bad_input_is_refused_with_the_value(ddn, tiny_marketplace, tmp_path):
    logs = pd.read_csv(tiny_marketplace["logs"].logs_path, keep_default_na=False).head(5)
    logs["age_days"] = logs["age_days"].astype(str)
    logs.loc[3, "age_days"] = "old"
    logs.to_csv(tmp_path / "bad.csv", index=False)
    out = str(tmp_path / "out.csv")
    with pytest.raises(ValueError, match="age_days.*row 3's value 'old'"):
        run(PredictConfig(run_dir=ddn, out=out, input=str(tmp_path / "bad.csv"), mc_samples=2))
    logs.drop(columns=["title"]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match=r"columns missing .*\['title'\]"):
        run(PredictConfig(run_dir=ddn, out=out, input=str(tmp_path / "short.csv"),
                          mc_samples=2))
    assert not (tmp_path / "out.csv").exists()  # nothing half-written
    with pytest.raises(ValueError, match=r"quantiles=\(0.5, 1.5\)"):
        PredictConfig(run_dir=ddn, out=out, quantiles=(0.5, 1.5))
    with pytest.raises(ValueError, match="keep_columns"):
        PredictConfig(run_dir=ddn, out=out, keep_columns=("id",))
    with pytest.raises(ValueError, match=r"'\.txt'"):
        run(PredictConfig(run_dir=ddn, out=str(tmp_path / "out.txt"), mc_samples=2))
