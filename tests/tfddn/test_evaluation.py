"""Tests of `tfddn.evaluation` and `tfddn.plots`: metric values, calibration of a true model."""

import json

import numpy as np
import pytest
from scipy import stats

from tfddn.distributions import Mixture
from tfddn.evaluation import PER_ROW_KEYS, Predictions, evaluate
from tfddn.report import compare_runs, write_report

ROWS = 20_000


def _mixture_data(impressions_low, impressions_high, rows=ROWS, seed=0, components=3):
    """Rows whose true CTR is drawn from a known Gaussian mixture, clicks ~ Binomial(n, ctr)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(components), rows)
    means = rng.uniform(0.1, 0.5, (rows, components))
    scales = rng.uniform(0.01, 0.05, (rows, components))
    component = (weights.cumsum(axis=1) > rng.random(rows)[:, None]).argmax(axis=1)
    pick = np.arange(rows), component
    ctr = np.clip(rng.normal(means[pick], scales[pick]), 0.0, 1.0)
    impressions = rng.integers(impressions_low, impressions_high + 1, rows)
    clicks = rng.binomial(impressions, ctr)
    return dict(clicks=clicks, impressions=impressions, mean=(weights * means).sum(axis=1),
                weights=weights, means=means, scales=scales)


def _beta_data(impressions_low, impressions_high, rows=ROWS, seed=0, components=2):
    """Rows whose true CTR is drawn from a known Beta mixture, clicks ~ Binomial(n, ctr)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(components), rows)
    means = rng.uniform(0.02, 0.3, (rows, components))
    kappa = rng.uniform(5.0, 200.0, (rows, components))
    component = (weights.cumsum(axis=1) > rng.random(rows)[:, None]).argmax(axis=1)
    pick = np.arange(rows), component
    ctr = rng.beta(means[pick] * kappa[pick], (1 - means[pick]) * kappa[pick])
    impressions = rng.integers(impressions_low, impressions_high + 1, rows)
    clicks = rng.binomial(impressions, ctr)
    return dict(clicks=clicks, impressions=impressions, mean=(weights * means).sum(axis=1),
                weights=weights, means=means, scales=kappa, family="beta")


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
    for key in ("nll_density", "mass_below_zero", "coverage_90", "coverage_90_randomised",
                "mean_interval_width_90", "stddev_corr_truth", *PER_ROW_KEYS):
        assert metrics[key] is None


def test_reg_nll_is_the_binomial_count_likelihood():
    clicks, n, mean = np.array([1, 0, 3, 5]), np.array([2, 4, 10, 5]), np.array(
        [0.5, 0.1, 0.2, 0.0])
    metrics = evaluate(Predictions(clicks, n, mean))
    # A mean of exactly 0 with clicks is clipped into (0, 1): large but finite.
    expected = -stats.binom.logpmf(clicks, n, np.clip(mean, 1e-6, 1 - 1e-6)).mean()
    assert np.isfinite(metrics["nll"])
    assert metrics["nll"] == pytest.approx(expected, rel=1e-12)


def test_data_stddev_matches_samples():
    weights, means, scales = [[0.3, 0.7]], [[0.1, 0.4]], [[0.02, 0.05]]
    mu = 0.3 * 0.1 + 0.7 * 0.4
    exact = np.sqrt(0.3 * (0.02**2 + 0.1**2) + 0.7 * (0.05**2 + 0.4**2) - mu**2)
    metrics = evaluate(Predictions([3], [10], [mu], weights, means, scales))
    assert metrics["mean_data_stddev"] == pytest.approx(exact)
    rng = np.random.default_rng(0)
    component = rng.random(400_000) < 0.3
    samples = np.where(component, rng.normal(0.1, 0.02, component.shape),
                       rng.normal(0.4, 0.05, component.shape))
    assert metrics["mean_data_stddev"] == pytest.approx(samples.std(), rel=5e-3)


