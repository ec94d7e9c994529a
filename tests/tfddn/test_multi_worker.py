"""Training past one machine: MultiWorkerMirroredStrategy from TF_CONFIG (tfddn.multi_worker).

The end-to-end test starts two real `tfddn train` processes on loopback ports, a chief
and a worker, as two machines would run them (docs/DISTRIBUTED.md).
"""

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfddn import multi_worker, training
from tfddn.errors import UserError


def _tf_config(cluster, task_type, index):
    return {"TF_CONFIG": json.dumps({"cluster": cluster,
                                     "task": {"type": task_type, "index": index}})}


@pytest.mark.parametrize("cluster, task, expected", [
    ({"worker": ["a:1", "b:1"]}, ("worker", 0), multi_worker.Cluster(2, "worker:0", True)),
    ({"worker": ["a:1", "b:1"]}, ("worker", 1), multi_worker.Cluster(2, "worker:1", False)),
    ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, ("chief", 0),
     multi_worker.Cluster(3, "chief:0", True)),
    ({"chief": ["a:1"], "worker": ["b:1"]}, ("worker", 0),
     multi_worker.Cluster(2, "worker:0", False)),
    ({"worker": ["a:1"]}, ("worker", 0), None),  # one task: the single-machine path
])
def test_cluster_from_tf_config(cluster, task, expected):
    assert multi_worker.cluster_from_env(_tf_config(cluster, *task)) == expected
    assert multi_worker.cluster_from_env({}) is None


def test_unsupported_tasks_and_batches_are_refused():
    with pytest.raises(UserError, match="chief and worker tasks only"):
        multi_worker.cluster_from_env(_tf_config({"worker": ["a:1", "b:1"], "ps": ["c:1"]},
                                                 "ps", 0))
    with pytest.raises(UserError, match="not a JSON cluster spec"):
        multi_worker.cluster_from_env({"TF_CONFIG": "{worker"})
    assert multi_worker.per_replica_batch_size(1024, 4) == 256
    with pytest.raises(UserError, match="multiple of 3. Received: batch_size=1024"):
        multi_worker.per_replica_batch_size(1024, 3)


@pytest.mark.parametrize("num_files, pipelines", [(1, 2), (3, 2), (4, 2), (2, 3)])
def test_shards_are_disjoint_and_cover_every_record(tmp_path, num_files, pipelines):
    files, expected = [], set()
    for f in range(num_files):
        path = str(tmp_path / f"part-{f}.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for r in range(7):
                writer.write(f"{f}-{r}".encode())
                expected.add(f"{f}-{r}".encode())
        files.append(path)
    shards = [{r.numpy() for r in multi_worker.sharded_records(
        files, tf.distribute.InputContext(pipelines, i, pipelines))}
        for i in range(pipelines)]
    assert set().union(*shards) == expected
    assert sum(len(s) for s in shards) == len(expected)  # disjoint
    assert all(shards)  # every worker has data (by record when fewer files than workers)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_a_chief_and_a_worker_train_one_model_that_only_the_chief_writes(tiny_marketplace,
                                                                         tmp_path):
    data_dir = tiny_marketplace["data_dir"]
    cluster = {name: [f"127.0.0.1:{port}"]
               for name, port in zip(("chief", "worker"), _free_ports(2))}
    epochs, batch_size = 3, 256
    flags = ["--data_dir", data_dir, "--kind", "ddn", "--num_components", "2",
             "--learning_rate", "0.003", "--epochs", str(epochs), "--batch_size",
             str(batch_size), "--patience", str(epochs), "--progress", "2"]
    run_dir, worker_run_dir = tmp_path / "run", tmp_path / "worker_run"
    worker_tmp = tmp_path / "worker_tmp"
    worker_tmp.mkdir()
    threads = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
               "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tfddn.cli", "train", "--run_dir", str(run), *flags],
            env={**os.environ, **threads, **_tf_config(cluster, task, 0), "TMPDIR": str(tmp)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for task, run, tmp in (("chief", run_dir, tmp_path), ("worker", worker_run_dir,
                                                                worker_tmp))]
    try:
        outputs = [p.communicate(timeout=300) for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, f"{p.args}\n{out}\n{err}"
    (chief_out, _), (worker_out, _) = outputs

    # --batch_size is global: an epoch is ceil(train examples / batch) steps of 2 x 128.
    metadata = json.load(open(os.path.join(data_dir, "metadata.json")))
    steps = math.ceil(metadata["examples"]["train"] / batch_size)
    assert chief_out.count(f"{steps}/{steps} - ") == epochs
    assert "Epoch" not in worker_out  # the chief alone shows progress
    # Every task saw the same (all-reduced) losses, so early stopping agreed.
    assert chief_out.splitlines()[-1].split(";")[0] == worker_out.splitlines()[-1].split(";")[0]

    # The chief wrote the run; the worker wrote nothing and removed its temporary dir.
    assert not worker_run_dir.exists() and not os.listdir(worker_tmp)
    assert not (run_dir / "backup").exists()
    model, config, summary = training.load_run(str(run_dir))
    assert summary["cluster"] == {"num_workers": 2, "task": "chief:0", "replicas": 2}
    assert summary["epochs_run"] == epochs
    assert all(np.isfinite(w).all() for w in model.get_weights())
    # The saved model is the best epoch's, and it learned: its validation loss, over
    # the whole split on one machine, is the history's best and beats the initial model.
    data = training.load_training_data(data_dir)
    validation = training.keras_dataset(data_dir, data.spec, "validation", batch_size)
    trained = training.compile_model(model, config).evaluate(validation, verbose=0)[0]
    initial = training.new_model(data, config, seed=0).evaluate(validation, verbose=0)[0]
    assert trained == pytest.approx(summary["best_val_loss"], abs=1e-3)
    assert trained < initial - 0.01


_MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfddn import training
from tfddn.models.config import ModelConfig
training._strategy = lambda cluster=None: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
summary = training.train(training.TrainConfig(data_dir=sys.argv[1], run_dir=sys.argv[2],
                                              epochs=1, batch_size=256, verbose=0),
                         ModelConfig(kind="ddn", num_components=2))
print(summary["best_val_loss"])
"""


@pytest.mark.slow
def test_two_local_replicas_train(tiny_marketplace, tmp_path):
    """The one-machine MirroredStrategy path (several GPUs), on two logical CPUs: Keras
    3.15 fails before the first step without `multi_worker.keras_workarounds` ("Value
    for attr 'T' of string is not in the list of allowed values", averaging the string
    features of the first batch)."""
    result = subprocess.run([sys.executable, "-c", _MIRRORED, tiny_marketplace["data_dir"],
                             str(tmp_path / "run")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert math.isfinite(float(result.stdout.strip().splitlines()[-1]))
    assert training.load_run(str(tmp_path / "run"))[2]["epochs_run"] == 1
