"""Edge-case training data (issue #12): a clear message or a run that works, never a
half-written run directory."""

import json
import os

import pytest

from tfddn import training
from tfddn.errors import UserError
from tfddn.models.config import ModelConfig

from specs import CSV_HEADER, CSV_SPEC


def _preprocess(tmp_path, rows, name="data"):
    from beam import preprocess

    logs = tmp_path / f"{name}.csv"
    logs.write_text(f"{CSV_HEADER}\n"
                    + "".join(f"{t},{p},{c},{n}\n" for t, p, c, n in rows))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(CSV_SPEC))
    out = str(tmp_path / name)
    preprocess.run(["--input", str(logs), "--spec", str(spec), "--out_dir", out])
    return out


def _config(data_dir, run_dir, **kwargs):
    return training.TrainConfig(data_dir=data_dir, run_dir=run_dir, epochs=2, batch_size=64,
                                verbose=0, **kwargs)


@pytest.mark.parametrize("clicks, words", [(0, "0 clicks"), (5, "a click for every")])
def test_a_constant_ctr_is_refused_with_the_reason(tmp_path, clicks, words):
    rows = [(f"t{i}", f"p{i % 3}", clicks, 5) for i in range(40)]
    data_dir = _preprocess(tmp_path, rows)
    run_dir = str(tmp_path / "run")
    with pytest.raises(UserError, match=f"has {words}.*nothing to learn a CTR from"):
        training.train(_config(data_dir, run_dir), ModelConfig(kind="bbddn"))
    assert not os.path.exists(os.path.join(run_dir, "config.json"))


def test_a_single_row_trains_without_early_stopping(tmp_path, capsys):
    data_dir = _preprocess(tmp_path, [("t1", "p1", 1, 10)])
    run_dir = str(tmp_path / "run")
    summary = training.train(_config(data_dir, run_dir), ModelConfig(kind="ddn"))
    assert "the validation split of --data_dir (0 examples" in capsys.readouterr().err
    assert summary["epochs_run"] == 2 and summary["best_val_loss"] is None
    model, config, loaded = training.load_run(run_dir)  # a complete, loadable run
    assert loaded["epochs_run"] == 2 and config.kind == "ddn"
    history = json.load(open(os.path.join(run_dir, "history.json")))
    assert len(history["loss"]) == 2 and "val_loss" not in history


def test_an_empty_eval_split_is_a_clear_error(tmp_path):
    from tfddn.predict import evaluate_run

    data_dir = _preprocess(tmp_path, [("t1", "p1", 1, 10)])
    meta = json.load(open(os.path.join(data_dir, "metadata.json")))
    if meta["examples"]["eval"]:
        pytest.skip("the single key hashed into eval")
    run_dir = str(tmp_path / "run")
    training.train(_config(data_dir, run_dir), ModelConfig(kind="reg"))
    with pytest.raises(UserError, match="eval split .* is empty"):
        evaluate_run(run_dir, data_dir, str(tmp_path / "evaluation"), None, "eval")


def test_an_unfinished_run_is_not_loaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished training run"):
        training.load_run(str(tmp_path))


def test_a_train_split_emptied_by_the_validation_split_says_so():
    meta = {"examples": {"train": 0, "validation": 1, "eval": 0},
            "clicks": {"train": 0, "validation": 1, "eval": 0},
            "impressions": {"train": 0, "validation": 10, "eval": 0},
            "split": {"validation_fraction": 0.1}}
    training_data = training.TrainingData(spec=None, metadata=meta, vocabularies={},
                                          numeric_stats={})
    with pytest.raises(UserError, match="all 1 training examples went to the validation"):
        training.check_training_data(training_data, "data")
