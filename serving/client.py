"""Clients for TF Serving's REST and gRPC APIs (the official server or the local one).

`ServingClient.predict` takes rows (a list of `{input: value}` objects, or bare values
for a one-input signature) or columns (`{input: array}`), sends them as `instances`
or `inputs` over REST, or as `TensorProto`s over gRPC, and returns the outputs as
numpy columns either way. The signature's metadata (fetched once) tells it the
input dtypes (gRPC needs them exactly) and the output names and dtypes.

    client = ServingClient(rest_url="http://localhost:8501",
                           grpc_target="localhost:8500", model_name="ddn", label="stable")
    columns = client.predict([{"advertiser": "a1", "bid": 0.3}], transport="grpc")

`query_main` is the `tfddn query` command: one request, printed as a table.
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ServingClient", "ServingClientError", "format_table", "query_main"]

_NUMPY = {"DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_INT32": np.int32,
          "DT_INT64": np.int64, "DT_BOOL": np.bool_, "DT_STRING": object, "DT_INT8": np.int8,
          "DT_UINT8": np.uint8, "DT_INT16": np.int16, "DT_HALF": np.float16}


class ServingClientError(RuntimeError):
    """A failed call: `code` is the HTTP status (REST) or gRPC code name."""

    def __init__(self, code: Any, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value.item() if isinstance(value, np.generic) else value


def _column(values: Any, dtype: str) -> np.ndarray:
    """A JSON column back to numpy in the signature's dtype (strings as bytes)."""
    if dtype != "DT_STRING":
        return np.asarray(values, dtype=_NUMPY.get(dtype))

    def to_bytes(v):
        if isinstance(v, list):
            return [to_bytes(x) for x in v]
        return base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode("utf-8")

    converted = to_bytes(values)
    array = np.empty(np.shape(converted), dtype=object)
    array[...] = converted
    return array


