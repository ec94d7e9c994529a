"""TF Serving's gRPC services on `grpc.aio`, with the `tensorflow-serving-api` protos.

`tensorflow.serving.PredictionService` answers `Predict` and `GetModelMetadata`
(`metadata_field: "signature_def"`); `tensorflow.serving.ModelService` answers
`GetModelStatus` and `HandleReloadConfigRequest`. Errors carry TF Serving's codes:
NOT_FOUND (unknown model or version), INVALID_ARGUMENT (bad inputs, dtypes that differ
from the signature's, unknown label), FAILED_PRECONDITION (unknown signature).
`Regress` runs a regression signature (`serving.regression`, tfddn exports `regress`);
`Classify` and `MultiInference` answer UNIMPLEMENTED. `grpc.health.v1.Health`
reports SERVING for the server ("") and both services (NOT_SERVING while shutting down),
and server reflection lists every service (`grpcurl -plaintext HOST:PORT list`).

The official client pattern works unchanged:

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    response = stub.Predict(request, timeout=10.0)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tensorflow.core.framework import types_pb2

from serving.json_tensor import dtype_name
from serving.metrics import UNKNOWN_LABEL, Metrics
from serving.prediction import DEFAULT_SIGNATURE, Predictor
from serving.regression import check_regression_signature, examples_from_proto
from serving.server_config import ModelConfig, model_configs_from_proto
from serving.status import ServingError, invalid_argument

__all__ = ["add_services"]

_log = logging.getLogger(__name__)

Reload = Callable[[list[ModelConfig]], Awaitable[None]]
# dtype -> (the TensorProto field holding its values, values per element).
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", 1), types_pb2.DT_DOUBLE: ("double_val", 1),
    types_pb2.DT_INT32: ("int_val", 1), types_pb2.DT_INT16: ("int_val", 1),
    types_pb2.DT_INT8: ("int_val", 1), types_pb2.DT_UINT8: ("int_val", 1),
    types_pb2.DT_UINT16: ("int_val", 1), types_pb2.DT_INT64: ("int64_val", 1),
    types_pb2.DT_UINT32: ("uint32_val", 1), types_pb2.DT_UINT64: ("uint64_val", 1),
    types_pb2.DT_BOOL: ("bool_val", 1), types_pb2.DT_STRING: ("string_val", 1),
    types_pb2.DT_HALF: ("half_val", 1), types_pb2.DT_BFLOAT16: ("half_val", 1),
    types_pb2.DT_COMPLEX64: ("scomplex_val", 2), types_pb2.DT_COMPLEX128: ("dcomplex_val", 2),
}


def decode_inputs(protos, max_elements: int) -> dict:
    """`TensorProto`s -> arrays, refusing before any allocation what cannot be an input.

    TF would fill a tensor whose proto gives fewer values than its shape holds (a shape of
    [2^40, 1] with no values asks for 4 TiB); TF Serving's clients always send every
    value, so anything else is INVALID_ARGUMENT, as are dtypes without tensor values
    (resource, variant) and negative or huge shapes.
    """
    arrays = {}
    for name, proto in protos.items():
        if proto.dtype not in _VALUE_FIELDS:
            raise invalid_argument(f"input '{name}': dtype {dtype_name(proto.dtype)} cannot "
                                   "be sent as a tensor")
        dims = [d.size for d in proto.tensor_shape.dim]
        if proto.tensor_shape.unknown_rank or any(d < 0 for d in dims):
            raise invalid_argument(f"input '{name}': shape {dims} is not a valid tensor shape")
        elements = 1
        for d in dims:
            elements *= d
        if elements > max_elements:
            raise invalid_argument(f"input '{name}': shape {dims} holds {elements} values, more "
                                   f"than the {max_elements} a request may carry")
        field, per_element = _VALUE_FIELDS[proto.dtype]
        if proto.tensor_content and proto.dtype != types_pb2.DT_STRING:
            given = len(proto.tensor_content) // tf.as_dtype(proto.dtype).size
        else:
            given = len(getattr(proto, field)) // per_element
        if given != elements:
            raise invalid_argument(f"input '{name}': shape {dims} holds {elements} values but "
                                   f"{given} were given")
        try:
            arrays[name] = tf.make_ndarray(proto)
        except (TypeError, ValueError) as err:
            raise invalid_argument(f"Cannot parse input tensor: {err}") from None
    return arrays


def _spec_parts(request) -> tuple[str, int | None, str | None]:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    spec = request.model_spec
    choice = spec.WhichOneof("version_choice")
    return (spec.name, spec.version.value if choice == "version" else None,
            spec.version_label if choice == "version_label" else None)


def _model_label(manager, name: str) -> str:
    """The metrics label of a model name: itself if served, else one bounded label."""
    return name if not name or manager.knows(name) else UNKNOWN_LABEL


class _Observed:
    """Counts one call in the metrics and turns a ServingError into a gRPC status."""

    def __init__(self, metrics: Metrics, api: str):
        self.metrics, self.api = metrics, api
        self.model, self.signature = "", ""

    async def __call__(self, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable]):
        start = time.perf_counter()
        code = "OK"
        try:
            return await work()
        except ServingError as err:
            code = err.code
            await context.abort(err.grpc_code, err.message)
        except Exception as err:  # noqa: BLE001 - a bug answers INTERNAL, the server goes on
            code = "INTERNAL"
            _log.exception("gRPC %s failed", self.api)
            await context.abort(grpc.StatusCode.INTERNAL, f"Internal error: {err}")
        finally:
            if self.model:
                self.metrics.request_count.inc(self.model, code)
                if code == "OK":  # TF Serving times successful requests only
                    self.metrics.request_latency.observe((time.perf_counter() - start) * 1e6,
                                                         self.model, self.api, "GRPC")
                self.metrics.requests.inc(self.model, self.signature, "GRPC", code)


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    max_elements = 2**31  # values per input tensor; a request's bytes bound it anyway

    def __init__(self, predictor: Predictor, metrics: Metrics):
        self.predictor = predictor
        self.metrics = metrics

    async def Predict(self, request: predict_pb2.PredictRequest, context):
        observed = _Observed(self.metrics, "Predict")

        async def work():
            name, version, label = _spec_parts(request)
            observed.model = _model_label(self.predictor.manager, name)
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            observed.signature = UNKNOWN_LABEL  # until the lookup succeeds
            servable, signature = self.predictor.lookup(name, version, label, signature_name,
                                                        "GRPC")
            observed.signature = signature.name
            dtypes = {k: v.dtype for k, v in request.inputs.items()}
            signature.check_dtypes(dtypes)
            inputs = decode_inputs(request.inputs, self.max_elements)
            outputs = await self.predictor.run(servable, signature, inputs, dtypes,
                                               list(request.output_filter), api="Predict")
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature_name
            for key, array in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(array))
            return response

        return await observed(context, work)

    async def Regress(self, request: regression_pb2.RegressionRequest, context):
        observed = _Observed(self.metrics, "Regress")

        async def work():
            name, version, label = _spec_parts(request)
            observed.model = _model_label(self.predictor.manager, name)
            observed.signature = UNKNOWN_LABEL
            servable, signature = self.predictor.lookup(
                name, version, label, request.model_spec.signature_name, "GRPC")
            observed.signature = signature.name
            check_regression_signature(signature)
            inputs = {"inputs": examples_from_proto(request.input)}
            outputs = await self.predictor.run(servable, signature, inputs, api="Regress")
            response = regression_pb2.RegressionResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature.name
            for value in outputs["outputs"].reshape(-1):
                response.result.regressions.add().value = float(value)
            return response

        return await observed(context, work)

    async def GetModelMetadata(self, request, context):
        observed = _Observed(self.metrics, "GetModelMetadata")

        async def work():
            name, version, label = _spec_parts(request)
            observed.model = _model_label(self.predictor.manager, name)
            if not request.metadata_field:
                raise invalid_argument("GetModelMetadataRequest must specify at least one "
                                       "metadata_field")
            for field in request.metadata_field:
                if field != "signature_def":
                    raise invalid_argument(f"Metadata field {field} is not supported")
            servable = self.predictor.manager.resolve(name, version, label)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(servable.signature_def_map)
            return response

        return await observed(context, work)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, predictor: Predictor, metrics: Metrics, reload: Reload | None):
        self.manager = predictor.manager
        self.metrics = metrics
        self.reload = reload

    async def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,
                             context):
        observed = _Observed(self.metrics, "GetModelStatus")

        async def work():
            name, version, _ = _spec_parts(request)
            observed.model = _model_label(self.manager, name)
            return self.manager.status(name, version)

        return await observed(context, work)

    async def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        if self.reload is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "config reload is disabled")
        try:
            await self.reload(model_configs_from_proto(request.config))
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return response


SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


async def add_services(server: grpc.aio.Server, predictor: Predictor, metrics: Metrics,
                       reload: Reload | None = None):
    """Registers PredictionService and ModelService on `server`, with `grpc.health.v1`
    (both services and the server, "", SERVING) and server reflection.

    Returns:
        The health servicer: `await health.enter_graceful_shutdown()` before stopping.
    """
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionService(predictor, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        _ModelService(predictor, metrics, reload), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for name in ("", *SERVICES):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return checker
