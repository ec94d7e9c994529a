"""Config reloads (gRPC and file polling) and the `python -m serving.server` command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.server import ServerHandle
from serving.server_config import ServerConfig

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _config_text(base_path: str, policy: str, labels: dict[str, int]) -> str:
    label_text = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
    return (f'model_config_list {{ config {{ name: "ddn" base_path: "{base_path}" '
            f'model_platform: "tensorflow" model_version_policy {{ {policy} }} {label_text} }} }}')


def _bid_score(http, server, suffix: str = "") -> tuple[int, object]:
    return http("POST", f"{server.rest_url}/v1/models/ddn{suffix}:predict",
                {"signature_name": "bid_score", "instances": [1.0]})


@pytest.fixture()
def two_versions(model_versions, install_version, tmp_path) -> str:
    base_path = str(tmp_path / "ddn")
    for version in (1, 2):
        install_version(base_path, model_versions[version], version)
    return base_path


def test_grpc_reload_config_changes_policy_and_labels(two_versions, http):
    config = ServerConfig(model_name="ddn", model_base_path=two_versions)
    with ServerHandle.start(config) as server:
        assert _bid_score(http, server, "/versions/1")[0] == 404  # latest policy: only v2
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(_config_text(two_versions, "all {}", {"stable": 1}), request.config)
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            stub.HandleReloadConfigRequest(request, timeout=60)
            assert _bid_score(http, server, "/labels/stable") == (200, {"predictions": [3.0]})
            bad = model_management_pb2.ReloadConfigRequest(
                config=model_server_config_pb2.ModelServerConfig(
                    custom_model_config={"type_url": "x"}))
            with pytest.raises(grpc.RpcError) as raised:
                stub.HandleReloadConfigRequest(bad, timeout=60)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _bid_score(http, server, "/labels/stable") == (200, {"predictions": [3.0]})


def test_config_file_is_polled(two_versions, tmp_path, http, wait_until):
    path = tmp_path / "models.config"
    path.write_text(_config_text(two_versions, "specific { versions: 1 versions: 2 }",
                                 {"stable": 1}))
    config = ServerConfig(model_config_file=str(path), model_config_file_poll_wait_seconds=0.2,
                          file_system_poll_wait_seconds=0.2)
    with ServerHandle.start(config) as server:
        assert _bid_score(http, server, "/labels/stable")[1] == {"predictions": [3.0]}
        path.write_text(_config_text(two_versions, "specific { versions: 1 versions: 2 }",
                                     {"stable": 2}))
        wait_until(lambda: _bid_score(http, server, "/labels/stable")[1]
                   == {"predictions": [4.0]}, "the stable label to move to version 2")


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free now (held together, so never the same one twice).

    The command cannot pick its own (port 0 turns REST off, as in TF Serving), so another
    process may take one before it binds: unlikely, and the test then fails, not hangs."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_command_serves_and_stops_on_sigterm(two_versions, http, tmp_path, wait_until):
    rest_port, grpc_port = _free_ports(2)
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed in `finally`
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--model_name", "ddn", "--model_base_path",
         two_versions, f"--port={grpc_port}", f"--rest_api_port={rest_port}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{rest_port}/v1/models/ddn"

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n"
                        + (tmp_path / "server.log").read_text())
        try:
            return http("GET", url, timeout=2)[0] == 200
        except OSError:  # not listening yet
            return False

    try:
        wait_until(answers, "the server command to answer")
        status, body = http("POST", url + ":predict",
                            {"signature_name": "bid_score", "instances": [1.0]})
        assert (status, body) == (200, {"predictions": [4.0]})
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
    assert "Exporting HTTP/REST API at 127.0.0.1:" in (tmp_path / "server.log").read_text()
