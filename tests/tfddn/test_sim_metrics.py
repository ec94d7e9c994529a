"""Tests of the exploration metrics against hand-computed numbers."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tfddn.simulation.metrics import (binomial_significant, ctr, mean_ci, regret,
                                      relative_lift, rpm, targets_throughput)


def _wilson_half_width(x, n, z=1.959963984540054):
    p = x / n
    return z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))


def test_wilson_significance_hand_computed():
    # 10 / 100: z^2 = 3.841459, half-width = 1.959964 * sqrt(0.0009 + 0.0000960365)
    # / 1.0384146 = 0.059568 > 0.5 * 0.1. 20 / 200: 0.041868 <= 0.05.
    assert _wilson_half_width(10, 100) == pytest.approx(0.059568, abs=1e-6)
    assert _wilson_half_width(20, 200) == pytest.approx(0.041868, abs=1e-6)
    for x, n in [(10, 100), (20, 200)]:
        ci = stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert (ci.high - ci.low) / 2 == pytest.approx(_wilson_half_width(x, n), rel=1e-9)
    np.testing.assert_array_equal(
        binomial_significant([10, 20, 0, 1, 0], [100, 200, 1000, 1, 0]),
        [False, True, False, True, False])
    # 10 / 100 passes with a looser relative width (0.6 * 0.1 = 0.06 >= 0.0596).
    assert binomial_significant(10, 100, relative_width=0.6)
    # and fails a stricter alpha for 20 / 200 (z = 2.5758: half-width 0.0541 > 0.05).
    assert not binomial_significant(20, 200, alpha=0.01)
    with pytest.raises(ValueError, match="clicks"):
        binomial_significant([3], [2])


def _log():
    rows = [
        # pair, day, impressions, clicks     cumulative -> significant?
        (("A", 1), 0, 200, 20),             # 200/20 yes: reached on day 0 (no day -1)
        (("A", 1), 1, 50, 5),               # 250/25 yes: already significant
        (("B", 1), 0, 100, 10),             # 100/10 no
        (("B", 1), 1, 60, 6),               # (two rows for one day are summed)
        (("B", 1), 1, 40, 4),               # 200/20 yes: reached day 1, 100 > 10 on day 0
        (("C", 2), 0, 10, 1),               # 10/1 no
        (("C", 2), 1, 190, 19),             # 200/20 yes: reached day 1, but 10 <= 10 on day 0
        (("D", 1), 1, 100, 10),             # 100/10 no; no row on day 2 (a gap)
        (("D", 1), 3, 100, 10),             # 200/20 yes: reached day 3, 0 on day 2
        (("E", 3), 3, 100, 10),             # 100/10 no
        (("E", 3), 4, 100, 10),             # 200/20 yes: reached day 4, 100 > 10 on day 3
        (("F", 1), 0, 5, 0),                # never significant
        (("F", 1), 4, 5, 0),
        (("G", 1), 3, 1000, 0),             # no clicks: never significant
    ]
    return pd.DataFrame(rows, columns=["pair", "day", "impressions", "clicks"])


def test_targets_throughput_hand_built_log():
    table = targets_throughput(_log(), threshold=10)
    expected = pd.DataFrame({"reached_significance": [1, 2, 0, 1, 1],
                             "throughput": [0, 1, 0, 0, 1]},
                            index=pd.RangeIndex(0, 5, name="day"), dtype=np.int64)
    pd.testing.assert_frame_equal(table, expected)
    # C was recommended exactly 10 times on day 0: counted once the threshold is 9.
    looser = targets_throughput(_log(), threshold=9)
    np.testing.assert_array_equal(looser["throughput"], [0, 2, 0, 0, 1])


def test_targets_throughput_counts_a_regained_significance_again():
    log = pd.DataFrame({"pair": ["q"] * 3, "day": [5, 6, 7],
                        "impressions": [20, 200, 200], "clicks": [10, 0, 40]})
    # Cumulative 10/20: half-width 0.2007 <= 0.25, yes; 10/220: 0.0284 > 0.0227, no
    # (the CTR estimate collapsed); 50/420: 0.0310 <= 0.0595, yes again.
    np.testing.assert_array_equal(binomial_significant([10, 10, 50], [20, 220, 420]),
                                  [True, False, True])
    table = targets_throughput(log, threshold=100)
    assert list(table.index) == [5, 6, 7]
    np.testing.assert_array_equal(table["reached_significance"], [1, 0, 1])
    np.testing.assert_array_equal(table["throughput"], [0, 0, 1])


def test_targets_throughput_empty_and_invalid_logs():
    empty = targets_throughput(_log().iloc[:0])
    assert list(empty.columns) == ["reached_significance", "throughput"] and len(empty) == 0
    with pytest.raises(ValueError, match="clicks"):
        targets_throughput(_log().drop(columns="clicks"))
    bad = _log().assign(clicks=lambda df: df["impressions"] + 1)
    with pytest.raises(ValueError, match="clicks <= impressions"):
        targets_throughput(bad)


def test_rpm_ctr_and_regret():
    # revenue = 1 * 0.5 + 0 * 1 + 2 * 0.25 = 1.0 over 10 recommendations
    assert rpm([1, 0, 2], [0.5, 1.0, 0.25], recommendations=10) == pytest.approx(100.0)
    assert ctr([1, 0, 2], [10, 10, 10]) == pytest.approx(0.1)
    assert math.isnan(ctr([0], [0]))
    # expected revenues per recommendation: oracle - policy = [0.02, 0.0]
    assert regret([0.01, 0.02], [0.03, 0.02]) == pytest.approx(10.0)
    assert regret(0.03, 0.05, recommendations=4) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="recommendations"):
        rpm([1], [1.0], recommendations=0)
    with pytest.raises(ValueError, match="same shape"):
        regret([0.1, 0.2], [0.1])


def test_mean_ci_and_lift():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    # s = sqrt(2.5), sem = 0.70711, t(0.975, 4) = 2.776445 -> 1.963243
    mean, half = mean_ci(values)
    assert mean == 3.0 and half == pytest.approx(1.963243, abs=1e-6)
    low, high = stats.t.interval(0.9, 4, loc=3.0, scale=stats.sem(values))
    assert mean_ci(values, confidence=0.9)[1] == pytest.approx((high - low) / 2)
    assert math.isnan(mean_ci([2.0])[1])
    assert relative_lift(110.0, 100.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="b=0"):
        relative_lift(1.0, 0.0)
