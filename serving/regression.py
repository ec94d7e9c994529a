"""TF Serving's Regress API (REST `:regress`, gRPC `Regress`) on a regression signature,
and the checks TF Serving makes of every `:classify` / `:regress` JSON body.

A regression signature (method `tensorflow/serving/regress`) takes one input `inputs`,
a batch of serialized `tf.Example`s, and returns one output `outputs` [B] (tfddn exports
`regress`: the CTR mean). The request's examples are built the way TF Serving builds
them (`util/json_tensor.cc` `MakeExampleFromJsonObject` for REST; the protos as sent for
gRPC), with the optional `context` merged into each example, serialized, and run.

References: tensorflow_serving/servables/tensorflow/regressor.cc (signature checks),
tensorflow_serving/util/json_tensor.cc (JSON examples, `{"results": [...]}`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.protobuf import saved_model_pb2

from serving.json_tensor import _decode_b64, _echo, _is_b64, signature_name
from serving.servable import Signature
from serving.status import invalid_argument

__all__ = ["REGRESS_METHOD", "check_regression_signature", "examples_from_json",
           "examples_from_proto", "mark_regression_signature", "results_to_json"]

REGRESS_METHOD = "tensorflow/serving/regress"
_KINDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def mark_regression_signature(path: str, key: str = "regress") -> None:
    """Sets the `regress` SignatureDef's method_name to TF Serving's regression method
    (Keras exports every endpoint as predict), so TF Serving's Regress API accepts it."""
    file = os.path.join(path, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(file, "rb") as fh:
        saved_model.ParseFromString(fh.read())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[key].method_name = REGRESS_METHOD
    with open(file, "wb") as fh:
        fh.write(saved_model.SerializeToString())


def check_regression_signature(signature: Signature) -> None:
    """`PreProcessRegression`: the method name and the single `inputs` / `outputs`."""
    definition = signature.signature_def
    if definition.method_name != REGRESS_METHOD:
        raise invalid_argument(f"Expected regression signature method_name to be "
                               f"{REGRESS_METHOD}. Was: {definition.method_name}")
    if len(definition.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(definition.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "inputs" not in definition.inputs:
        raise invalid_argument("No regression inputs found in SignatureDef: "
                               f"{signature.name}")
    if "outputs" not in definition.outputs:
        raise invalid_argument("No regression outputs found in SignatureDef: "
                               f"{signature.name}")


def _json_kind(value: Any) -> str:
    """RapidJSON's type names, as `JsonTypeString` writes them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return {dict: "object", list: "array", str: "string"}.get(type(value), "number")


def _add_value(feature: feature_pb2.Feature, name: str, value: Any) -> None:
    """`AddValueToFeature`: one JSON value appended to the feature's list."""
    if isinstance(value, bool):
        kind, item = "int64_list", int(value)
    elif isinstance(value, str):
        kind, item = "bytes_list", value.encode("utf-8")
    elif _is_b64(value):
        kind, item = "bytes_list", _decode_b64(value)
    elif isinstance(value, float):
        kind, item = "float_list", value
    elif isinstance(value, int):
        if not -2**63 <= value < 2**63:
            raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is "
                                   "supported.")
        kind, item = "int64_list", value
    else:
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: "
                               f"{_json_kind(value)}")
    current = feature.WhichOneof("kind")
    if current is not None and current != kind:
        raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: "
                               f"{_KINDS[current]}")
    getattr(feature, kind).value.append(item)


def _example(value: Any) -> example_pb2.Example:
    """`MakeExampleFromJsonObject`."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_kind(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_value(feature, name, item)
    return example


def _serialized(examples, context: example_pb2.Example | None) -> np.ndarray:
    out = []
    for example in examples:
        if context is not None:  # the context's features, the example's own winning
            merged = example_pb2.Example()
            merged.CopyFrom(context)
            for name, feature in example.features.feature.items():
                merged.features.feature[name].CopyFrom(feature)
            example = merged
        out.append(example.SerializeToString())
    return np.array(out, dtype=object)


def examples_from_json(doc: dict, verb: str = "regress") -> np.ndarray:
    """`FillClassifyRegressRequestFromJson`: a `:classify` / `:regress` body -> serialized
    examples (the context merged into each), or TF Serving's 400 for a malformed one."""
    signature_name(doc)
    context = _example(doc["context"]) if "context" in doc else None
    if "examples" not in doc:
        raise invalid_argument(f"JSON Value: {_echo(doc)} When method is {verb}, key "
                               "'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(f"JSON Value: {_echo(doc)} Expecting 'examples' value to be an "
                               "list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {_echo(doc)} 'examples' value is an empty array")
    return _serialized([_example(e) for e in examples], context)


def examples_from_proto(request_input) -> np.ndarray:
    """A gRPC `tensorflow.serving.Input` -> serialized examples."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples, context = request_input.example_list.examples, None
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        examples, context = listed.examples, listed.context
    else:
        raise invalid_argument("Input is empty")
    if not examples:
        raise invalid_argument("Input is empty")
    return _serialized(examples, context)


def results_to_json(values: np.ndarray) -> str:
    """`{"results": [v1, v2, ...]}`, floats written like TF Serving's."""
    from serving.json_tensor import predict_outputs_to_json

    text = predict_outputs_to_json({"outputs": np.asarray(values, np.float32)}, "columnar")
    return '{"results": ' + text[len('{"outputs": '):]
