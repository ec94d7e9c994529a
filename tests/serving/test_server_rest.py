"""REST API of the local server against TF Serving's documented behaviour (api_rest.md)."""

from __future__ import annotations

import base64
import math
import re
import urllib.request

import numpy as np
import pytest

ROWS = [{"advertiser": "a1", "bid": 0.5}, {"advertiser": "a2", "bid": 1.5},
        {"advertiser": "a3", "bid": 3}]


def _url(server, suffix: str) -> str:
    return f"{server.rest_url}/v1/models/ddn{suffix}"


@pytest.mark.parametrize("suffix, version", [("", 2), ("/versions/1", 1), ("/versions/2", 2),
                                             ("/labels/stable", 1), ("/labels/canary", 2)])
def test_predict_every_url_form(server, http, suffix, version):
    status, body = http("POST", _url(server, suffix + ":predict"),
                        {"signature_name": "bid_score", "instances": [0.5, 1.5]})
    assert status == 200
    assert body == {"predictions": [2 * 0.5 + version, 2 * 1.5 + version]}


def test_row_and_columnar_formats_agree_with_the_saved_model(server, http, model_versions):
    import tensorflow as tf

    status, rows = http("POST", _url(server, ":predict"), {"instances": ROWS})
    assert status == 200
    assert sorted(rows["predictions"][0]) == ["advertiser_bytes", "advertiser_echo",
                                              "ctr_mean", "ctr_stddev"]
    columns = {"advertiser": [r["advertiser"] for r in ROWS], "bid": [r["bid"] for r in ROWS]}
    status, cols = http("POST", _url(server, ":predict"), {"inputs": columns})
    assert status == 200
    expected = tf.saved_model.load(model_versions[2]).signatures["serving_default"](
        advertiser=tf.constant(columns["advertiser"]), bid=tf.constant(columns["bid"], tf.float32))
    np.testing.assert_allclose([p["ctr_mean"] for p in rows["predictions"]],
                               expected["ctr_mean"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(cols["outputs"]["ctr_stddev"], expected["ctr_stddev"].numpy(),
                               rtol=1e-6)
    assert cols["outputs"]["advertiser_echo"] == ["a1", "a2", "a3"]
    assert [p["advertiser_echo"] for p in rows["predictions"]] == ["a1", "a2", "a3"]
    assert cols["outputs"]["advertiser_bytes"] == [
        {"b64": base64.b64encode(a.encode()).decode()} for a in ("a1", "a2", "a3")]


def test_b64_inputs_and_binary_outputs(server, http):
    raw = b"\xff\x00ad\xfe"
    status, body = http("POST", _url(server, ":predict"), {"instances": [
        {"advertiser": {"b64": base64.b64encode(raw).decode()}, "bid": 1.0},
        {"advertiser": {"b64": base64.b64encode("ad-ü".encode()).decode()}, "bid": 1.0}]})
    assert status == 200
    first, second = body["predictions"]
    assert base64.b64decode(first["advertiser_bytes"]["b64"]) == raw
    assert second["advertiser_echo"] == "ad-ü"


def test_single_input_single_output_use_bare_values(server, http):
    status, body = http("POST", _url(server, "/versions/1:predict"),
                        {"signature_name": "bid_score", "inputs": [1.0, 2.0]})
    assert (status, body) == (200, {"outputs": [3.0, 5.0]})
    status, body = http("POST", _url(server, "/versions/1:predict"),
                        {"signature_name": "bid_score", "instances": [{"bid": 1.0}]})
    assert (status, body) == (200, {"predictions": [3.0]})


def test_floats_nan_and_infinity_are_written_like_tf_serving(server):
    data = (b'{"signature_name": "bid_score", '
            b'"instances": [1.0, NaN, Infinity, -Infinity, 0.05, 1e-06]}')
    request = urllib.request.Request(_url(server, "/versions/1:predict"), data=data)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        text = response.read().decode()
    assert text == '{"predictions": [3.0, NaN, Infinity, -Infinity, 1.1, 1.00000203]}'


def test_mc_dropout_signature_varies_between_passes(server, http):
    status, body = http("POST", _url(server, ":predict"),
                        {"signature_name": "mc_dropout", "instances": [ROWS[0]] * 8})
    assert status == 200
    means = [p["ctr_mean"] for p in body["predictions"]]
    assert len(set(means)) > 1
    assert all(p["model_stddev"] >= 0 for p in body["predictions"])


def test_model_status(server, http):
    available = {"state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    status, body = http("GET", _url(server, ""))
    assert status == 200
    assert body == {"model_version_status": [{"version": "2", **available},
                                             {"version": "1", **available}]}
    assert http("GET", _url(server, "/versions/1")) == (
        200, {"model_version_status": [{"version": "1", **available}]})
    # TF Serving's GetModelStatus ignores labels: all versions.
    assert http("GET", _url(server, "/labels/stable"))[1] == body


def test_model_metadata(server, http):
    status, body = http("GET", _url(server, "/metadata"))
    assert status == 200
    assert body["model_spec"] == {"name": "ddn", "signature_name": "", "version": "2"}
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "mc_dropout", "bid_score", "__saved_model_init_op"}
    bid = defs["serving_default"]["inputs"]["bid"]
    assert bid["dtype"] == "DT_FLOAT"
    assert bid["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert defs["bid_score"]["method_name"] == "tensorflow/serving/predict"
    assert set(defs["bid_score"]["outputs"]) == {"score"}
    assert http("GET", _url(server, "/labels/stable/metadata"))[1]["model_spec"]["version"] == "1"
    assert http("GET", _url(server, "/versions/1/metadata"))[1]["model_spec"]["version"] == "1"


_BID = {"signature_name": "bid_score"}


@pytest.mark.parametrize("method, suffix, body, code, message", [
    ("POST", "/v1/models/nope:predict", {"instances": ROWS}, 404,
     "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/ddn/versions/7:predict", {"instances": ROWS}, 404,
     "Servable not found for request: Specific(ddn, 7)"),
    ("POST", "/v1/models/ddn/labels/beta:predict", {"instances": ROWS}, 400,
     "Unrecognized servable version label: beta"),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/ddn/versions/9", None, 404, "Could not find version 9 of model ddn"),
    ("GET", "/v1/models/ddn/versions/9/metadata", None, 404, "Specific(ddn, 9)"),
    ("POST", "/v1/models/ddn:predict", b"{nope", 400, "JSON Parse error"),
    ("POST", "/v1/models/ddn:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/ddn:predict", [1, 2], 400, "Is not object"),
    ("POST", "/v1/models/ddn:predict", _BID, 400, "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/ddn:predict", {**_BID, "instances": [1.0], "inputs": [1.0]}, 400,
     "expecting only one of 'inputs' or 'instances' keys"),
    ("POST", "/v1/models/ddn:predict", {**_BID, "instances": 1.0}, 400,
     "Expecting 'instances' to be an list/array"),
    ("POST", "/v1/models/ddn:predict", {**_BID, "instances": []}, 400,
     "No values in 'instances' array"),
    ("POST", "/v1/models/ddn:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("POST", "/v1/models/ddn:predict", {"signature_name": 3, "instances": [1.0]}, 400,
     "'signature_name' key must be a string value."),
    ("POST", "/v1/models/ddn:predict", {"instances": [{"advertiser": "a", "price": 1.0}]}, 400,
     "JSON object: does not have named input: price"),
    ("POST", "/v1/models/ddn:predict", {"instances": [{"advertiser": "a"}]}, 400,
     "keys must be equal to: advertiser,bid"),
    ("POST", "/v1/models/ddn:predict", {"inputs": {"advertiser": ["a"]}}, 400,
     "Missing named input: bid in 'inputs' object."),
    ("POST", "/v1/models/ddn:predict", {"instances": ["a", "b"]}, 400,
     "instances is a plain list, but expecting list of objects"),
    ("POST", "/v1/models/ddn:predict", {"instances": [{"advertiser": "a", "bid": "x"}]}, 400,
     'JSON Value: "x" Type: String is not of expected type: float'),
    ("POST", "/v1/models/ddn:predict", {"instances": [{"advertiser": 5, "bid": 1.0}]}, 400,
     "JSON Value: 5 Type: Number is not of expected type: string"),
    ("POST", "/v1/models/ddn:predict", {**_BID, "instances": [[1.0, 2.0], [3.0]]}, 400,
     "Expecting tensor size: 2 but got: 1"),
    ("POST", "/v1/models/ddn:predict", {**_BID, "instances": [[1.0], 3.0]}, 400,
     "Expecting shape [1] but got: []"),
    ("POST", "/v1/models/ddn:predict", {**_BID, "inputs": [[1.0, 2.0], [3.0]]}, 400,
     "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ("POST", "/v1/models/ddn:predict", {**_BID, "instances": [[1.0], [2.0]]}, 400,
     "the signature expects [-1]"),
    ("POST", "/v1/models/ddn:predict", b"{nope", 400,
     "JSON Parse error: Missing a name for object member. at offset: 1"),
    ("POST", "/v1/models/ddn:predict", b'{"instances": [1 2]}', 400,
     "JSON Parse error: Missing a comma or ']' after an array element. at offset: 17"),
    ("POST", "/v1/models/ddn:predict", b'{"instances": [1.0], "x": "\\ud800"}', 400,
     "JSON Parse error: The surrogate pair in string is invalid. at offset: 27"),
    ("POST", "/v1/models/ddn:predict", b'{"signature_name": "\\udc00", "instances": [1]}',
     400, "The surrogate pair in string is invalid."),
    ("POST", "/v1/models/ddn:predict", {**_BID, "instances": [10**400]}, 400,
     "Number too big to be stored in double."),
    ("POST", "/v1/models/ddn:predict", {**_BID, "instances": [[[[[[[[1.0]]]]]]]] * 10}, 400,
     "the signature expects [-1]"),
    ("POST", "/v1/models/ddn:predict", {"instances": [{"advertiser": {"b64": "%%"}, "bid": 1}]},
     400, "Unable to base64 decode"),
    ("GET", "/v1/models/ddn/versions/x", None, 400, "Malformed request: GET"),
    ("POST", "/v1/models/ddn:explode", {"instances": ROWS}, 400, "Malformed request: POST"),
    ("PUT", "/v1/models/ddn", b"{}", 400, "Malformed request: PUT"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("POST", "/v1/models/ddn:classify", {"examples": [{"bid": 1.0}]}, 501, "not supported"),
    ("POST", "/v1/models/ddn:classify", {"examples": []}, 400,
     "'examples' value is an empty array"),
    ("POST", "/v1/models/ddn:regress", {"instances": [1]}, 400,
     "When method is regress, key 'examples' is expected and was not found"),
    ("POST", "/v1/models/ddn:regress", {"examples": [[1.0]]}, 400,
     "Example must be JSON object but got JSON array"),
    ("POST", "/v1/models/ddn:regress", {"examples": [{"bid": [[1.0]]}]}, 400,
     "Feature: bid has element with unexpected JSON type: array"),
    ("POST", "/v1/models/ddn:classify", b"{nope", 400, "JSON Parse error"),
    ("GET", "/v2/models/ddn", None, 404, "Not found"),
])
def test_errors_have_tf_serving_codes_and_json_bodies(server, http, method, suffix, body, code,
                                                      message):
    status, answer = http(method, server.rest_url + suffix, body)
    assert status == code
    assert set(answer) == {"error"}
    assert message in answer["error"]


def test_numbers_round_and_trailing_data_is_ignored_like_tf_serving(server):
    # TF Serving converts any JSON number to a float input (GetFloat) and parses with
    # kParseStopWhenDoneFlag: text after the document is not read.
    data = b'{"signature_name": "bid_score", "instances": [16777217, 1e40]} trailing junk'
    request = urllib.request.Request(_url(server, "/versions/1:predict"), data=data)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"] == "application/json"
        text = response.read().decode()
    # float32(2^24 + 1) = 2^24, and 2 * 2^24 + 1 rounds to 2^25 in float32.
    assert text == '{"predictions": [33554432.0, Infinity]}'


def _scrape(server) -> str:
    with urllib.request.urlopen(server.rest_url + "/monitoring/prometheus/metrics",
                                timeout=30) as response:
        assert response.status == 200
        return response.read().decode()


def test_unknown_names_share_one_metrics_label_and_odd_text_renders(server, http):
    before = _scrape(server)
    for i in range(50):
        http("POST", server.rest_url + f"/v1/models/m{i}%22%0A%ED%A0%80:predict",
             {"instances": [1.0]})
        http("POST", _url(server, ":predict"), {"signature_name": f"s{i}\n\"",
                                               "instances": [1.0]})
    after = _scrape(server)
    assert len(after.splitlines()) - len(before.splitlines()) < 10  # no line per name
    assert 'model_name="_unknown"' in after and 'signature_name="_unknown"' in after


def test_oversized_and_garbage_requests_get_4xx_and_the_server_keeps_serving(server, http):
    big = b'{"instances": [' + b"1.0, " * 300_000 + b"1.0]}"
    assert len(big) > server.config.max_request_bytes
    status, answer = http("POST", _url(server, ":predict"), big)
    assert status == 413 and "max_request_bytes" in answer["error"]
    garbage = [b"\x00\xff\xfe", b"[" * 100_000, b'{"instances": [' + b"[" * 5000 + b"]}",
               b'{"instances": [1.0', "{\"inputs\": \"\ud800\"}".encode("utf-8", "surrogatepass")]
    for body in garbage:
        status, answer = http("POST", _url(server, ":predict"), body)
        assert 400 <= status < 500 and "error" in answer
    status, answer = http("POST", _url(server, ":predict"),
                          {"signature_name": "bid_score", "instances": [1.0]})
    assert (status, answer) == (200, {"predictions": [4.0]})


def _raw_http(server, data: bytes) -> tuple[int, dict]:
    """Sends raw bytes to the REST port; returns the status and the JSON body."""
    import json
    import socket
    from urllib.parse import urlparse

    url = urlparse(server.rest_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"] == "application/json", head
    return int(lines[0].split()[1]), json.loads(body)


@pytest.mark.parametrize("data, status, words", [
    (b"FOO /v1/models/ddn HTTP/1.1\r\nHost: a\r\n\r\n", 400, "Invalid method"),
    (b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 404, "Not found"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 400, "Got more than"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 9000 + b"\r\n\r\n", 400, "Got more than"),
    (b"garbage\r\n\r\n", 400, "Invalid method"),
    (b"POST /v1/models/ddn:predict HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400,
     "Content-Length"),
])
def test_protocol_errors_get_json_bodies(server, http, data, status, words):
    code, body = _raw_http(server, data)
    assert code == status and set(body) == {"error"} and words in body["error"]
    ok, answer = http("POST", _url(server, ":predict"), {**_BID, "instances": [1.0]})
    assert (ok, answer) == (200, {"predictions": [4.0]})


def _metric(text: str, name: str, **labels) -> float:
    pattern = re.escape(name) + r"\{([^}]*)\} (\S+)"
    total = 0.0
    for label_text, value in re.findall(pattern, text):
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def test_prometheus_endpoint_counts_requests(server, http):
    before = _scrape(server)
    for _ in range(3):
        http("POST", _url(server, ":predict"), {**_BID, "instances": [1.0]})
    http("POST", _url(server, ":predict"), {**_BID, "instances": "oops"})
    after = _scrape(server)
    count = ":tensorflow:serving:request_count"
    assert _metric(after, count, model_name="ddn", status="OK") - _metric(
        before, count, model_name="ddn", status="OK") == 3
    assert _metric(after, count, status="INVALID_ARGUMENT") - _metric(
        before, count, status="INVALID_ARGUMENT") == 1
    local = "tfddn_serving_requests_total"
    assert _metric(after, local, signature_name="bid_score", entrypoint="REST", code="200") - \
        _metric(before, local, signature_name="bid_score", entrypoint="REST", code="200") == 3
    latency = ":tensorflow:serving:request_latency_count"
    # TF Serving times successful requests only: 3 here, the INVALID_ARGUMENT one not.
    assert _metric(after, latency, model_name="ddn", API="predict", entrypoint="REST") - \
        _metric(before, latency, model_name="ddn", API="predict", entrypoint="REST") == 3
    assert 'le="10"' in after and 'le="18"' in after and 'le="32.4"' in after  # TF's buckets
    loads = ":tensorflow:cc:saved_model:load_attempt_count"
    assert _metric(after, loads, status="success") == 2
    assert not math.isnan(_metric(after, ":tensorflow:serving:runtime_latency_sum"))
