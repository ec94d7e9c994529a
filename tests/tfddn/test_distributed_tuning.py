"""keras-tuner's distributed mode with `tfddn tune`: a chief serving the oracle, two workers.

The end-to-end test runs the three as real processes on a loopback port, each with its
own run directory as on three machines (docs/DISTRIBUTED.md), so the files show who
wrote what: trial checkpoints in the workers' directories, the oracle's trial records,
tuning.json and the retrained run in the chief's.
"""

import json
import math
import os
import socket
import subprocess
import sys

import pytest

from tfddn import training, tuning


def test_tuner_role_follows_keras_tuners_variables():
    env = {"KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    assert tuning.tuner_role({}) is None
    assert tuning.tuner_role({**env, "KERASTUNER_TUNER_ID": "chief"}) == "chief"
    assert tuning.tuner_role({**env, "KERASTUNER_TUNER_ID": "tuner1"}) == "worker"
    with pytest.raises(ValueError, match="also needs KERASTUNER_TUNER_ID"):
        tuning.tuner_role(env)


@pytest.mark.slow
def test_two_workers_share_the_trials_and_the_chief_writes_the_run(tiny_marketplace,
                                                                   tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = ["--data_dir", tiny_marketplace["data_dir"], "--kind", "mdn", "--max_trials",
             "3", "--trial_epochs", "1", "--epochs", "1", "--batch_size", "512",
             "--progress", "0"]
    run_dirs = {tuner: tmp_path / tuner for tuner in ("tuner0", "tuner1", "chief")}
    processes = {}
    for tuner, run_dir in run_dirs.items():  # workers first: they wait for the oracle
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner,
               "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port),
               "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
        processes[tuner] = subprocess.Popen(
            [sys.executable, "-m", "tfddn.cli", "tune", "--run_dir", str(run_dir), *flags],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        outputs = {tuner: p.communicate(timeout=400) for tuner, p in processes.items()}
    finally:
        for p in processes.values():
            p.kill()
    for tuner, p in processes.items():
        assert p.returncode == 0, f"{tuner}\n{outputs[tuner][0]}\n{outputs[tuner][1]}"

    # The workers split the trials: each reports its share and holds its checkpoints.
    ran = {}
    for tuner in ("tuner0", "tuner1"):
        line = outputs[tuner][0].strip().splitlines()[-1]
        assert line.startswith(f"{tuner} ran trials ")
        ran[tuner] = set(line.split(" ran trials ")[1].split(";")[0].split(", "))
        project = run_dirs[tuner] / "tuner" / "mdn"
        assert {d for d in os.listdir(project) if d.startswith("trial_")} == {
            f"trial_{t}" for t in ran[tuner]}
        assert (project / f"{tuner}.json").exists()  # keras-tuner's per-tuner state
        assert sorted(os.listdir(run_dirs[tuner])) == ["tuner"]  # no run, no tuning.json
    assert ran["tuner0"] and ran["tuner1"] and not ran["tuner0"] & ran["tuner1"]
    assert ran["tuner0"] | ran["tuner1"] == {"0", "1", "2"}

    # The chief's oracle recorded every trial; it wrote tuning.json and the best run.
    chief = run_dirs["chief"]
    scores = {}
    for t in ("0", "1", "2"):
        record = json.load(open(chief / "tuner" / "mdn" / f"trial_{t}" / "trial.json"))
        assert record["status"] == "COMPLETED" and math.isfinite(record["score"])
        scores[t] = record["score"]
    tuning_record = json.load(open(chief / "tuning.json"))
    assert [t["trial"] for t in tuning_record["trials"]] == sorted(scores, key=scores.get)
    _, config, summary = training.load_run(str(chief))
    assert config.to_dict() == tuning_record["best"] == summary["model"]
    best = tuning_record["trials"][0]["hyperparameters"]
    assert (config.num_components, config.embedding_dim) == (best["num_components"],
                                                             best["embedding_dim"])
    assert "best MDN configuration" in outputs["chief"][0]
