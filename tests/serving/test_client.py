"""ServingClient and `tfddn query` against the running local server, REST and gRPC."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.client import ServingClient, ServingClientError, format_table, query_main

ROWS = [{"advertiser": "a1", "bid": 0.5}, {"advertiser": b"\xffraw", "bid": 2.0}]


@pytest.fixture()
def client(server):
    client = ServingClient(server.rest_url, server.grpc_target, model_name="ddn")
    yield client
    client.close()


def test_rows_and_columns_over_rest_and_grpc_agree(client):
    rest_rows = client.predict(ROWS)
    grpc_rows = client.predict(ROWS, transport="grpc")
    columns = {"advertiser": [r["advertiser"] for r in ROWS], "bid": [r["bid"] for r in ROWS]}
    rest_columns = client.predict(columns)
    assert set(rest_rows) == {"ctr_mean", "ctr_stddev", "advertiser_echo", "advertiser_bytes"}
    for result in (grpc_rows, rest_columns):
        np.testing.assert_allclose(result["ctr_mean"], rest_rows["ctr_mean"], rtol=1e-6)
        assert result["ctr_mean"].dtype == np.float32
        assert list(result["advertiser_bytes"]) == [b"a1", b"\xffraw"]
    assert rest_rows["advertiser_echo"][0] == b"a1"


@pytest.mark.parametrize("transport", ["rest", "grpc"])
@pytest.mark.parametrize("spec, offset", [({}, 2), ({"version": 1}, 1), ({"label": "stable"}, 1),
                                          ({"label": "canary"}, 2)])
def test_versions_labels_and_single_input_signature(server, transport, spec, offset):
    client = ServingClient(server.rest_url, server.grpc_target, model_name="ddn", **spec)
    try:
        result = client.predict([1.0, 3.0], signature_name="bid_score", transport=transport)
    finally:
        client.close()
    np.testing.assert_allclose(result["score"], [2.0 + offset, 6.0 + offset])


def test_metadata_and_status_are_the_same_json_over_both_transports(client):
    assert client.metadata("grpc") == client.metadata("rest")
    assert client.status("grpc") == client.status("rest")
    assert client.status()["model_version_status"][0]["version"] == "2"


def test_errors_carry_the_server_code(server):
    missing = ServingClient(server.rest_url, server.grpc_target, model_name="nope")
    with pytest.raises(ServingClientError) as raised:
        missing.status()
    assert raised.value.code == 404
    with pytest.raises(ServingClientError) as raised:
        missing.status("grpc")
    assert raised.value.code == "NOT_FOUND"
    missing.close()
    client = ServingClient(server.rest_url, model_name="ddn")
    with pytest.raises(ServingClientError) as raised:
        client.predict([{"advertiser": "a", "bid": "high"}])
    assert raised.value.code == 400 and "not of expected type: float" in raised.value.message
    with pytest.raises(ValueError, match="not both"):
        ServingClient(server.rest_url, model_name="ddn", version=1, label="stable")


def test_format_table():
    table = format_table({"score": np.array([1.5, 2.0], np.float32),
                          "name": np.array([b"a", b"bb"], object),
                          "vec": np.arange(16, dtype=np.int64).reshape(2, 8)})
    assert table.splitlines() == ["#  name  score  vec",
                                  "0  a     1.5    [0 1 2 3 4 5 ...]",
                                  "1  bb    2      [8 9 10 11 12 13 ...]"]


def test_query_command_rest_grpc_and_files(server, tmp_path, capsys):
    assert query_main(["--rest_url", server.rest_url, "--model_name", "ddn", "--label", "stable",
                       "--signature_name", "bid_score", "--instances", "[1.0, 2.0]"]) == 0
    assert capsys.readouterr().out.splitlines() == ["#  score", "0  3", "1  5"]
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"inputs": {"advertiser": ["a1", "a2"], "bid": [1.0, 2.0]}}))
    assert query_main(["--grpc_target", server.grpc_target, "--model_name", "ddn",
                       "--input_file", str(request)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["#", "advertiser_bytes", "advertiser_echo", "ctr_mean",
                                "ctr_stddev"]
    assert len(lines) == 3 and lines[2].split()[1:3] == ["a2", "a2"]
    assert query_main(["--rest_url", server.rest_url, "--model_name", "ddn", "--status"]) == 0
    assert json.loads(capsys.readouterr().out)["model_version_status"][0]["state"] == "AVAILABLE"
    assert query_main(["--rest_url", server.rest_url, "--model_name", "ddn",
                       "--signature_name", "nope", "--instances", "[1.0]"]) == 1
    assert "nope" in capsys.readouterr().err
