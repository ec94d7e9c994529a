"""Server-side batching of concurrent predict requests (TF Serving's BatchingSession).

Requests to the same signature of the same loaded version wait in one queue. The
queue is run as one batch when its rows reach `max_batch_size`, or
`batch_timeout_micros` after its first request (0: on the next event-loop turn,
i.e. whatever arrived together). Inside a batch, requests whose inputs have equal
dtypes and equal shapes after dimension 0 are concatenated along dimension 0, run
once, and every output is split back by each request's row count, so every client
gets exactly the rows it sent. At most `num_batch_threads` batches run at once;
when `max_enqueued_batches` batches are already waiting, new requests fail fast
with UNAVAILABLE.

Like TF Serving, every input needs a batch dimension and all inputs of one request
the same 0th-dimension size. Differences: a request larger than `max_batch_size`
runs on its own (TF Serving splits it), and requests with different inner shapes
run as separate groups (TF Serving pads or rejects them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Mapping

import numpy as np

from serving.metrics import Metrics
from serving.servable import ServableVersion, Signature
from serving.server_config import BatchingParameters
from serving.status import ServingError, invalid_argument

__all__ = ["Batcher"]


class _Task:
    def __init__(self, inputs: Mapping[str, np.ndarray], rows: int, future: asyncio.Future):
        self.inputs, self.rows, self.future = inputs, rows, future
        self.enqueued = time.perf_counter()


class _Queue:
    def __init__(self, servable: ServableVersion, signature: Signature):
        self.servable, self.signature = servable, signature
        self.tasks: list[_Task] = []
        self.rows = 0
        self.timer: asyncio.Handle | None = None


def _group_key(inputs: Mapping[str, np.ndarray]) -> tuple:
    return tuple((name, inputs[name].dtype.str, inputs[name].shape[1:]) for name in sorted(inputs))


class Batcher:
    """Batches `run` calls per (version, signature) on the running event loop.

    Args:
        params: batch size, timeout, queue and thread limits.
        executor: the thread pool that runs the model.
        metrics: where batch sizes and queueing delays are recorded.
    """

    def __init__(self, params: BatchingParameters, executor: concurrent.futures.Executor,
                 metrics: Metrics):
        self.params = params
        self.executor = executor
        self.metrics = metrics
        self._queues: dict[tuple[int, str], _Queue] = {}
        self._slots = asyncio.Semaphore(params.num_batch_threads)
        self._waiting = 0
        self._running: set[asyncio.Task] = set()

    async def run(self, servable: ServableVersion, signature: Signature,
                  inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs `inputs` as part of a batch; returns this request's rows of every output."""
        if any(array.ndim == 0 for array in inputs.values()):
            raise invalid_argument("Batching Run() input tensors must have at least one "
                                   "dimension")
        sizes = {array.shape[0] for array in inputs.values()}
        if len(sizes) != 1:
            raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension "
                                   "size")
        rows = sizes.pop()
        self.metrics.input_batch_size.observe(rows, servable.name)
        if rows > self.params.max_batch_size:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, signature.run, inputs)
        if self._waiting >= self.params.max_enqueued_batches:
            raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was "
                                              "submitted is full")
        key = (id(servable), signature.name)
        queue = self._queues.get(key)
        if queue is not None and queue.rows + rows > self.params.max_batch_size:
            self._flush(key)
            queue = None
        if queue is None:
            queue = self._queues[key] = _Queue(servable, signature)
        task = _Task(inputs, rows, asyncio.get_running_loop().create_future())
        queue.tasks.append(task)
        queue.rows += rows
        if queue.rows >= self.params.max_batch_size:
            self._flush(key)
        elif queue.timer is None:
            loop = asyncio.get_running_loop()
            delay = self.params.batch_timeout_micros / 1e6
            queue.timer = (loop.call_later(delay, self._flush, key) if delay > 0
                           else loop.call_soon(self._flush, key))
        return await task.future

    def _flush(self, key: tuple[int, str]) -> None:
        queue = self._queues.pop(key, None)
        if queue is None:
            return
        if queue.timer is not None:
            queue.timer.cancel()
        self._waiting += 1
        job = asyncio.get_running_loop().create_task(self._execute(queue))
        self._running.add(job)
        job.add_done_callback(self._running.discard)

    async def _execute(self, queue: _Queue) -> None:
        async with self._slots:
            self._waiting -= 1
            self.metrics.processed_batch_size.observe(queue.rows, queue.servable.name)
            groups: dict[tuple, list[_Task]] = {}
            for task in queue.tasks:
                self.metrics.queuing_latency.observe(
                    (time.perf_counter() - task.enqueued) * 1e6, queue.servable.name)
                groups.setdefault(_group_key(task.inputs), []).append(task)
            for tasks in groups.values():
                await self._run_group(queue.signature, tasks)

    async def _run_group(self, signature: Signature, tasks: list[_Task]) -> None:
        names = sorted(tasks[0].inputs)
        batch = {n: np.concatenate([t.inputs[n] for t in tasks]) for n in names}
        total = sum(t.rows for t in tasks)
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self.executor, signature.run, batch)
            for name, array in outputs.items():
                if array.ndim == 0 or array.shape[0] != total:
                    raise ServingError("INTERNAL", f"Batched output tensor {name} has shape "
                                                   f"{list(array.shape)}, expected 0th "
                                                   f"dimension {total}")
        except Exception as err:  # noqa: BLE001 - every waiting request gets the error
            for task in tasks:
                if not task.future.done():
                    task.future.set_exception(err)
            return
        start = 0
        for task in tasks:
            part = {n: a[start:start + task.rows] for n, a in outputs.items()}
            start += task.rows
            if not task.future.done():
                task.future.set_result(part)
