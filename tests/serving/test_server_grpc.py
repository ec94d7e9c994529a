"""gRPC PredictionService / ModelService of the local server, called the official way."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(server.grpc_target)
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


def _request(signature="bid_score", name="ddn", version=None, label=None, **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_predict_with_the_official_stub(stubs):
    response = stubs[0].Predict(_request(bid=np.array([1.0, 2.5], np.float32)), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["score"]), [4.0, 7.0])
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == ("ddn", 2, "bid_score")


@pytest.mark.parametrize("version, label, offset", [(1, None, 1), (2, None, 2),
                                                    (None, "stable", 1), (None, "canary", 2)])
def test_predict_by_version_and_label(stubs, version, label, offset):
    request = _request(version=version, label=label, bid=np.array([1.0], np.float32))
    response = stubs[0].Predict(request, timeout=30)
    assert tf.make_ndarray(response.outputs["score"]).tolist() == [2.0 + offset]
    assert response.model_spec.version.value == offset


def test_grpc_and_rest_give_the_same_predictions(stubs, server, http):
    advertisers, bids = ["a1", "a2", "zz"], [0.5, 1.5, 3.0]
    request = _request("serving_default", advertiser=np.array(advertisers, object),
                       bid=np.array(bids, np.float32))
    response = stubs[0].Predict(request, timeout=30)
    status, body = http("POST", f"{server.rest_url}/v1/models/ddn:predict",
                        {"inputs": {"advertiser": advertisers, "bid": bids}})
    assert status == 200
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["ctr_mean"]),
                               body["outputs"]["ctr_mean"], rtol=1e-6)
    assert tf.make_ndarray(response.outputs["advertiser_echo"]).tolist() == [
        a.encode() for a in advertisers]


def test_output_filter(stubs):
    request = _request("serving_default", advertiser=np.array([b"a"], object),
                       bid=np.array([1.0], np.float32))
    request.output_filter.append("ctr_mean")
    assert list(stubs[0].Predict(request, timeout=30).outputs) == ["ctr_mean"]


def test_get_model_metadata(stubs):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "ddn"
    request.model_spec.version_label = "stable"
    response = stubs[0].GetModelMetadata(request, timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value) == ("ddn", 1)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_defs)
    serving_default = signature_defs.signature_def["serving_default"]
    assert set(serving_default.inputs) == {"advertiser", "bid"}
    assert serving_default.inputs["advertiser"].dtype == tf.string.as_datatype_enum
    assert set(signature_defs.signature_def["mc_dropout"].outputs) == {"ctr_mean", "model_stddev"}


def test_get_model_status(stubs):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "ddn"
    response = stubs[1].GetModelStatus(request, timeout=30)
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0),
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]


def _metadata_request(fields=("signature_def",), **spec):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = spec.get("name", "ddn")
    return request


def _status_request(name="ddn", version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


_BID = {"bid": np.array([1.0], np.float32)}


def _raw(dtype=types_pb2.DT_FLOAT, dims=(1,), values=(1.0,), **fields):
    """A bid_score request whose `bid` TensorProto is written by hand."""
    request = _request()
    proto = request.inputs["bid"]
    proto.dtype = dtype
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    proto.float_val.extend(values)
    for key, value in fields.items():
        setattr(proto, key, value)
    return request


@pytest.mark.parametrize("call, request_, code, message", [
    (0, _request(name="nope", **_BID), "NOT_FOUND", "Servable not found for request: Latest(nope)"),
    (0, _request(version=9, **_BID), "NOT_FOUND", "Specific(ddn, 9)"),
    (0, _request(label="beta", **_BID), "INVALID_ARGUMENT", "Unrecognized servable version label"),
    (0, _request(signature="nope", **_BID), "FAILED_PRECONDITION",
     'Serving signature key "nope" not found.'),
    (0, _request(bid=np.array([1.0], np.float64)), "INVALID_ARGUMENT",
     "Expects arg[0] to be float but double is provided"),
    (0, _request(price=np.array([1.0], np.float32)), "INVALID_ARGUMENT",
     "input size does not match signature"),
    (0, _request(bid=np.array([[1.0]], np.float32)), "INVALID_ARGUMENT", "expects [-1]"),
    (0, predict_pb2.PredictRequest(), "INVALID_ARGUMENT", "Missing ModelSpec"),
    # Hostile tensors: refused before anything is allocated, never INTERNAL.
    (0, _raw(dtype=types_pb2.DT_RESOURCE), "INVALID_ARGUMENT",
     "Expects arg[0] to be float but resource is provided"),
    (0, _raw(dtype=types_pb2.DT_VARIANT), "INVALID_ARGUMENT", "but variant is provided"),
    (0, _raw(dtype=999), "INVALID_ARGUMENT", "but unknown dtype 999 is provided"),
    (0, _raw(dims=(2**40, 1), values=()), "INVALID_ARGUMENT",
     "shape [1099511627776, 1] holds 1099511627776 values"),
    (0, _raw(dims=(3,), values=(1.0,)), "INVALID_ARGUMENT",
     "shape [3] holds 3 values but 1 were given"),
    (0, _raw(dims=(-5,), values=()), "INVALID_ARGUMENT", "not a valid tensor shape"),
    (0, _raw(dims=(2,), values=(), tensor_content=b"\x00" * 5), "INVALID_ARGUMENT",
     "holds 2 values but 1 were given"),
    (1, _metadata_request(fields=()), "INVALID_ARGUMENT", "must specify at least one"),
    (1, _metadata_request(fields=("graph",)), "INVALID_ARGUMENT", "graph is not supported"),
    (1, _metadata_request(name="nope"), "NOT_FOUND", "Latest(nope)"),
    (2, _status_request(name="nope"), "NOT_FOUND", "Could not find any versions of model nope"),
    (2, _status_request(version=9), "NOT_FOUND", "Could not find version 9 of model ddn"),
])
def test_errors_have_tf_serving_status_codes(stubs, call, request_, code, message):
    method = [stubs[0].Predict, stubs[0].GetModelMetadata, stubs[1].GetModelStatus][call]
    with pytest.raises(grpc.RpcError) as raised:
        method(request_, timeout=30)
    assert raised.value.code() == grpc.StatusCode[code]
    assert message in raised.value.details()


def test_classify_is_unimplemented_and_serving_goes_on(stubs, server):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "ddn"
    with pytest.raises(grpc.RpcError) as raised:
        stubs[0].Classify(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    response = stubs[0].Predict(_request(**_BID), timeout=30)
    assert tf.make_ndarray(response.outputs["score"]).tolist() == [4.0]
    count = server.metrics.request_latency.count("ddn", "Predict", "GRPC")
    assert count >= 1


def test_health_and_reflection(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tensorflow.serving.PredictionService",
                        "tensorflow.serving.ModelService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as raised:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=30)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = list(stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30))
        names = {s.name for s in answer.list_services_response.service}
        assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
                "grpc.health.v1.Health"} <= names
