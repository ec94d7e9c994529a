"""Hot swap under load: a new version dir appears while clients keep sending requests."""

from __future__ import annotations

import os
import shutil
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.server import ServerHandle
from serving.server_config import ServerConfig

REST_CLIENTS, GRPC_CLIENTS = 6, 2


@pytest.fixture()
def swap_server(model_versions, install_version, tmp_path):
    base_path = str(tmp_path / "ddn")
    install_version(base_path, model_versions[1], 1)
    config = ServerConfig(model_name="ddn", model_base_path=base_path,
                          file_system_poll_wait_seconds=0.25)
    handle = ServerHandle.start(config)
    yield handle, base_path
    handle.stop()


def _score(http, server, bid: float = 1.0) -> float:
    status, body = http("POST", f"{server.rest_url}/v1/models/ddn:predict",
                        {"signature_name": "bid_score", "instances": [bid]})
    assert status == 200, body
    return body["predictions"][0]


def test_new_version_swaps_in_without_failed_requests(swap_server, model_versions,
                                                      install_version, http, wait_until):
    server, base_path = swap_server
    done, answers, failures = threading.Event(), [], []
    lock = threading.Lock()

    def record(value) -> None:
        with lock:
            (answers if value in (3.0, 4.0) else failures).append(value)

    def rest_client():
        while not done.is_set():
            try:
                record(_score(http, server))
            except Exception as err:  # noqa: BLE001 - every failure is a test failure
                record(err)

    def grpc_client():
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = "ddn", "bid_score"
            request.inputs["bid"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
            while not done.is_set():
                try:
                    response = stub.Predict(request, timeout=30)
                    value = float(tf.make_ndarray(response.outputs["score"])[0])
                    assert value == 2.0 + response.model_spec.version.value
                    record(value)
                except Exception as err:  # noqa: BLE001
                    record(err)

    threads = ([threading.Thread(target=rest_client) for _ in range(REST_CLIENTS)]
               + [threading.Thread(target=grpc_client) for _ in range(GRPC_CLIENTS)])
    for thread in threads:
        thread.start()
    try:  # the swap happens under traffic: answers from version 1 before, version 2 after
        wait_until(lambda: answers.count(3.0) >= 20, "20 answers from version 1")
        install_version(base_path, model_versions[2], 2)
        wait_until(lambda: answers.count(4.0) >= 20, "20 answers from version 2")
    finally:
        done.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert _score(http, server) == 4.0
    status = http("GET", f"{server.rest_url}/v1/models/ddn")[1]["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "END")]


def test_half_written_version_dirs_are_ignored_until_complete(swap_server, model_versions,
                                                              http, wait_until,
                                                              wait_for_polls):
    server, base_path = swap_server
    source = model_versions[3]
    shutil.copytree(source, os.path.join(base_path, "tmp-3"))  # not a number: never a version
    partial = os.path.join(base_path, "3")
    os.makedirs(partial)
    shutil.copytree(os.path.join(source, "variables"), os.path.join(partial, "variables"))
    wait_for_polls(server)  # a whole poll has seen both directories
    assert _score(http, server) == 3.0
    versions = http("GET", f"{server.rest_url}/v1/models/ddn")[1]["model_version_status"]
    assert [v["version"] for v in versions] == ["1"]
    rest = sorted(set(os.listdir(source)) - {"variables"}, key=lambda n: n == "saved_model.pb")
    for name in rest:  # saved_model.pb is written last, as exporters do
        copy = shutil.copytree if os.path.isdir(os.path.join(source, name)) else shutil.copy
        copy(os.path.join(source, name), os.path.join(partial, name))
    wait_until(lambda: _score(http, server) == 5.0, "version 3 to answer")
