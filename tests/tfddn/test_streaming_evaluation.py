"""`StreamingEvaluation`: batch by batch, the numbers of `evaluate` on all rows at once,
holding at most `ROW_BYTES` per row."""

import dataclasses
import tracemalloc

import numpy as np
import pytest

from tfddn.distributions import Mixture
from tfddn.evaluation import PER_ROW_KEYS, Predictions, evaluate
from tfddn.streaming_evaluation import PIT_BINS, ROW_BYTES, StreamingEvaluation

ROWS = 5_000
SIZES = (1, 999, 1024, 7, 2000, 969)  # uneven batches, summing to ROWS


def _rows(family, seed=0, truth=True, components=2):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(components), ROWS)
    means = rng.uniform(0.01, 0.2, (ROWS, components))
    scales = (rng.uniform(5.0, 300.0, (ROWS, components)) if family == "beta"
              else rng.uniform(0.005, 0.05, (ROWS, components)))
    impressions = rng.integers(1, 400, ROWS)  # small (exact count CDF) and large n
    impressions[::50] = rng.integers(300, 3000, ROWS // 50)
    mixture = Mixture(weights, means, scales, family or "gaussian")
    ctr = np.clip(mixture.mean() * rng.lognormal(0, 0.3, ROWS), 0, 1)
    columns = dict(clicks=rng.binomial(impressions, ctr), impressions=impressions,
                   mean=mixture.mean())
    if family is not None:
        columns.update(weights=weights, means=means, scales=scales, family=family)
    if truth:
        columns.update(true_mean=ctr, true_stddev=mixture.stddev() * rng.uniform(0.5, 2, ROWS))
    return Predictions(**columns)


def _batches(p, sizes=SIZES):
    start = 0
    for size in sizes:
        yield Predictions(**{f.name: getattr(p, f.name) if f.name == "family" or getattr(
            p, f.name) is None else getattr(p, f.name)[start:start + size]
            for f in dataclasses.fields(p)})
        start += size
    assert start == len(p.clicks)


def _stream(p, seed=0):
    stream = StreamingEvaluation(seed=seed)
    for batch in _batches(p):
        stream.update(batch)
    return stream.result()


@pytest.mark.parametrize("family, truth", [(None, True), ("gaussian", True), ("beta", True),
                                           ("gaussian", False)])
def test_streaming_equals_evaluate_on_all_rows(family, truth):
    p = _rows(family, seed=len(str(family)), truth=truth)
    expected = evaluate(p, seed=3)
    result = _stream(p, seed=3)
    assert list(result.metrics) == [k for k in expected if k not in PER_ROW_KEYS]
    for key, value in result.metrics.items():
        if expected[key] is None or isinstance(expected[key], int):
            assert value == expected[key], key
        else:
            assert value == pytest.approx(expected[key], rel=1e-10, abs=1e-15), key
    if family is None:
        assert result.pit_histogram is None and expected["coverage_90"] is None
        return
    assert expected["coverage_90_randomised"] not in (0.0, 1.0)  # a test that can fail
    edges = np.linspace(0, 1, PIT_BINS + 1)
    for key in ("pit", "pit_randomised"):
        np.testing.assert_array_equal(getattr(result, f"{key}_histogram"),
                                      np.histogram(expected[key], edges)[0])


def test_the_randomised_pit_depends_on_the_seed_only_not_on_the_batches():
    p = _rows("gaussian", seed=5)
    one = StreamingEvaluation(seed=1)
    one.update(p)
    batched = _stream(p, seed=1)
    assert batched.metrics["coverage_50_randomised"] == one.result().metrics[
        "coverage_50_randomised"]
    assert _stream(p, seed=2).metrics["coverage_50_randomised"] != batched.metrics[
        "coverage_50_randomised"]


def test_reliability_bins_and_truth_arrays_of_all_rows():
    p = _rows("gaussian", seed=7)
    result = _stream(p)
    np.testing.assert_array_equal(result.mean, p.mean)
    np.testing.assert_array_equal(result.true_mean, p.true_mean)
    np.testing.assert_allclose(result.data_stddev, p.mixture.stddev(), rtol=1e-6)
    assert result.reliability.ece == pytest.approx(evaluate(p)["ece"], rel=1e-12)
    assert result.reliability.true_ctr is not None


def test_batches_of_another_kind_are_refused():
    stream = StreamingEvaluation()
    stream.update(_rows("gaussian"))
    with pytest.raises(ValueError, match="one kind"):
        stream.update(_rows(None))
    with pytest.raises(ValueError, match="one kind"):
        stream.update(_rows("gaussian", truth=False))
    with pytest.raises(ValueError, match="no rows"):
        StreamingEvaluation().result()


def test_memory_held_per_row_is_bounded():
    """After 20 batches the stream holds at most `ROW_BYTES` a row (40: a density model
    with ground truth), not the batches (a Predictions of 2 components is ~72 bytes a row
    plus the per-row PIT arrays)."""
    p = _rows("gaussian", seed=9)
    stream = StreamingEvaluation()
    stream.update(p)  # imports, first-call caches
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            stream.update(p)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sum(ROW_BYTES.values()) == 40
    assert held / (20 * ROWS) <= 40 + 2  # + list slots of the 6 chunks per batch