class ServingClient:
    """Talks to one model (optionally one version or label) over REST and/or gRPC.

    Args:
        rest_url: e.g. `http://localhost:8501`.
        grpc_target: e.g. `localhost:8500`.
        model_name: the served model's name.
        version: a version number, or None for the latest.
        label: a version label (`stable`, `canary`); exclusive with `version`.
        timeout: seconds per call.
    """

    def __init__(self, rest_url: str | None = None, grpc_target: str | None = None, *,
                 model_name: str, version: int | None = None, label: str | None = None,
                 timeout: float = 30.0):
        if version is not None and label is not None:
            raise ValueError(f"Give a version or a label, not both. Received: "
                             f"version={version}, label={label!r}")
        if not rest_url and not grpc_target:
            raise ValueError("rest_url or grpc_target is required")
        self.rest_url = rest_url.rstrip("/") if rest_url else None
        self.grpc_target = grpc_target
        self.model_name, self.version, self.label = model_name, version, label
        self.timeout = timeout
        self._channel = None
        self._metadata: dict | None = None

    # -- REST -------------------------------------------------------------------------
    def _model_path(self) -> str:
        path = f"/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if self.version is not None:
            path += f"/versions/{self.version}"
        elif self.label is not None:
            path += f"/labels/{urllib.parse.quote(self.label, safe='')}"
        return path

    def _rest(self, suffix: str, body: dict | None = None) -> dict:
        if not self.rest_url:
            raise ValueError("this client has no rest_url")
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.rest_url + self._model_path() + suffix, data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", errors="replace")
            try:
                message = json.loads(text).get("error", text)
            except ValueError:
                message = text
            raise ServingClientError(err.code, message) from None

    # -- gRPC -------------------------------------------------------------------------
    def _stubs(self):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        if not self.grpc_target:
            raise ValueError("this client has no grpc_target")
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_target)
        return (prediction_service_pb2_grpc.PredictionServiceStub(self._channel),
                model_service_pb2_grpc.ModelServiceStub(self._channel))

    def _fill_spec(self, spec, signature_name: str = "") -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version
        elif self.label is not None:
            spec.version_label = self.label
        if signature_name:
            spec.signature_name = signature_name

    def _grpc(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise ServingClientError(err.code().name, err.details()) from None

    # -- API --------------------------------------------------------------------------
    def metadata(self, transport: str = "rest") -> dict:
        """`GET .../metadata` (or gRPC GetModelMetadata) in TF Serving's JSON form."""
        if transport == "rest":
            return self._rest("/metadata")
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._fill_spec(request.model_spec)
        response = self._grpc(self._stubs()[0].GetModelMetadata, request)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_defs)
        as_json = lambda m: json_format.MessageToDict(
            m, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
        return {"model_spec": as_json(response.model_spec),
                "metadata": {"signature_def": as_json(signature_defs)}}

    def status(self, transport: str = "rest") -> dict:
        """`GET /v1/models/NAME[/versions/N]` (or gRPC GetModelStatus) as JSON."""
        if transport == "rest":
            return self._rest("")
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(request.model_spec)
        response = self._grpc(self._stubs()[1].GetModelStatus, request)
        return json_format.MessageToDict(response, always_print_fields_with_no_presence=True)

    def signature(self, signature_name: str = "serving_default") -> dict:
        """The signature def (inputs, outputs with dtypes), from metadata fetched once
        (again when the signature is missing: a new version may have brought it)."""
        defs = self._metadata["metadata"]["signature_def"]["signature_def"] if (
            self._metadata) else {}
        if signature_name not in defs:
            self._metadata = self.metadata("rest" if self.rest_url else "grpc")
            defs = self._metadata["metadata"]["signature_def"]["signature_def"]
        if signature_name not in defs:
            raise ServingClientError("NOT_FOUND", f"signature {signature_name!r} not in "
                                                  f"{sorted(defs)}")
        return defs[signature_name]

    def predict(self, data: Sequence | Mapping, signature_name: str = "serving_default",
                transport: str = "rest") -> dict[str, np.ndarray]:
        """Predicts rows (a list) or columns (a mapping); returns numpy output columns."""
        signature = self.signature(signature_name)
        outputs = {k: v["dtype"] for k, v in signature["outputs"].items()}
        if transport == "grpc":
            return self._predict_grpc(data, signature_name, signature)
        if transport != "rest":
            raise ValueError(f"transport must be 'rest' or 'grpc'. Received: {transport!r}")
        rows = not isinstance(data, Mapping)
        body = {"signature_name": signature_name,
                ("instances" if rows else "inputs"): _jsonable(data)}
        answer = self._rest(":predict", body)["predictions" if rows else "outputs"]
        if len(outputs) == 1:
            (name, dtype), = outputs.items()
            return {name: _column(answer, dtype)}
        if rows:
            return {n: _column([item[n] for item in answer], d) for n, d in outputs.items()}
        return {n: _column(answer[n], d) for n, d in outputs.items()}

    def _predict_grpc(self, data, signature_name: str, signature: dict) -> dict[str, np.ndarray]:
        import tensorflow as tf
        from tensorflow.core.framework import types_pb2
        from tensorflow_serving.apis import predict_pb2

        inputs = {k: v["dtype"] for k, v in signature["inputs"].items()}
        if not isinstance(data, Mapping):  # rows -> columns
            if len(inputs) == 1 and not isinstance(data[0], Mapping):
                data = {next(iter(inputs)): list(data)}
            else:
                data = {n: [row[n] for row in data] for n in inputs}
        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec, signature_name)
        for name, values in data.items():
            dtype = inputs.get(name, "DT_FLOAT")  # unknown names: the server says which
            array = _column(_jsonable(values), dtype)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(
                array, dtype=tf.as_dtype(types_pb2.DataType.Value(dtype))))
        response = self._grpc(self._stubs()[0].Predict, request)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def _cell(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _cell(value.item())
        flat = value.reshape(-1)
        more = " ..." if flat.size > 6 else ""
        return "[" + " ".join(_cell(v) for v in flat[:6]) + more + "]"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def format_table(columns: Mapping[str, np.ndarray]) -> str:
    """Output columns as a text table, one line per example."""
    names = sorted(columns)
    arrays = {n: np.atleast_1d(columns[n]) for n in names}
    count = max((len(a) for a in arrays.values()), default=0)
    table = [["#"] + names] + [[str(i)] + [_cell(arrays[n][i]) if i < len(arrays[n]) else ""
                                           for n in names] for i in range(count)]
    widths = [max(len(row[j]) for row in table) for j in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in table)


def _signature_name(flag: str | None, body: dict, path: str | None) -> str:
    """The request's signature: `--signature_name` or the input file's, never two.

    Raises:
        ValueError: both are given and differ (a silent choice would query the wrong one).
    """
    named = body.get("signature_name")
    if flag is not None and named is not None and flag != named:
        raise ValueError(f"--signature_name {flag!r} conflicts with the signature_name "
                         f"{named!r} of --input_file {path}: give one of them, or the same")
    return flag or named or "serving_default"


def query(config, args=None) -> int:
    """`tfddn query`: one request of a `tfddn.configs.QueryConfig`, printed as a table."""
    transport = config.transport or ("rest" if config.rest_url else "grpc")
    client = ServingClient(config.rest_url, config.grpc_target, model_name=config.model_name,
                           version=config.version, label=config.label)
    try:
        if config.metadata or config.status:
            result = (client.metadata(transport) if config.metadata
                      else client.status(transport))
            print(json.dumps(result, indent=1))
            return 0
        if config.input_file:
            with open(config.input_file) as f:
                body = json.load(f)
        else:
            body = ({"instances": json.loads(config.instances)} if config.instances
                    else {"inputs": json.loads(config.inputs)})
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise ValueError("the request needs exactly one of 'instances' or 'inputs'")
        signature = _signature_name(config.signature_name, body, config.input_file)
        data = body["instances"] if "instances" in body else body["inputs"]
        print(format_table(client.predict(data, signature, transport)))
        return 0
    except ServingClientError as err:
        print(f"tfddn: error: {err}", file=sys.stderr)
        return 1
    finally:
        client.close()


def query_main(argv: Sequence[str] | None = None) -> int:
    """`python -m serving.client` = `tfddn query`."""
    from tfddn.cli import main

    return main(["query", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(query_main())
