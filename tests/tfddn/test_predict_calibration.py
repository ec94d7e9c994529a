"""Calibration of the mean: reliability bins, ECE, `calibration_warnings`, the diagram,
and `predict_split` for a Beta-mixture (BBDDN) head."""

import numpy as np
import pytest
from scipy import stats

from tfddn.evaluation import Predictions, calibration_warnings, evaluate, reliability_bins


def _binomial_rows(rows=5_000, seed=0, low=0.005, high=0.05):
    """True CTRs in [low, high] and clicks ~ Binomial(n, ctr), many impressions per row."""
    rng = np.random.default_rng(seed)
    ctr = np.exp(rng.uniform(np.log(low), np.log(high), rows))
    n = rng.integers(10_000, 100_000, rows)
    return ctr, rng.binomial(n, ctr), n


def test_reliability_bins_hand_computed_and_ties_share_a_bin():
    mean, n = [0.1, 0.1, 0.2, 0.3], [10, 10, 10, 10]
    bins = reliability_bins(mean, [1, 3, 2, 6], n, bins=4, true_mean=[0.1, 0.3, 0.2, 0.5])
    # Impression quartiles end at rows 0, 1, 2: rows 0 and 1 tie, so bin 2 of 4 is empty.
    np.testing.assert_allclose(bins.predicted, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(bins.observed, [0.2, 0.2, 0.6])
    np.testing.assert_allclose(bins.impressions, [20, 10, 10])
    np.testing.assert_allclose(bins.true_ctr, [0.2, 0.2, 0.5])
    np.testing.assert_allclose(bins.stderr, np.sqrt([0.2 * 0.8 / 20, 0.2 * 0.8 / 10,
                                                     0.6 * 0.4 / 10]))
    assert bins.ece == pytest.approx(0.5 * 0.1 + 0.25 * 0.0 + 0.25 * 0.3)
    assert bins.clicks_ratio == pytest.approx((2 + 2 + 3) / 12)
    single = reliability_bins([0.2] * 5, [1, 0, 0, 1, 0], [2] * 5, bins=10)
    assert len(single.predicted) == 1 and single.ece == pytest.approx(0.0)
    with pytest.raises(ValueError, match="bins=0"):
        reliability_bins(mean, [1, 3, 2, 6], n, bins=0)


def test_bins_hold_about_equal_impressions():
    ctr, clicks, n = _binomial_rows()
    bins = reliability_bins(ctr, clicks, n, bins=10)
    assert len(bins.predicted) == 10
    assert np.all(np.diff(bins.predicted) > 0)
    np.testing.assert_allclose(bins.impressions / n.sum(), 0.1, atol=0.002)


def test_ece_is_near_zero_for_the_true_ctr_and_large_when_scaled():
    ctr, clicks, n = _binomial_rows()
    overall = clicks.sum() / n.sum()
    true = evaluate(Predictions(clicks, n, ctr))
    # Per-bin binomial noise is ~3e-5 here (overall CTR ~0.017).
    assert true["ece"] < 1e-4
    assert true["predicted_clicks_ratio"] == pytest.approx(1.0, abs=0.005)
    doubled = evaluate(Predictions(clicks, n, 2 * ctr))
    assert doubled["ece"] == pytest.approx(overall, rel=0.01)   # 2 p - p in every bin
    assert doubled["predicted_clicks_ratio"] == pytest.approx(2.0, rel=0.005)


def test_warnings_for_a_scaled_mean_and_for_mass_below_zero():
    ctr, clicks, n = _binomial_rows(rows=2_000)
    assert calibration_warnings(evaluate(Predictions(clicks, n, ctr))) == []
    halved = evaluate(Predictions(clicks, n, 0.5 * ctr))
    [message] = calibration_warnings({**halved, "model": "ddn"})
    assert message.startswith("the DDN model predicts 0.50x the observed clicks on 2,000 rows")
    assert "under-predicts by 50%" in message and "count noise" not in message
    [few] = calibration_warnings({"predicted_clicks_ratio": 1.22, "clicks": 73,
                                  "examples": 380, "impressions": 3386})
    assert "1.22x the observed clicks on 380 rows (73 clicks in 3,386 impressions)" in few
    assert "with 73 clicks, +-23% is within count noise" in few   # 2 / sqrt(73)

    # A DDN-like mixture around a 1% CTR with a 1% stddev: 31% of its mass is below 0.
    rows = len(ctr)
    gaussian = Predictions(clicks, n, ctr, np.ones((rows, 1)), ctr[:, None],
                           np.full((rows, 1), 0.01))
    metrics = evaluate(gaussian)
    expected = stats.norm.cdf(-ctr / 0.01).mean()
    assert metrics["mass_below_zero"] == pytest.approx(expected, rel=1e-9)
    [message] = calibration_warnings(metrics)
    assert f"{expected:.1%} (>5%)" in message and "consider --kind bbddn" in message

    beta = Predictions(clicks, n, ctr, np.ones((rows, 1)), ctr[:, None],
                       np.full((rows, 1), 1e5), family="beta")
    assert calibration_warnings(evaluate(beta)) == []
    assert calibration_warnings({"predicted_clicks_ratio": None, "mass_below_zero": None}) == []


@pytest.mark.parametrize("low, high, log_axes", [(0.005, 0.05, True), (0.02, 0.03, False)])
def test_reliability_diagram_axes_and_file(tmp_path, low, high, log_axes):
    from tfddn import plots

    ctr, clicks, n = _binomial_rows(rows=2_000, low=low, high=high)
    bins = reliability_bins(0.8 * ctr, clicks, n, true_mean=ctr)
    log, lo, hi = plots._axis_limits(np.concatenate([bins.predicted, bins.observed]),
                                     1.96 * bins.stderr)
    assert log == log_axes
    smallest = min(bins.predicted.min(), bins.observed.min())
    assert lo == (pytest.approx(smallest / 1.5) if log else 0.0)
    assert hi == pytest.approx(1.5 * bins.observed.max() if log else
                               1.08 * (bins.observed.max() + 1.96 * bins.stderr.max()), rel=0.01)
    path = plots.plot_reliability(bins, str(tmp_path / "calibration.png"), title="DDN")
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "calibration.png").stat().st_size > 10_000


def test_predict_split_builds_a_beta_mixture(tiny_marketplace):
    from tfddn import predict
    from tfddn.distributions import Mixture
    from tfddn.models.config import ModelConfig

    params = np.array([0.0, np.log(3.0), 0.02, 0.06, 50.0, 200.0], np.float32)

    def model(features, training=False):
        rows = next(iter(features.values())).shape[0]
        return np.tile(params, (rows, 1))

    config = ModelConfig(kind="bbddn", num_components=2)
    preds, frame = predict.predict_split(model, config, tiny_marketplace["data_dir"])
    assert preds.family == "beta" and len(frame) == len(preds.clicks)
    np.testing.assert_allclose(preds.mean, 0.25 * 0.02 + 0.75 * 0.06, rtol=1e-6)
    np.testing.assert_allclose(preds.weights[0], [0.25, 0.75], rtol=1e-6)
    np.testing.assert_allclose(preds.scales[0], [50.0, 200.0])
    expected = Mixture.from_params(np.tile(params, (len(preds.clicks), 1)), 2, "beta")
    metrics = evaluate(preds)
    assert metrics["nll"] == pytest.approx(
        -expected.count_log_prob(preds.clicks, preds.impressions).mean(), rel=1e-6)
