"""Fuzz the local server with 10,000+ hostile REST requests and 1,000+ gRPC calls.

Needs an exported tfddn model (`make demo` writes `saved_models/ddn/<version>`):

    python benchmarks/serving_fuzz.py --model_base_path saved_models/ddn --rest 10000 --grpc 1000

Starts `tfddn serve` on free loopback ports, builds one valid request from the served
signature's metadata, sends the seeded mutations of `serving.fuzz` and prints the
answers by status: a robust server has no 5xx (501 aside) and only JSON bodies, and
still gives the same prediction afterwards. Exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _valid_instance(rest_url: str, model: str) -> dict:
    """One instance of `serving_default` built from the metadata (dtype and shape)."""
    with urllib.request.urlopen(f"{rest_url}/v1/models/{model}/metadata", timeout=60) as r:
        inputs = json.load(r)["metadata"]["signature_def"]["signature_def"][
            "serving_default"]["inputs"]
    row = {}
    for name, info in inputs.items():
        dims = [int(d["size"]) for d in info.get("tensor_shape", {}).get("dim", [])][1:]
        leaf = {"DT_STRING": "a", "DT_FLOAT": 0.5, "DT_DOUBLE": 0.5}.get(info["dtype"], 1)
        for size in reversed(dims):
            leaf = [leaf] * max(size, 1)
        row[name] = leaf
    return row


def main(argv=None) -> int:
    from serving.fuzz import fuzz_grpc, fuzz_rest, grpc_requests, rest_requests
    from serving.server import ServerHandle
    from serving.server_config import ServerConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", "--export_base", dest="export_base", default="saved_models/ddn")
    parser.add_argument("--rest", type=int, default=10_000)
    parser.add_argument("--grpc", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = ServerConfig(model_name="ddn", model_base_path=os.path.abspath(args.export_base))
    with ServerHandle.start(config) as server:
        row = _valid_instance(server.rest_url, "ddn")
        valid = {"instances": [row]}

        def predict():
            request = urllib.request.Request(f"{server.rest_url}/v1/models/ddn:predict",
                                             data=json.dumps(valid).encode())
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)

        before = predict()
        rng = random.Random(args.seed)
        start = time.perf_counter()
        rest = fuzz_rest(server.rest_url, rest_requests(rng, "ddn", valid, args.rest))
        rest_s = time.perf_counter() - start
        dtypes = {"DT_STRING": 7, "DT_FLOAT": 1, "DT_INT64": 9}
        with urllib.request.urlopen(f"{server.rest_url}/v1/models/ddn/metadata") as r:
            inputs = json.load(r)["metadata"]["signature_def"]["signature_def"][
                "serving_default"]["inputs"]
        start = time.perf_counter()
        grpc = fuzz_grpc(server.grpc_target, grpc_requests(
            rng, "ddn", {k: dtypes.get(v["dtype"], 1) for k, v in inputs.items()}, args.grpc))
        grpc_s = time.perf_counter() - start
        same = predict() == before
        with urllib.request.urlopen(server.rest_url + "/monitoring/prometheus/metrics") as r:
            metrics_ok = r.status == 200
    print(f"REST: {rest.sent} requests in {rest_s:.1f} s; by status: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(rest.statuses.items(), key=str)))
    print(f"  5xx other than 501: {rest.server_errors}; bodies that are not JSON: "
          f"{rest.not_json}")
    print(f"gRPC: {grpc.sent} calls in {grpc_s:.1f} s; by code: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(grpc.statuses.items())))
    print(f"  INTERNAL / UNKNOWN: {grpc.server_errors}")
    print(f"afterwards: same prediction {same}, metrics page {'200' if metrics_ok else 'FAIL'}")
    for example in (rest.examples + grpc.examples)[:5]:
        print("  e.g.", example)
    return 0 if not (rest.server_errors or rest.not_json or grpc.server_errors) and same \
        else 1


if __name__ == "__main__":
    raise SystemExit(main())
