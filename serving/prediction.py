"""The predict path shared by REST and gRPC: find the servable, validate, run.

`lookup` resolves a ModelSpec (name, version or label, signature) to one loaded
version and one signature; the caller keeps that version for the whole request, so
a hot swap never changes the model under a request. `run` validates the tensors
against the signature and runs the model in the thread pool (or through the
batcher), so the event loop stays free while TensorFlow works.

The two front ends report a missing signature differently, as TF Serving does: REST
looks the signature up while parsing JSON (`INVALID_ARGUMENT`), gRPC when running
the request (`FAILED_PRECONDITION`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Mapping, Sequence

import numpy as np

from serving.batching import Batcher
from serving.metrics import Metrics
from serving.model_manager import ModelManager
from serving.servable import ServableVersion, Signature
from serving.server_config import BatchingParameters
from serving.status import ServingError, invalid_argument

__all__ = ["DEFAULT_SIGNATURE", "Predictor"]

DEFAULT_SIGNATURE = "serving_default"


class Predictor:
    """Runs predict requests against the manager's servables.

    Args:
        manager: resolves model specs to loaded versions.
        executor: thread pool for model calls.
        metrics: runtime latency is recorded here.
        batching: batching parameters, or None to run every request on its own.
    """

    def __init__(self, manager: ModelManager, executor: concurrent.futures.Executor,
                 metrics: Metrics, batching: BatchingParameters | None = None):
        self.manager = manager
        self.executor = executor
        self.metrics = metrics
        self.batching = batching
        self._batcher: Batcher | None = None

    def lookup(self, name: str, version: int | None, label: str | None,
               signature_name: str, entrypoint: str) -> tuple[ServableVersion, Signature]:
        servable = self.manager.resolve(name, version, label)
        key = signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(key)
        if signature is None:
            if entrypoint == "REST":
                raise invalid_argument(f'Serving signature name: "{key}" not found in '
                                       "signature def")
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{key}" not found.')
        return servable, signature

    async def run(self, servable: ServableVersion, signature: Signature,
                  inputs: Mapping[str, np.ndarray], dtypes: Mapping[str, int] | None = None,
                  output_filter: Sequence[str] = (), api: str = "Predict"
                  ) -> dict[str, np.ndarray]:
        """Validated, threaded (or batched) run of one request; returns its outputs."""
        signature.check_inputs(inputs, dtypes)
        start = time.perf_counter()
        if self.batching is not None and not output_filter:
            if self._batcher is None:
                self._batcher = Batcher(self.batching, self.executor, self.metrics)
            outputs = await self._batcher.run(servable, signature, inputs)
        else:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self.executor, signature.run, inputs,
                                                 tuple(output_filter))
        self.metrics.runtime_latency.observe((time.perf_counter() - start) * 1e6,
                                             servable.name, api, "TF2")
        return outputs
