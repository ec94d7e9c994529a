"""Tests of `tfddn.evaluation` and `tfddn.plots`: metric values, calibration of a true model."""

import json

import numpy as np
import pytest
from scipy import stats

from tfddn.evaluation import (PER_ROW_KEYS, Predictions, compare_runs, evaluate,
                              predicted_data_stddev, predictive_cdf, predictive_quantile,
                              write_report)

ROWS = 20_000


def _mixture_data(impressions_low, impressions_high, rows=ROWS, seed=0, components=3):
    """Rows whose true CTR is drawn from a known mixture, clicks ~ Binomial(n, ctr)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(components), rows)
    means = rng.uniform(0.1, 0.5, (rows, components))
    stddevs = rng.uniform(0.01, 0.05, (rows, components))
    component = (weights.cumsum(axis=1) > rng.random(rows)[:, None]).argmax(axis=1)
    pick = np.arange(rows), component
    ctr = np.clip(rng.normal(means[pick], stddevs[pick]), 0.0, 1.0)
    impressions = rng.integers(impressions_low, impressions_high + 1, rows)
    clicks = rng.binomial(impressions, ctr)
    return dict(clicks=clicks, impressions=impressions, mean=(weights * means).sum(axis=1),
                weights=weights, means=means, stddevs=stddevs)


@pytest.fixture(scope="module")
def large_n():
    return _mixture_data(10_000, 100_000)


@pytest.fixture(scope="module")
def small_n():
    return _mixture_data(1, 5, seed=1)


def test_mse_hand_computed_for_reg():
    preds = Predictions(clicks=[1, 0, 3], impressions=[2, 4, 10], mean=[0.5, 0.1, 0.2],
                        true_mean=[0.4, 0.1, 0.25])
    metrics = evaluate(preds)
    # empirical CTR [0.5, 0.0, 0.3] -> squared errors [0, 0.01, 0.01]
    assert metrics["mse"] == pytest.approx(0.02 / 3)
    assert metrics["mse_weighted"] == pytest.approx((4 * 0.01 + 10 * 0.01) / 16)
    assert metrics["mse_truth"] == pytest.approx((0.01 + 0 + 0.0025) / 3)
    assert metrics["predicted_clicks_ratio"] == pytest.approx((1 + 0.4 + 2) / 4)
    assert (metrics["examples"], metrics["impressions"], metrics["clicks"]) == (3, 16, 4)
    for key in ("nll", "coverage_90", "coverage_90_randomised", "mean_interval_width_90",
                "stddev_corr_truth", *PER_ROW_KEYS):
        assert metrics[key] is None


def test_predicted_data_stddev_matches_samples():
    weights, means, stddevs = [[0.3, 0.7]], [[0.1, 0.4]], [[0.02, 0.05]]
    mu = 0.3 * 0.1 + 0.7 * 0.4
    exact = np.sqrt(0.3 * (0.02**2 + 0.1**2) + 0.7 * (0.05**2 + 0.4**2) - mu**2)
    assert predicted_data_stddev(weights, means, stddevs)[0] == pytest.approx(exact)
    rng = np.random.default_rng(0)
    component = rng.random(400_000) < 0.3
    samples = np.where(component, rng.normal(0.1, 0.02, component.shape),
                       rng.normal(0.4, 0.05, component.shape))
    assert predicted_data_stddev(weights, means, stddevs)[0] == pytest.approx(
        samples.std(), rel=5e-3)


def test_nll_matches_scipy():
    clicks, n = np.array([3, 0, 40]), np.array([10, 5, 100])
    y = clicks / n
    m, s = np.array([0.25, 0.05, 0.45]), np.array([0.05, 0.01, 0.1])
    one = evaluate(Predictions(clicks, n, m, np.ones((3, 1)), m[:, None], s[:, None]))
    scale = np.sqrt(s**2 + m * (1 - m) / n)
    assert one["nll"] == pytest.approx(-stats.norm.logpdf(y, m, scale).mean())

    weights = np.array([[0.2, 0.8]] * 3)
    means = np.stack([m, m + 0.1], axis=1)
    stddevs = np.stack([s, 2 * s], axis=1)
    mu = (weights * means).sum(axis=1)
    scales = np.sqrt(stddevs**2 + (mu * (1 - mu) / n)[:, None])
    density = (weights * stats.norm.pdf(y[:, None], means, scales)).sum(axis=1)
    two = evaluate(Predictions(clicks, n, mu, weights, means, stddevs))
    assert two["nll"] == pytest.approx(-np.log(density).mean())
    cdf = (weights * stats.norm.cdf(y[:, None], means, scales)).sum(axis=1)
    np.testing.assert_allclose(two["pit"], cdf, rtol=1e-12)


def test_quantile_inverts_cdf_and_interval_width():
    data = _mixture_data(20, 200, rows=500)
    mixture = [data[k] for k in ("weights", "means", "stddevs", "impressions")]
    q = np.linspace(0.01, 0.99, 500)
    np.testing.assert_allclose(predictive_cdf(predictive_quantile(q, *mixture), *mixture), q,
                               atol=1e-9)
    # One component: the 90% interval of y is +-1.645 total scales.
    s, m, n = np.full(4, 0.03), np.full(4, 0.2), np.array([1, 10, 100, 1000])
    preds = Predictions(np.round(m * n), n, m, np.ones((4, 1)), m[:, None], s[:, None])
    width = 2 * stats.norm.ppf(0.95) * np.sqrt(s**2 + 0.16 / n)
    assert evaluate(preds)["mean_interval_width_90"] == pytest.approx(width.mean(), rel=1e-9)


def test_true_mixture_is_calibrated_for_large_n(large_n):
    metrics = evaluate(Predictions(**large_n))
    assert metrics["coverage_90"] == pytest.approx(0.90, abs=0.03)
    assert metrics["coverage_50"] == pytest.approx(0.50, abs=0.04)
    histogram = np.histogram(metrics["pit"], bins=20, range=(0, 1))[0] * 20 / ROWS
    np.testing.assert_allclose(histogram, 1.0, atol=0.15)


def test_randomised_pit_is_uniform_for_small_n(small_n):
    metrics = evaluate(Predictions(**small_n))
    assert metrics["coverage_90_randomised"] == pytest.approx(0.90, abs=0.03)
    assert metrics["coverage_50_randomised"] == pytest.approx(0.50, abs=0.04)
    # The plain PIT of a discrete y (n <= 5) is not uniform even for the true model.
    assert abs(metrics["coverage_50"] - 0.5) > 0.05
    # KS distance: ~0.13 plain, ~0.04 randomised (the rest is the Gaussian approximation of
    # the binomial in p(y|x,n), not the PIT).
    assert stats.kstest(metrics["pit"], "uniform").statistic > 0.1
    assert stats.kstest(metrics["pit_randomised"], "uniform").statistic < 0.05
    moderate = evaluate(Predictions(**_mixture_data(50, 500, seed=2)), seed=3)
    histogram = np.histogram(moderate["pit_randomised"], bins=20, range=(0, 1))[0] * 20 / ROWS
    np.testing.assert_allclose(histogram, 1.0, atol=0.2)


def test_randomised_pit_is_seeded():
    preds = Predictions(**_mixture_data(1, 5, rows=2_000))
    np.testing.assert_array_equal(evaluate(preds, seed=5)["pit_randomised"],
                                  evaluate(preds, seed=5)["pit_randomised"])
    assert not np.array_equal(evaluate(preds, seed=5)["pit_randomised"],
                              evaluate(preds, seed=6)["pit_randomised"])


def test_over_confident_model_has_low_coverage_and_high_nll(large_n):
    calibrated = evaluate(Predictions(**large_n))
    shrunk = evaluate(Predictions(**{**large_n, "stddevs": large_n["stddevs"] / 5}))
    assert shrunk["coverage_90"] < calibrated["coverage_90"] - 0.15
    assert shrunk["coverage_50"] < calibrated["coverage_50"] - 0.1
    assert shrunk["nll"] > calibrated["nll"] + 1.0
    assert shrunk["mean_interval_width_90"] < calibrated["mean_interval_width_90"]


def test_stddev_correlation_with_truth(large_n):
    data_stddev = predicted_data_stddev(large_n["weights"], large_n["means"],
                                        large_n["stddevs"])
    noise = np.random.default_rng(0).normal(0, 0.01, ROWS)
    metrics = evaluate(Predictions(**large_n, true_mean=large_n["mean"],
                                   true_stddev=2 * data_stddev + noise))
    expected = np.corrcoef(data_stddev, 2 * data_stddev + noise)[0, 1]
    assert metrics["stddev_corr_truth"] == pytest.approx(expected)
    assert 0.5 < metrics["stddev_spearman_truth"] < 1.0
    assert metrics["mse_truth"] == 0.0


GOOD = dict(clicks=[1, 2], impressions=[10, 10], mean=[0.1, 0.2], weights=[[0.5, 0.5]] * 2,
            means=[[0.1, 0.1], [0.2, 0.2]], stddevs=[[0.01, 0.02]] * 2)


@pytest.mark.parametrize("change, pattern", [
    (dict(mean=[0.1, 0.2, 0.3]), r"`mean` must have shape \(2,\).*\(3,\)"),
    (dict(means=[[0.1], [0.2]]), r"`means` must have shape \(2, 2\).*\(2, 1\)"),
    (dict(weights=[[0.5, 0.6]] * 2), r"`weights` rows must sum to 1"),
    (dict(stddevs=[[0.01, np.nan]] * 2), r"`stddevs` has 2 non-finite"),
    (dict(stddevs=None), r"missing \['stddevs'\]"),
    (dict(impressions=[0, 10]), r"`impressions` must be >= 1"),
    (dict(clicks=[11, 2]), r"`clicks` must satisfy"),
    (dict(true_stddev=[[0.1, 0.1]]), r"`true_stddev` must have shape \(2,\).*\(1, 2\)"),
])
def test_validation_names_the_bad_array(change, pattern):
    Predictions(**GOOD)
    with pytest.raises(ValueError, match=pattern):
        Predictions(**{**GOOD, **change})


def _is_png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_write_report_density_and_reg(tmp_path):
    data = _mixture_data(20, 200, rows=3_000)
    preds = Predictions(**data, true_mean=data["mean"],
                        true_stddev=predicted_data_stddev(data["weights"], data["means"],
                                                          data["stddevs"]))
    metrics = evaluate(preds)
    paths = write_report(metrics, preds, str(tmp_path / "ddn"), title="DDN")
    assert set(paths) == {"metrics", "summary", "calibration", "pit", "truth"}
    for name in ("calibration", "pit", "truth"):
        assert _is_png(paths[name]) and (tmp_path / "ddn" / f"{name}.png").stat().st_size > 5_000
    with open(paths["metrics"]) as fh:
        assert json.load(fh) == {k: v for k, v in metrics.items() if k not in PER_ROW_KEYS}
    summary = (tmp_path / "ddn" / "summary.md").read_text()
    assert summary.startswith("# DDN") and "| `coverage_90` |" in summary
    assert "![pit](pit.png)" in summary

    reg = Predictions(data["clicks"], data["impressions"], data["mean"])
    paths = write_report(evaluate(reg), reg, str(tmp_path / "ddn"), title="REG")
    assert set(paths) == {"metrics", "summary", "calibration"}
    assert json.loads((tmp_path / "ddn" / "metrics.json").read_text())["nll"] is None
    assert not (tmp_path / "ddn" / "pit.png").exists()  # the DDN run's plot is not left over


def test_compare_runs_relative_change():
    runs = {"REG": dict(mse=0.010, nll=None, coverage_90=None),
            "MDN": dict(mse=0.0095, nll=-1.5, coverage_90=0.85),
            "DDN": dict(mse=0.009, nll=-1.8, coverage_90=0.9)}
    table = compare_runs(runs, baseline="REG")
    lines = table.strip().splitlines()
    assert lines[0] == "| run | mse | Δmse vs REG | nll | coverage_90 |"
    assert lines[2] == "| REG | 0.01 | +0.0% | — | — |"
    assert lines[3] == "| MDN | 0.0095 | -5.0% | -1.5 | 0.85 |"
    assert lines[4] == "| DDN | 0.009 | -10.0% | -1.8 | 0.9 |"
    assert "| REG | 0.01 | +11.1% |" in compare_runs(runs, baseline="DDN")
    with pytest.raises(ValueError, match="'GBM' is not a run"):
        compare_runs(runs, baseline="GBM")
