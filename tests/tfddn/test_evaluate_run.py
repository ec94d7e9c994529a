"""`tfddn evaluate` streams: the metrics of the in-memory path, batch by batch."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from tfddn import evaluation, predict, training
from tfddn.evaluation import PER_ROW_KEYS
from tfddn.models.config import ModelConfig


@pytest.fixture(scope="module", params=["ddn", "bbddn"])
def run(request, tiny_marketplace, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("evaluate_run") / request.param)
    config = training.TrainConfig(data_dir=tiny_marketplace["data_dir"], run_dir=run_dir,
                                  epochs=1, batch_size=256, verbose=0)
    training.train(config, ModelConfig(kind=request.param, num_components=2,
                                       learning_rate=3e-3))
    return run_dir


def _in_memory_metrics(run_dir, data_dir, truth_path, batch_size):
    """The pre-streaming `evaluate_run`: every row's predictions and raw values at once
    (the model called on batches of the same size: its float32 round-off depends on it)."""
    model, config, _ = training.load_run(run_dir)
    predictions, frame = predict.predict_split(model, config, data_dir, batch_size=batch_size)
    predictions, _ = predict.attach_ground_truth(predictions, frame, truth_path)
    return evaluation.evaluate(predictions)


def test_streaming_evaluate_run_equals_the_in_memory_path(run, tiny_marketplace, tmp_path):
    data_dir, truth = tiny_marketplace["data_dir"], tiny_marketplace["logs"].ground_truth_path
    out_dir = str(tmp_path / "report")
    metrics = predict.evaluate_run(run, data_dir, out_dir, truth, batch_size=37)
    expected = _in_memory_metrics(run, data_dir, truth, batch_size=37)
    assert expected["examples"] > 8 * 37  # many batches, the last one partial
    assert expected["stddev_corr_truth"] is not None
    for key, value in expected.items():
        if key in PER_ROW_KEYS:
            continue
        if value is None or isinstance(value, int):
            assert metrics[key] == value, key
        else:  # sums in another order
            assert metrics[key] == pytest.approx(value, rel=1e-10, abs=1e-15), key
    with open(os.path.join(out_dir, "metrics.json")) as fh:
        assert json.load(fh) == metrics
    for name in ("calibration.png", "pit.png", "truth.png", "summary.md"):
        assert os.path.getsize(os.path.join(out_dir, name)) > 0


def test_rows_without_ground_truth_are_refused(run, tiny_marketplace, tmp_path):
    truth = pd.read_parquet(tiny_marketplace["logs"].ground_truth_path)
    partial = str(tmp_path / "partial.parquet")
    truth.iloc[::2].to_parquet(partial)
    with pytest.raises(ValueError, match=r"of the rows have a ground-truth entry"):
        predict.evaluate_run(run, tiny_marketplace["data_dir"], str(tmp_path / "r"), partial)
    np.testing.assert_equal(os.path.exists(tmp_path / "r" / "metrics.json"), False)
