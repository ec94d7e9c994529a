"""A seeded fuzzer of TF Serving requests: does anything a client sends get a 5xx?

Generates hostile-but-possible REST requests (odd methods, paths, names, versions;
valid requests mutated byte by byte, truncated, nested 100 levels deep, with lone
surrogates, huge numbers, wrong shapes and types) and gRPC calls (random dtypes including
resource and variant, shapes that do not match their values, random names), sends them
to a running server and counts the answers. A robust server answers every one with a
4xx (or 501 for an API it does not implement) and a JSON error body, and keeps serving.

    python -m serving.fuzz --rest_url http://127.0.0.1:8501 --grpc_target 127.0.0.1:8500 \\
        --model_name ddn --rest 10000 --grpc 1000

`benchmarks/serving_fuzz.py` runs it against the local server; `tests/serving/` runs a
bounded version in the suite.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import http.client
import json
import random
import urllib.parse

__all__ = ["FuzzReport", "fuzz_grpc", "fuzz_rest", "grpc_requests", "rest_requests"]

_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "FOO")
_VERBS = ("predict", "classify", "regress", "PREDICT", "explode", "")
_ODD_TEXT = ("", " ", "\ud800", "\udfff", "\u0000", "é", "💥", "\\", '"', "%", "%zz", "\n",
             "a" * 300, "..", "/", ":", "?", "#")


@dataclasses.dataclass
class FuzzReport:
    """What the server answered: counts per status and the failures worth reading."""

    sent: int = 0
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    not_json: int = 0
    examples: list = dataclasses.field(default_factory=list)

    @property
    def server_errors(self) -> int:
        """5xx answers other than 501 (REST) / INTERNAL, UNKNOWN, DATA_LOSS (gRPC)."""
        return sum(n for s, n in self.statuses.items()
                   if (isinstance(s, int) and s >= 500 and s != 501)
                   or s in ("INTERNAL", "UNKNOWN", "DATA_LOSS"))

    def note(self, status, what) -> None:
        self.statuses[status] += 1
        if len(self.examples) < 20 and ((isinstance(status, int) and status >= 500
                                         and status != 501)
                                        or status in ("INTERNAL", "UNKNOWN", "DATA_LOSS")):
            self.examples.append((status, what))


def _text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(_ODD_TEXT)
    return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000),
                                   rng.randrange(0xD800, 0xE000)]))
                   for _ in range(rng.randrange(0, 12)))


def _proto_text(rng: random.Random) -> str:
    """`_text` without lone surrogates (protobuf strings must be UTF-8)."""
    return _text(rng).encode("utf-8", "replace").decode("utf-8")


def _value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(12 if depth < 4 else 8)
    if kind == 0:
        return rng.uniform(-1e6, 1e6)
    if kind == 1:
        return rng.choice([0, -1, 2**24 + 1, 2**31, 2**63, 2**64, 10**30, -(10**400)])
    if kind == 2:
        return rng.choice([float("nan"), float("inf"), -float("inf"), 1e308, 1e-320])
    if kind == 3:
        return _text(rng)
    if kind == 4:
        return rng.choice([True, False, None])
    if kind == 5:
        return {"b64": rng.choice(["", "%%", "YWJj", "YWJ", _text(rng)])}
    if kind in (6, 7):
        return [rng.uniform(0, 2) for _ in range(rng.randrange(0, 4))]
    if kind in (8, 9):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {_text(rng): _value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def _dump(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")


def _body(rng: random.Random, valid: dict) -> bytes:
    kind = rng.randrange(10)
    if kind == 0:
        return _dump(valid)
    if kind == 1:  # one valid request, mutated
        data = bytearray(_dump(valid))
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
        return bytes(data)
    if kind == 2:
        data = _dump(valid)
        return data[:rng.randrange(len(data))]
    if kind == 3:
        depth = rng.choice([63, 64, 65, 100, 5000])
        return b'{"instances": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    if kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    if kind == 5:
        return _dump({**valid, "signature_name": _value(rng)})
    if kind == 6:
        return _dump({rng.choice(["instances", "inputs", "examples", "x"]): _value(rng)})
    if kind == 7:
        return _dump({"instances": [{k: _value(rng) for k in valid_keys(valid)}]})
    if kind == 8:
        return _dump(valid) + rng.choice([b" junk", b"\x00", b"{}", b"]]"])
    return _dump(_value(rng))


def valid_keys(valid: dict) -> list[str]:
    first = valid.get("instances", [{}])[0]
    return list(first) if isinstance(first, dict) else ["x"]


def rest_requests(rng: random.Random, model: str, valid: dict, count: int):
    """`count` (method, path, body) REST requests, about half aimed at `model`."""
    for _ in range(count):
        method = rng.choice(_METHODS) if rng.random() < 0.3 else "POST"
        name = model if rng.random() < 0.6 else _text(rng)
        path = "/v1/models/" + urllib.parse.quote(name.encode("utf-8", "surrogatepass"),
                                                  safe="")
        roll = rng.random()
        if roll < 0.1:
            path += f"/versions/{rng.choice([0, 1, 2, -1, 2**63, 10**30, 'x'])}"
        elif roll < 0.2:
            path += "/labels/" + urllib.parse.quote(_text(rng).encode("utf-8", "surrogatepass"))
        if method == "POST":
            path += ":" + rng.choice(_VERBS) if rng.random() < 0.9 else "/metadata"
        elif rng.random() < 0.3:
            path = rng.choice(["*", "/", "/monitoring/prometheus/metrics", "/v1/models",
                               path + "/metadata", "/v1/" + _text(rng)])
        yield method, path, _body(rng, valid) if method != "GET" else b""


def fuzz_rest(rest_url: str, requests, timeout: float = 30.0) -> FuzzReport:
    """Sends every request on one keep-alive connection (reopened when closed)."""
    url = urllib.parse.urlparse(rest_url)
    report = FuzzReport()
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    for method, path, body in requests:
        report.sent += 1
        try:
            target = urllib.parse.quote(path.encode("utf-8", "surrogatepass"),
                                        safe="/:*%?#=&")  # http.client sends ASCII only
            connection.putrequest(method, target, skip_accept_encoding=True)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            data = response.read()
            status = response.status
        except (http.client.HTTPException, OSError) as err:
            connection.close()
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
            report.note(f"connection: {type(err).__name__}", (method, path, body[:200]))
            continue
        if response.will_close:
            connection.close()
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        report.note(status, (method, path, body[:200], data[:200]))
        if method != "HEAD" and not path.startswith("/monitoring"):
            try:
                json.loads(data)
            except ValueError:
                report.not_json += 1
    connection.close()
    return report


def grpc_requests(rng: random.Random, model: str, inputs: dict, count: int):
    """`count` (method name, request proto) gRPC calls; `inputs` = input name -> dtype."""
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        predict_pb2,
    )

    dtypes = list(types_pb2.DataType.values()) + [999, -1]
    for _ in range(count):
        roll = rng.random()
        if roll < 0.1:
            request = get_model_metadata_pb2.GetModelMetadataRequest()
            request.model_spec.name = model if rng.random() < 0.5 else _proto_text(rng)
            request.metadata_field.extend(rng.sample(["signature_def", "graph", _proto_text(rng)], 2))
            yield "GetModelMetadata", request
            continue
        if roll < 0.2:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = model if rng.random() < 0.5 else _proto_text(rng)
            if rng.random() < 0.5:
                request.model_spec.version.value = rng.choice([0, 1, 2, 2**62])
            yield "GetModelStatus", request
            continue
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model if rng.random() < 0.7 else _proto_text(rng)
        if rng.random() < 0.3:
            request.model_spec.signature_name = _proto_text(rng)
        if rng.random() < 0.1:
            request.model_spec.version_label = _proto_text(rng)
        names = list(inputs) + ([_proto_text(rng)] if rng.random() < 0.2 else [])
        for name in names:
            proto = request.inputs[name]
            proto.dtype = inputs.get(name, 1) if rng.random() < 0.5 else rng.choice(dtypes)
            dims = [rng.choice([0, 1, 2, 3, 2**40, -1]) for _ in range(rng.randrange(0, 3))]
            for size in dims:
                proto.tensor_shape.dim.add().size = size
            kind = rng.randrange(5)
            if kind == 0:
                proto.float_val.extend(rng.uniform(-1, 1) for _ in range(rng.randrange(0, 4)))
            elif kind == 1:
                proto.string_val.extend(bytes(rng.randrange(256) for _ in range(5))
                                        for _ in range(rng.randrange(0, 4)))
            elif kind == 2:
                proto.tensor_content = bytes(rng.randrange(256)
                                             for _ in range(rng.randrange(0, 17)))
            elif kind == 3:
                proto.int64_val.extend(rng.randrange(-2**63, 2**63)
                                       for _ in range(rng.randrange(0, 4)))
        if rng.random() < 0.1:
            request.output_filter.append(_proto_text(rng))
        yield "Predict", request


def fuzz_grpc(target: str, calls, timeout: float = 30.0) -> FuzzReport:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    report = FuzzReport()
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        from tensorflow_serving.apis import model_service_pb2_grpc

        model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        for method, request in calls:
            report.sent += 1
            call = getattr(model_stub if method == "GetModelStatus" else stub, method)
            try:
                call(request, timeout=timeout)
                report.note("OK", None)
            except grpc.RpcError as err:
                report.note(err.code().name, (method, str(request)[:300], err.details()))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.fuzz", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--rest_url", required=True)
    parser.add_argument("--grpc_target", default="")
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--instances", default='[{"x": 1.0}]',
                        help="a valid `instances` list to mutate (JSON)")
    parser.add_argument("--rest", type=int, default=10_000, help="REST requests to send")
    parser.add_argument("--grpc", type=int, default=1_000, help="gRPC calls to make")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    valid = {"instances": json.loads(args.instances)}
    rest = fuzz_rest(args.rest_url, rest_requests(rng, args.model_name, valid, args.rest))
    print(f"REST: {rest.sent} sent, statuses {dict(sorted(rest.statuses.items(), key=str))}, "
          f"{rest.server_errors} 5xx (501 aside), {rest.not_json} bodies not JSON")
    failures = rest.server_errors + rest.not_json
    if args.grpc_target and args.grpc:
        inputs = {k: 1 for k in valid_keys(valid)}
        grpc_report = fuzz_grpc(args.grpc_target,
                                grpc_requests(rng, args.model_name, inputs, args.grpc))
        print(f"gRPC: {grpc_report.sent} sent, codes {dict(grpc_report.statuses)}, "
              f"{grpc_report.server_errors} INTERNAL/UNKNOWN")
        failures += grpc_report.server_errors
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
