"""A bounded, seeded fuzz of the local server (issue #13): no 5xx for anything a client
sends (501 aside), JSON error bodies, and a server that keeps serving the same answers."""

from __future__ import annotations

import random
import urllib.request

from serving.fuzz import fuzz_grpc, fuzz_rest, grpc_requests, rest_requests

VALID = {"instances": [{"advertiser": "a1", "bid": 0.5}, {"advertiser": "a2", "bid": 1.5}]}


def _predict(http, server):
    status, body = http("POST", f"{server.rest_url}/v1/models/ddn:predict", VALID)
    assert status == 200
    return body


def test_fuzzed_rest_and_grpc_requests_get_no_5xx(server, http):
    before = _predict(http, server)
    rng = random.Random(13)
    rest = fuzz_rest(server.rest_url, rest_requests(rng, "ddn", VALID, 3000))
    assert rest.sent == 3000
    assert rest.server_errors == 0, rest.examples
    assert rest.not_json == 0
    assert sum(n for s, n in rest.statuses.items() if isinstance(s, int) and s < 500) > 2500
    assert rest.statuses[200] > 0 and rest.statuses[400] > 0  # both kinds were exercised
    grpc = fuzz_grpc(server.grpc_target, grpc_requests(
        rng, "ddn", {"advertiser": 7, "bid": 1}, 300))  # DT_STRING, DT_FLOAT
    assert grpc.sent == 300 and grpc.server_errors == 0, grpc.examples
    assert grpc.statuses["INVALID_ARGUMENT"] > 0
    assert _predict(http, server) == before  # still serving, the same predictions
    with urllib.request.urlopen(server.rest_url + "/monitoring/prometheus/metrics",
                                timeout=30) as response:
        assert response.status == 200 and b"request_count" in response.read()
