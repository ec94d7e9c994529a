"""Training past one machine: `tf.distribute.MultiWorkerMirroredStrategy` from `TF_CONFIG`.

When `TF_CONFIG` names a cluster of more than one training task (`chief` and `worker`
entries), every task runs the same `tfddn train` command; each holds a replica of the
model, and the gradients of every step are summed over all of them by collective ops
(gRPC between machines, ring all-reduce on CPUs). docs/DISTRIBUTED.md has the commands.

The rules the tasks follow, so that they stay in step and only one writes:

- `--batch_size` is the *global* batch: each of the N replicas computes `batch_size / N`
  examples of a step, so one epoch is still `ceil(train examples / batch_size)` steps
  (`metadata.json`), the same as on one machine with the same flags.
- Each task reads a disjoint shard of the train and validation splits, cut before the
  shuffle (`sharded_records`): by file when a split has at least N files, else by
  record (every task then reads all files and keeps every N-th record, the way
  `tf.data`'s DATA auto-shard policy does; FILE sharding of fewer files than tasks fails).
- The chief (`chief`, or `worker` 0 of a cluster without one) writes the run directory;
  the other tasks run the same callbacks and saves into a temporary directory that they
  delete (the Keras multi-worker pattern: saving may read synchronised variables, which
  is a collective op every task must join).

References:
    TensorFlow guide "Multi-worker training with Keras" (TF_CONFIG, sharding, saving).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import tensorflow as tf

from tfddn.errors import UserError

__all__ = ["Cluster", "cluster_from_env", "keras_workarounds", "per_replica_batch_size",
           "sharded_records", "strategy"]

_STRATEGIES: dict = {}  # one MultiWorkerMirroredStrategy per process (collectives set once)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in a `TF_CONFIG` cluster.

    Attributes:
        num_workers: training tasks (the chief and the workers).
        task: `"chief:0"`, `"worker:1"`, ...
        is_chief: whether this task writes the run directory.
    """

    num_workers: int
    task: str
    is_chief: bool


def cluster_from_env(environ=None) -> Cluster | None:
    """The cluster of `TF_CONFIG`; None when it is unset or names one training task.

    Raises:
        UserError: `TF_CONFIG` is not JSON, or this task is not a chief or worker.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw:
        return None
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
        num_workers = len(cluster.get("chief", ())) + len(cluster.get("worker", ()))
    except (ValueError, AttributeError, TypeError) as error:
        raise UserError(f"TF_CONFIG is not a JSON cluster spec ({error}). "
                        f"Received: TF_CONFIG={raw!r}") from None
    if num_workers <= 1:
        return None
    task_type, index = task.get("type"), int(task.get("index", 0))
    if task_type not in ("chief", "worker"):
        raise UserError(f"tfddn train runs chief and worker tasks only (no parameter "
                        f"servers or evaluators). Received: task={task!r}")
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0
                                        and "chief" not in cluster)
    return Cluster(num_workers, f"{task_type}:{index}", is_chief)


def strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The process's `MultiWorkerMirroredStrategy` (created once: TensorFlow configures
    collective ops at startup, so call this before any other TensorFlow work)."""
    if "strategy" not in _STRATEGIES:
        _STRATEGIES["strategy"] = tf.distribute.MultiWorkerMirroredStrategy()
    return _STRATEGIES["strategy"]


def per_replica_batch_size(global_batch_size: int, num_replicas: int) -> int:
    """`global_batch_size / num_replicas`, which must be a whole number.

    Raises:
        UserError: the global batch does not divide among the replicas.
    """
    if global_batch_size % num_replicas:
        raise UserError(f"--batch_size is the global batch of all {num_replicas} replicas "
                        f"and must be a multiple of {num_replicas}. Received: "
                        f"batch_size={global_batch_size}")
    return global_batch_size // num_replicas


def sharded_records(files: list[str], context: tf.distribute.InputContext
                    ) -> tf.data.Dataset:
    """The serialised records of `files` that this input pipeline reads.

    By file when there are at least as many files as pipelines (each reads only its
    own), else by record in file order (each reads every file, keeps every N-th record).
    The shards are disjoint and together hold every record once.
    """
    n, index = context.num_input_pipelines, context.input_pipeline_id
    if len(files) >= n:
        return tf.data.Dataset.from_tensor_slices(files).shard(n, index).interleave(
            lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
            cycle_length=min(len(files) // n, 8), num_parallel_calls=tf.data.AUTOTUNE)
    return tf.data.TFRecordDataset(files, compression_type="GZIP").shard(n, index)


@contextlib.contextmanager
def keras_workarounds(model, strategy: tf.distribute.Strategy, element_spec):
    """Within: `model.fit` / `evaluate` under `strategy` with this project's models.

    Two bugs of Keras 3.15's TensorFlow trainer, each fixed for the `with` block only:

    1. Before `fit` it builds the metrics, loss and optimizer from the first distributed
       batch averaged over the replicas (`_maybe_symbolic_build`:
       `strategy.reduce("MEAN", batch)`), which fails for a dict of (string) features:
       "Attempt to convert a value ({'target_id': PerReplica: ...}) with an unsupported
       type (<class 'dict'>) to a Tensor" (keras-team/keras#20329, open). Here the same
       state is built from the batch's `element_spec` (shapes and dtypes are all that
       build reads) and Keras's step is skipped.
    2. Under `MultiWorkerMirroredStrategy` it averages each step's metrics over the
       workers with `strategy.reduce("MEAN", value, axis=0)`, which fails for the scalar
       metrics every model returns: "Invalid reduction dimension 0 for input with 0
       dimensions" (tensorflow/tensorflow#72388). Here scalars use `axis=None`, the
       mean of the replicas' values, which is what Keras meant.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
                strategy):
            return tf.nest.map_structure(
                lambda v: (strategy.reduce("MEAN", v, axis=None) if v.shape.rank == 0
                           else original(v, strategy, reduction)), values)
        return original(values, strategy, reduction)

    with strategy.scope():
        model._symbolic_build(data_batch=element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield model
    finally:
        tf_trainer.reduce_per_replica = original
        del model._maybe_symbolic_build
