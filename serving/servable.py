"""One loaded model version (a "servable" in TF Serving's words) and its signatures.

A version directory holds a SavedModel (`saved_model.pb` + `variables/`). The
signature defs are read from the MetaGraphDef tagged `serve`, exactly as TF Serving
reports them in `GetModelMetadata`; the callables come from `tf.saved_model.load`.
`Signature.run` validates a request's tensors the way TF Serving's `predict_util.cc`
does (input names, exact dtypes, shapes compatible with the signature) before
running the graph, so every client mistake is an `INVALID_ARGUMENT`, never a crash.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.json_tensor import dtype_name
from serving.status import ServingError, invalid_argument

__all__ = ["ServableVersion", "Signature", "is_complete_version_dir"]

# Canonical codes in `tensorflow::error::Code` order (tf.errors.OpError.error_code).
_CANONICAL = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
              "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
              "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
              "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]


def is_complete_version_dir(path: str) -> bool:
    """A SavedModel that finished writing: it has its `saved_model.pb` (or `.pbtxt`)."""
    return any(os.path.isfile(os.path.join(path, f))
               for f in ("saved_model.pb", "saved_model.pbtxt"))


def _shape_text(shape: Sequence[int] | None) -> str:
    return "[?]" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


class Signature:
    """A callable signature with the TensorInfo of its inputs and outputs.

    Args:
        name: signature key, e.g. `serving_default`.
        signature_def: the `SignatureDef` proto from the MetaGraphDef.
        function: the loaded concrete function, called with keyword tensors.
    """

    def __init__(self, name: str, signature_def: meta_graph_pb2.SignatureDef, function):
        self.name = name
        self.signature_def = signature_def
        self.function = function
        self.input_dtypes = {k: v.dtype for k, v in signature_def.inputs.items()}
        self.output_names = sorted(signature_def.outputs)
        self.input_shapes = {k: None if v.tensor_shape.unknown_rank else
                             [d.size for d in v.tensor_shape.dim]
                             for k, v in signature_def.inputs.items()}

    def check_dtypes(self, dtypes: Mapping[str, int]) -> None:
        """INVALID_ARGUMENT unless every input the signature names was sent with its dtype."""
        for index, name in enumerate(sorted(self.input_dtypes)):
            expected = self.input_dtypes[name]
            if name in dtypes and dtypes[name] != expected:
                raise invalid_argument(f"Expects arg[{index}] to be {dtype_name(expected)} but "
                                       f"{dtype_name(dtypes[name])} is provided")

    def check_inputs(self, inputs: Mapping[str, np.ndarray],
                     dtypes: Mapping[str, int] | None = None) -> None:
        """Raises INVALID_ARGUMENT unless `inputs` fit the signature.

        Args:
            inputs: input name -> array.
            dtypes: the dtype each input was sent as (gRPC `TensorProto.dtype`); these
                must equal the signature's exactly, as TF Serving's session requires.
        """
        sent, wanted = set(inputs), set(self.input_dtypes)
        if sent != wanted:
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
        if dtypes is not None:
            self.check_dtypes(dtypes)
        for name in sorted(wanted):
            shape, spec = inputs[name].shape, self.input_shapes[name]
            if spec is not None and (len(shape) != len(spec) or any(
                    want >= 0 and got != want for got, want in zip(shape, spec))):
                raise invalid_argument(f"input '{name}' of signature '{self.name}' has shape "
                                       f"{_shape_text(shape)} but the signature expects "
                                       f"{_shape_text(spec)} (-1 = any size)")

    def run(self, inputs: Mapping[str, np.ndarray],
            output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Runs the graph on validated inputs; returns output name -> array."""
        names = list(output_filter) or self.output_names
        for alias in output_filter:
            if alias not in self.signature_def.outputs:
                raise invalid_argument(f"output tensor alias not found in signature: {alias} "
                                       f"Outputs expected to be in the set "
                                       f"{{{','.join(self.output_names)}}}.")
        if len(set(names)) != len(names):
            raise invalid_argument(f"duplicate output tensor alias: {names}")
        feed = {k: tf.constant(v, dtype=tf.as_dtype(self.input_dtypes[k]))
                for k, v in inputs.items()}
        try:
            result = self.function(**feed)
        except tf.errors.OpError as err:
            raise ServingError(_CANONICAL[err.error_code], err.message) from None
        except (TypeError, ValueError) as err:
            raise invalid_argument(str(err)) from None
        return {name: result[name].numpy() for name in names}


class ServableVersion:
    """One loaded version of a model: its signatures, ready to run."""

    def __init__(self, name: str, version: int, path: str,
                 signature_def_map: get_model_metadata_pb2.SignatureDefMap,
                 signatures: dict[str, Signature], load_seconds: float, loaded=None):
        self.name = name
        self.version = version
        self.path = path
        self.signature_def_map = signature_def_map
        self.signatures = signatures
        self.load_seconds = load_seconds
        self._loaded = loaded  # keeps the restored objects (variables) alive

    @classmethod
    def load(cls, name: str, version: int, path: str,
             tags: Sequence[str] = ("serve",)) -> ServableVersion:
        """Loads the SavedModel at `path` fully (graph, variables, signatures)."""
        start = time.perf_counter()
        saved_model = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            saved_model.ParseFromString(f.read())
        meta_graph = next((m for m in saved_model.meta_graphs
                           if set(m.meta_info_def.tags) == set(tags)), None)
        if meta_graph is None:
            raise ServingError("NOT_FOUND", f"Could not find meta graph def matching supplied "
                                            f"tags: {{ {' '.join(tags)} }}")
        loaded = tf.saved_model.load(path, tags=list(tags))
        signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        signatures = {}
        for key, signature_def in meta_graph.signature_def.items():
            signature_def_map.signature_def[key].CopyFrom(signature_def)
            if key in loaded.signatures:
                signatures[key] = Signature(key, signature_def, loaded.signatures[key])
        return cls(name, version, path, signature_def_map, signatures,
                   time.perf_counter() - start, loaded)

    def __repr__(self) -> str:
        return f"ServableVersion(name={self.name!r}, version={self.version})"
