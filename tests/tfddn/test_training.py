"""Training, tuning and evaluation end to end on a tiny generated marketplace."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from tfddn import data, predict, training, tuning
from tfddn.errors import UserError
from tfddn.models.config import ModelConfig


def _train(data_dir, run_dir, kind, epochs=3):
    config = training.TrainConfig(data_dir=data_dir, run_dir=run_dir, epochs=epochs,
                                  batch_size=256, verbose=0)
    return training.train(config, ModelConfig(kind=kind, num_components=2,
                                              learning_rate=3e-3))


@pytest.mark.slow
def test_train_saves_a_run_that_reloads_identically(tiny_marketplace, tmp_path):
    data_dir = tiny_marketplace["data_dir"]
    run_dir = str(tmp_path / "ddn")
    summary = _train(data_dir, run_dir, "ddn")
    assert np.isfinite(summary["best_val_loss"])
    assert not os.path.exists(os.path.join(run_dir, "backup"))  # removed after success
    history = json.load(open(os.path.join(run_dir, "history.json")))
    assert history["loss"][-1] < history["loss"][0]
    model, config, _ = training.load_run(run_dir)
    assert config.kind == "ddn" and config.num_components == 2
    spec = data.load_data_spec(data_dir)
    features, _ = next(iter(data.make_dataset(data.split_files(data_dir, "eval"), spec,
                                              data.InputConfig(batch_size=64, shuffle=False))))
    reloaded, _, _ = training.load_run(run_dir)
    np.testing.assert_allclose(model(features).numpy(), reloaded(features).numpy(), rtol=1e-6)


def test_fit_and_validation_subsets_partition_the_train_split(tiny_marketplace):
    data_dir = tiny_marketplace["data_dir"]
    spec = data.load_data_spec(data_dir)

    def count(subset):
        ds = training.keras_dataset(data_dir, spec, "train", 512, subset=subset)
        return sum(int(y.shape[0]) for _, y in ds)

    fit, val, everything = count("fit"), count("validation"), count("all")
    assert fit + val == everything
    assert 0.05 < val / everything < 0.15


def test_evaluate_with_ground_truth(tiny_marketplace, tmp_path):
    data_dir = tiny_marketplace["data_dir"]
    run_dir = str(tmp_path / "reg")
    _train(data_dir, run_dir, "reg", epochs=2)
    out_dir = str(tmp_path / "report")
    metrics = predict.evaluate_run(run_dir, data_dir, out_dir,
                                   tiny_marketplace["logs"].ground_truth_path)
    assert metrics["examples"] == data.read_metadata(data_dir)["examples"]["eval"]
    assert 0 < metrics["mse_truth"] < metrics["mse"]  # truth is far less noisy than D1 CTRs
    # REG has no distribution: no density NLL or intervals, but a count NLL (Binomial)
    assert metrics["nll"] > 0 and metrics["nll_density"] is None
    assert metrics["coverage_90"] is None
    for name in ("metrics.json", "summary.md", "calibration.png", "truth.png"):
        assert os.path.getsize(os.path.join(out_dir, name)) > 0


@pytest.mark.slow
def test_tune_is_resumable_and_retrains_the_best(tiny_marketplace, tmp_path):
    data_dir = tiny_marketplace["data_dir"]
    train_config = training.TrainConfig(data_dir=data_dir, run_dir=str(tmp_path / "tune"),
                                        epochs=1, batch_size=512, verbose=0)
    tune_config = tuning.TuneConfig(kind="mdn", max_trials=2, trial_epochs=1)
    summary = tuning.tune(train_config, tune_config)
    record = json.load(open(tmp_path / "tune" / "tuning.json"))
    assert len(record["trials"]) == 2
    assert record["best"] == summary["model"]
    # A second call reloads the finished search instead of starting it again.
    tuning.tune(train_config, tune_config)
    trial_dirs = [d for d in os.listdir(tmp_path / "tune" / "tuner" / "mdn")
                  if d.startswith("trial_")]
    assert len(trial_dirs) == 2


class _Kill(Exception):
    pass


class _KillAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Kill()


@pytest.mark.slow
def test_training_resumes_after_a_kill(tiny_marketplace, tmp_path):
    config = training.TrainConfig(data_dir=tiny_marketplace["data_dir"],
                                  run_dir=str(tmp_path / "run"), epochs=3, patience=5,
                                  batch_size=512, verbose=0)
    model_config = ModelConfig(kind="mdn", num_components=2)
    try:
        training.train(config, model_config, callbacks=(_KillAfterEpoch(1),))
    except _Kill:
        pass
    assert os.path.isdir(tmp_path / "run" / "backup")
    assert not os.path.exists(tmp_path / "run" / "model.keras")
    killed = json.load(open(tmp_path / "run" / "backup" / "history.json"))
    assert len(killed["loss"]) == 2  # epochs 0 and 1 finished before the kill
    other = dataclasses.replace(model_config, num_components=3)
    with pytest.raises(UserError, match=r"other settings \(model.num_components: 2 -> 3\).*"
                                        r"--restart"):
        training.train(config, other)
    summary = training.train(config, model_config)
    history = json.load(open(tmp_path / "run" / "history.json"))
    # Only epoch 2 ran after the resume; the history and the epoch count hold all three,
    # and early stopping's best is over all of them.
    assert len(history["loss"]) == 3 and summary["epochs_run"] == 3
    assert history["loss"][:2] == killed["loss"]
    assert summary["best_val_loss"] == pytest.approx(min(history["val_loss"]))


def test_cli_train_reads_a_config_file_and_flags_win(tiny_marketplace, tmp_path):
    from tfddn import cli

    config = tmp_path / "train.yaml"
    config.write_text(f"data_dir: {tiny_marketplace['data_dir']}\nrun_dir: {tmp_path / 'run'}\n"
                      "kind: mdn\nepochs: 5\nnum_components: 2\ntower_units: [16, 8]\n"
                      "progress: 0\n")
    assert cli.main(["train", "--config", str(config), "--epochs", "1"]) == 0
    summary = json.load(open(tmp_path / "run" / "config.json"))
    assert summary["model"]["kind"] == "mdn"
    assert summary["model"]["tower_units"] == [16, 8]
    assert summary["train"]["epochs"] == 1 and summary["epochs_run"] == 1


@pytest.mark.slow
def test_validation_calibration_warns_on_a_miscalibrated_model(tiny_marketplace, tmp_path):
    """The run records its validation calibration; halving every mean CTR is flagged."""
    data_dir = tiny_marketplace["data_dir"]
    summary = _train(data_dir, str(tmp_path / "bbddn"), "bbddn", epochs=2)
    calibration = summary["calibration"]
    assert calibration["mass_below_zero"] == 0.0  # a Beta mixture lives on [0, 1]
    model, config, _ = training.load_run(str(tmp_path / "bbddn"))
    head = model.get_layer("density_network").get_layer("mixture_head")
    k = config.num_components
    bias = head.bias.numpy()
    bias[k:2 * k] -= np.log(2.0)  # logit - log 2: every (small) mean CTR roughly halved
    head.bias.assign(bias)
    spec = data.load_data_spec(data_dir)
    val_ds = training.keras_dataset(data_dir, spec, "validation", 256)  # the written split
    shifted = training.validation_calibration(model, config, val_ds)
    assert shifted["validation_examples"] == calibration["validation_examples"] > 0
    np.testing.assert_allclose(shifted["predicted_clicks_ratio"],
                               calibration["predicted_clicks_ratio"] / 2, rtol=0.1)
    assert shifted["predicted_clicks_ratio"] < 0.9
    assert any("observed clicks" in w for w in shifted["warnings"])


@pytest.mark.slow
def test_bbddn_mean_is_calibrated_on_the_train_split(tiny_marketplace, tmp_path):
    data_dir = tiny_marketplace["data_dir"]
    summary = _train(data_dir, str(tmp_path / "bbddn"), "bbddn", epochs=2)
    report = summary["mean_calibration"]
    assert report["clicks"] == data.read_metadata(data_dir)["clicks"]["train"]
    model, config, _ = training.load_run(str(tmp_path / "bbddn"))  # the saved model has it
    spec = data.load_data_spec(data_dir)
    train_ds = training.keras_dataset(data_dir, spec, "train", 256)
    after = training.validation_calibration(model, config, train_ds)["predicted_clicks_ratio"]
    np.testing.assert_allclose(after, 1.0, atol=1e-3)
    # The shift moved a level that was off: undoing it restores the reported ratio.
    head = model.get_layer("density_network").get_layer("mixture_head")
    bias = head.bias.numpy()
    bias[2:4] -= report["logit_shift"]
    head.bias.assign(bias)
    before = training.validation_calibration(model, config, train_ds)["predicted_clicks_ratio"]
    np.testing.assert_allclose(before, report["ratio_before"], rtol=1e-3)


def test_an_epoch_reads_the_train_split_once_with_known_steps(tiny_marketplace):
    data_dir = tiny_marketplace["data_dir"]
    metadata = data.read_metadata(data_dir)
    config = training.TrainConfig(data_dir=data_dir, run_dir="unused", batch_size=64)
    epoch = training.fit_and_validation_datasets(config, data.load_data_spec(data_dir),
                                                 metadata)
    n = metadata["examples"]["train"]
    assert epoch.steps_per_epoch == -(-n // 64) and epoch.validation_examples == metadata[
        "examples"]["validation"] > 0
    sizes = [int(y.shape[0]) for _, y in epoch.fit.take(2 * epoch.steps_per_epoch)]
    assert sum(sizes[:epoch.steps_per_epoch]) == n  # one pass per epoch, then the next
    assert sum(sizes[epoch.steps_per_epoch:]) == n
    assert sum(int(y.shape[0]) for _, y in epoch.validation) == epoch.validation_examples


def test_data_without_a_written_validation_split_uses_the_hash_subsets():
    def meta(fraction, examples):
        return {"split": {"validation_fraction": fraction}, "examples": examples}

    assert training.validation_split_examples(meta(0.1, {"train": 9, "validation": 1})) == 1
    assert training.validation_split_examples(meta(0.1, {"train": 9, "validation": 0})) == 0
    assert training.validation_split_examples(meta(0.0, {"train": 9, "validation": 0})) is None
    assert training.validation_split_examples({"split": {}, "examples": {"train": 9}}) is None