def test_gaussian_nll_density_and_pit_match_scipy():
    clicks, n = np.array([3, 0, 40]), np.array([10, 5, 100])
    y = clicks / n
    m, s = np.array([0.25, 0.05, 0.45]), np.array([0.05, 0.01, 0.1])
    one = evaluate(Predictions(clicks, n, m, np.ones((3, 1)), m[:, None], s[:, None]))
    scale = np.sqrt(s**2 + m * (1 - m) / n)
    assert one["nll_density"] == pytest.approx(-stats.norm.logpdf(y, m, scale).mean())

    weights = np.array([[0.2, 0.8]] * 3)
    means = np.stack([m, m + 0.1], axis=1)
    scales = np.stack([s, 2 * s], axis=1)
    mu = (weights * means).sum(axis=1)
    total = np.sqrt(scales**2 + (mu * (1 - mu) / n)[:, None])
    density = (weights * stats.norm.pdf(y[:, None], means, total)).sum(axis=1)
    two = evaluate(Predictions(clicks, n, mu, weights, means, scales))
    assert two["nll_density"] == pytest.approx(-np.log(density).mean())
    cdf = (weights * stats.norm.cdf(y[:, None], means, total)).sum(axis=1)
    np.testing.assert_allclose(two["pit"], cdf, rtol=1e-12)


def test_gaussian_count_nll_is_the_moment_matched_beta_binomial():
    clicks, n = np.array([3, 0, 40]), np.array([10, 5, 100])
    m, s = np.array([0.25, 0.05, 0.45]), np.array([0.05, 0.01, 0.1])
    kappa = m * (1 - m) / s**2 - 1          # the Beta with the component's mean and variance
    metrics = evaluate(Predictions(clicks, n, m, np.ones((3, 1)), m[:, None], s[:, None]))
    expected = -stats.betabinom.logpmf(clicks, n, m * kappa, (1 - m) * kappa).mean()
    assert metrics["nll"] == pytest.approx(expected, rel=1e-9)


