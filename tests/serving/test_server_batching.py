"""Server-side batching: concurrent requests are merged, and answers equal unbatched ones."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from serving.batching import Batcher
from serving.metrics import Metrics
from serving.server import ServerHandle
from serving.server_config import BatchingParameters, ServerConfig

CLIENTS = 12
# The requests of each signature add up to 12 rows (see `_request`), so with a batch of 12
# and a long timeout each signature's queue runs exactly once, when its last request
# arrives: what is batched does not depend on how fast the clients are.
BATCH_ROWS = 12
BATCH_TIMEOUT_MICROS = 20_000_000  # only reached if requests go missing (then the test fails)


@pytest.fixture(scope="module")
def batching_server(model_versions, install_version, tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    base_path = str(root / "ddn")
    install_version(base_path, model_versions[2], 2)
    parameters = root / "batching.config"
    parameters.write_text(f"max_batch_size {{ value: {BATCH_ROWS} }}\n"
                          f"batch_timeout_micros {{ value: {BATCH_TIMEOUT_MICROS} }}\n"
                          "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n")
    config = ServerConfig(model_name="ddn", model_base_path=base_path, enable_batching=True,
                          batching_parameters_file=str(parameters))
    handle = ServerHandle.start(config)
    yield handle
    handle.stop()


def _request(index: int) -> dict:
    """Odd indices ask `bid_score`, even ones `serving_default`; 12 rows per signature."""
    rows = 1 + index % 3
    if index % 2:
        return {"signature_name": "bid_score", "instances": [index + r / 10 for r in range(rows)]}
    return {"inputs": {"advertiser": [f"a{index}-{r}" for r in range(rows)],
                       "bid": [index * 0.25 + r for r in range(rows)]}}


def test_batched_answers_equal_unbatched_ones(batching_server, server, http):
    assert sum(1 + i % 3 for i in range(0, CLIENTS, 2)) == BATCH_ROWS
    assert sum(1 + i % 3 for i in range(1, CLIENTS, 2)) == BATCH_ROWS
    batched: dict[int, tuple] = {}

    def client(index: int):
        batched[index] = http("POST", f"{batching_server.rest_url}/v1/models/ddn:predict",
                              _request(index))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for index in range(CLIENTS):
        status, body = batched[index]
        expected_status, expected = http("POST", f"{server.rest_url}/v1/models/ddn:predict",
                                         _request(index))
        assert status == expected_status == 200, body
        if "predictions" in expected:
            np.testing.assert_allclose(body["predictions"], expected["predictions"], rtol=1e-6)
        else:
            for name in ("ctr_mean", "ctr_stddev"):
                np.testing.assert_allclose(body["outputs"][name], expected["outputs"][name],
                                           rtol=1e-5)
            assert body["outputs"]["advertiser_echo"] == expected["outputs"]["advertiser_echo"]
    metrics = batching_server.metrics
    assert metrics.input_batch_size.count("ddn") == CLIENTS
    assert metrics.processed_batch_size.count("ddn") == 2  # one run per signature


def test_batching_rejects_inputs_with_different_batch_sizes(batching_server, http):
    status, body = http("POST", f"{batching_server.rest_url}/v1/models/ddn:predict",
                        {"inputs": {"advertiser": ["a", "b"], "bid": [1.0]}})
    assert status == 400
    assert "Batching Run() input tensors must have equal 0th-dimension size" in body["error"]
    status, body = http("POST", f"{batching_server.rest_url}/v1/models/ddn:predict",
                        {"signature_name": "bid_score", "instances": [1.0] * BATCH_ROWS})
    assert (status, body) == (200, {"predictions": [4.0] * BATCH_ROWS})  # a full batch


@pytest.mark.parametrize("timeout_micros", [0, 1000])
def test_a_lone_request_runs_when_its_queue_times_out(timeout_micros):
    """Fewer rows than a batch and nobody else coming: the timer (or, at 0, the next
    event-loop turn) runs the queue; the test waits for the answer, not for the clock."""
    metrics = Metrics()
    servable = SimpleNamespace(name="m")
    signature = SimpleNamespace(name="double", run=lambda inputs: {"y": 2 * inputs["x"]})
    params = BatchingParameters(max_batch_size=BATCH_ROWS, batch_timeout_micros=timeout_micros)

    async def one_request():
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            batcher = Batcher(params, executor, metrics)
            return await asyncio.wait_for(
                batcher.run(servable, signature, {"x": np.array([1.0, 2.5])}), timeout=60)

    np.testing.assert_array_equal(asyncio.run(one_request())["y"], [2.0, 5.0])
    assert metrics.processed_batch_size.count("m") == 1