def test_beta_count_nll_matches_scipy_betabinom_mixture():
    clicks, n = np.array([0, 1, 7, 30]), np.array([1, 3, 50, 300])
    weights = np.array([[0.3, 0.7], [0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    means = np.array([[0.02, 0.2], [0.1, 0.4], [0.15, 0.5], [0.05, 0.12]])
    kappa = np.array([[10.0, 50.0], [2.0, 5.0], [100.0, 20.0], [30.0, 400.0]])
    preds = Predictions(clicks, n, (weights * means).sum(1), weights, means, kappa,
                        family="beta")
    metrics = evaluate(preds)
    pmf = stats.betabinom.pmf(clicks[:, None], n[:, None], means * kappa, (1 - means) * kappa)
    assert metrics["nll"] == pytest.approx(-np.log((weights * pmf).sum(axis=1)).mean(),
                                           rel=1e-10)
    assert metrics["nll_density"] is None
    assert metrics["mass_below_zero"] == 0.0
    cdf = stats.betabinom.cdf(clicks[:, None], n[:, None], means * kappa, (1 - means) * kappa)
    np.testing.assert_allclose(metrics["pit"][:3], (weights * cdf).sum(axis=1)[:3], rtol=1e-9)


def test_beta_interval_width_is_the_count_quantiles():
    n = np.array([1, 10, 40, 200])
    m, kappa = np.array([0.3, 0.2, 0.05, 0.1]), np.array([1e4, 20.0, 5.0, 50.0])
    preds = Predictions(np.round(m * n), n, m, np.ones((4, 1)), m[:, None], kappa[:, None],
                        family="beta")
    dist = stats.betabinom(n, m * kappa, (1 - m) * kappa)
    width = (dist.ppf(0.95) - dist.ppf(0.05)) / n
    assert width[0] == 1.0   # n = 1, P(click) = 0.3: the 90% interval is {0, 1}
    assert evaluate(preds)["mean_interval_width_90"] == pytest.approx(width.mean(), rel=1e-12)


def test_beta_pit_is_the_count_cdf_for_every_n():
    """Rows are scored in chunks of similar n; the result is in the rows' own order."""
    data = _beta_data(1, 2_000, rows=3_000, seed=4)
    preds = Predictions(**data)
    pit = evaluate(preds)["pit"]
    mixture = preds.mixture
    np.testing.assert_allclose(pit, mixture.count_cdf(preds.clicks, preds.impressions),
                               rtol=1e-12)


@pytest.mark.parametrize("low, high", [(1, 5), (900, 1100)])
def test_beta_randomised_pit_is_uniform_under_the_true_model(low, high):
    metrics = evaluate(Predictions(**_beta_data(low, high, seed=low)), seed=1)
    assert metrics["coverage_90_randomised"] == pytest.approx(0.90, abs=0.01)
    assert metrics["coverage_50_randomised"] == pytest.approx(0.50, abs=0.015)
    assert stats.kstest(metrics["pit_randomised"], "uniform").statistic < 0.015
    if high <= 5:  # the plain PIT of few-count data is not uniform, even for the true model
        assert stats.kstest(metrics["pit"], "uniform").statistic > 0.1


def test_quantile_inverts_cdf_and_interval_width():
    data = _mixture_data(20, 200, rows=500)
    mixture = Mixture(data["weights"], data["means"], data["scales"])
    q = np.linspace(0.01, 0.99, 500)
    n = data["impressions"]
    np.testing.assert_allclose(mixture.cdf(mixture.quantile(q, n), n), q, atol=1e-9)
    # One component: the 90% interval of y is +-1.645 total scales.
    s, m, n = np.full(4, 0.03), np.full(4, 0.2), np.array([1, 10, 100, 1000])
    preds = Predictions(np.round(m * n), n, m, np.ones((4, 1)), m[:, None], s[:, None])
    width = 2 * stats.norm.ppf(0.95) * np.sqrt(s**2 + 0.16 / n)
    assert evaluate(preds)["mean_interval_width_90"] == pytest.approx(width.mean(), rel=1e-9)


def test_mass_below_zero_of_a_gaussian_mixture():
    m, s = np.array([[0.01, 0.2]]), np.array([[0.01, 0.05]])
    metrics = evaluate(Predictions([1], [10], [0.1], [[0.5, 0.5]], m, s))
    expected = 0.5 * stats.norm.cdf(-1.0) + 0.5 * stats.norm.cdf(-4.0)
    assert metrics["mass_below_zero"] == pytest.approx(expected, rel=1e-12)


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


@pytest.mark.parametrize("make", [lambda: _mixture_data(1, 5, rows=2_000),
                                  lambda: _beta_data(1, 5, rows=2_000)])
def test_randomised_pit_is_seeded(make):
    preds = Predictions(**make())
    np.testing.assert_array_equal(evaluate(preds, seed=5)["pit_randomised"],
                                  evaluate(preds, seed=5)["pit_randomised"])
    assert not np.array_equal(evaluate(preds, seed=5)["pit_randomised"],
                              evaluate(preds, seed=6)["pit_randomised"])


def test_over_confident_model_has_low_coverage_and_high_nll(large_n):
    calibrated = evaluate(Predictions(**large_n))
    shrunk = evaluate(Predictions(**{**large_n, "scales": large_n["scales"] / 5}))
    assert shrunk["coverage_90"] < calibrated["coverage_90"] - 0.15
    assert shrunk["coverage_50"] < calibrated["coverage_50"] - 0.1
    assert shrunk["nll"] > calibrated["nll"] + 1.0
    assert shrunk["nll_density"] > calibrated["nll_density"] + 1.0
    assert shrunk["mean_interval_width_90"] < calibrated["mean_interval_width_90"]


def test_stddev_correlation_with_truth(large_n):
    data_stddev = Mixture(large_n["weights"], large_n["means"], large_n["scales"]).stddev()
    noise = np.random.default_rng(0).normal(0, 0.01, ROWS)
    metrics = evaluate(Predictions(**large_n, true_mean=large_n["mean"],
                                   true_stddev=2 * data_stddev + noise))
    expected = np.corrcoef(data_stddev, 2 * data_stddev + noise)[0, 1]
    assert metrics["stddev_corr_truth"] == pytest.approx(expected)
    assert 0.5 < metrics["stddev_spearman_truth"] < 1.0
    assert metrics["mse_truth"] == 0.0


GOOD = dict(clicks=[1, 2], impressions=[10, 10], mean=[0.1, 0.2], weights=[[0.5, 0.5]] * 2,
            means=[[0.1, 0.1], [0.2, 0.2]], scales=[[0.01, 0.02]] * 2)


@pytest.mark.parametrize("change, pattern", [
    (dict(mean=[0.1, 0.2, 0.3]), r"`mean` must have shape \(2,\).*\(3,\)"),
    (dict(means=[[0.1], [0.2]]), r"`means` must have shape \(2, 2\).*\(2, 1\)"),
    (dict(weights=[[0.5, 0.6]] * 2), r"`weights` rows must sum to 1"),
    (dict(scales=[[0.01, np.nan]] * 2), r"`scales` has 2 non-finite"),
    (dict(scales=[[0.01, -0.02]] * 2), r"`scales` must be >= 0"),
    (dict(scales=None), r"missing \['scales'\]"),
    (dict(impressions=[0, 10]), r"`impressions` must be >= 1"),
    (dict(clicks=[11, 2]), r"`clicks` must satisfy"),
    (dict(true_stddev=[[0.1, 0.1]]), r"`true_stddev` must have shape \(2,\).*\(1, 2\)"),
    (dict(family="poisson"), r"family must be one of .*Received: family='poisson'"),
    (dict(family="beta", means=[[0.1, 1.2], [0.2, 0.2]]), r"Beta mixture must lie in \[0, 1\]"),
])
def test_validation_names_the_bad_array(change, pattern):
    Predictions(**GOOD)
    with pytest.raises(ValueError, match=pattern):
        Predictions(**{**GOOD, **change})


def test_from_mixture_and_mixture_round_trip():
    mixture = Mixture([[0.25, 0.75]], [[0.1, 0.3]], [[20.0, 80.0]], "beta")
    preds = Predictions.from_mixture([2], [10], mixture, true_mean=[0.2])
    assert preds.family == "beta" and preds.mean[0] == pytest.approx(0.25)
    np.testing.assert_array_equal(preds.mixture.scales, [[20.0, 80.0]])
    assert preds.mixture.family == "beta" and preds.true_mean[0] == 0.2
    assert Predictions([1], [2], [0.5]).mixture is None


def _is_png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_write_report_density_and_reg(tmp_path):
    data = _mixture_data(20, 200, rows=3_000)
    mixture = Mixture(data["weights"], data["means"], data["scales"])
    preds = Predictions(**data, true_mean=data["mean"], true_stddev=mixture.stddev())
    metrics = evaluate(preds)
    paths = write_report(metrics, preds, str(tmp_path / "ddn"), title="DDN")
    assert set(paths) == {"metrics", "summary", "calibration", "pit", "truth"}
    for name in ("calibration", "pit", "truth"):
        assert _is_png(paths[name]) and (tmp_path / "ddn" / f"{name}.png").stat().st_size > 5_000
    with open(paths["metrics"]) as fh:
        assert json.load(fh) == {k: v for k, v in metrics.items() if k not in PER_ROW_KEYS}
    summary = (tmp_path / "ddn" / "summary.md").read_text()
    assert summary.startswith("# DDN") and "| `coverage_90` |" in summary
    assert "| `ece` |" in summary and "## Warnings" not in summary
    assert "![pit](pit.png)" in summary

    reg = Predictions(data["clicks"], data["impressions"], data["mean"])
    paths = write_report(evaluate(reg), reg, str(tmp_path / "ddn"), title="REG")
    assert set(paths) == {"metrics", "summary", "calibration"}
    written = json.loads((tmp_path / "ddn" / "metrics.json").read_text())
    assert written["nll_density"] is None and written["nll"] > 0
    assert not (tmp_path / "ddn" / "pit.png").exists()  # the DDN run's plot is not left over


def test_write_report_beta_lists_warnings(tmp_path):
    data = _beta_data(1, 50, rows=3_000)
    preds = Predictions(**data, true_mean=data["mean"])
    metrics = {**evaluate(preds), "model": "bbddn", "warnings": ["the model is odd"]}
    paths = write_report(metrics, preds, str(tmp_path), title="BBDDN")
    assert set(paths) == {"metrics", "summary", "calibration", "pit", "truth"}
    summary = (tmp_path / "summary.md").read_text()
    assert "## Warnings\n\n- the model is odd\n" in summary
    assert "| `warnings` |" not in summary and "| `model` | bbddn |" in summary
    assert json.loads((tmp_path / "metrics.json").read_text())["warnings"] == [
        "the model is odd"]


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


def test_compare_runs_default_columns_include_calibration():
    runs = {"DDN": dict(mse=0.01, predicted_clicks_ratio=1.02, ece=0.001, nll=0.3,
                        mass_below_zero=0.2),
            "BBDDN": dict(mse=0.01, predicted_clicks_ratio=0.99, ece=0.0005, nll=0.25,
                          mass_below_zero=0.0)}
    header = compare_runs(runs).splitlines()[0]
    assert header == ("| run | mse | Δmse vs DDN | predicted_clicks_ratio | ece | nll | "
                      "mass_below_zero |")
