"""Model warm-up, as TF Serving does it (servables/tensorflow/saved_model_warmup_util.{h,cc}).

A version may carry `assets.extra/tf_serving_warmup_requests`: a TFRecord of
`PredictionLog`s that the server replays at load, before the version serves, so the first
real request does not pay for tracing and allocation. At most 1,000 records; a record
that fails fails the load. `serving.export` writes the file (`write_warmup_requests`);
the model manager replays it (`replay_warmup_requests`, with `--enable_model_warmup`).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from serving.servable import ServableVersion
from serving.status import ServingError, invalid_argument

__all__ = ["MAX_WARMUP_RECORDS", "WARMUP_FILE", "replay_warmup_requests",
           "write_warmup_requests"]

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000
WARMUP_SIGNATURES = ("serving_default", "mc_dropout")
WARMUP_ROWS = 8


def write_warmup_requests(path: str, raw: dict, rows: int = WARMUP_ROWS) -> str:
    """Writes `path/assets.extra/tf_serving_warmup_requests`: one `PredictionLog` per
    signature of `WARMUP_SIGNATURES` with the first `rows` check rows, in the dtypes the
    SavedModel declares. TF Serving (and `tfddn serve`) replays them at load, so the first
    real request does not pay for tracing and allocation."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    signatures = tf.saved_model.load(path).signatures
    target = os.path.join(path, WARMUP_FILE)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tf.io.TFRecordWriter(target) as writer:
        for key in WARMUP_SIGNATURES:
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = key
            specs = signatures[key].structured_input_signature[1]
            for key_name, spec in specs.items():
                name = spec.name or key_name  # the SignatureDef's name (TF sanitises keys)
                values = np.asarray(raw[name])[:rows]
                request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=spec.dtype))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return target


def replay_warmup_requests(servable: ServableVersion, iterations: int = 1) -> int:
    """Replays the version's warmup requests (if any) before it serves; returns how many.

    Only `predict_log` records are supported (tfddn exports write those).

    Raises:
        ServingError: a record is not a PredictionLog, is not a predict log, fails, or
            there are more than `MAX_WARMUP_RECORDS`; as in TF Serving, the load fails.
    """
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        count += 1
        if count > MAX_WARMUP_RECORDS:
            raise invalid_argument(f"Number of warmup records exceeds the maximum "
                                   f"({MAX_WARMUP_RECORDS}) at {path}")
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError
            raise invalid_argument(f"Failed to parse warmup record {count} from "
                                   f"{path}") from None
        if log.WhichOneof("log_type") != "predict_log":
            raise ServingError("UNIMPLEMENTED", f"warmup record {count} of {path} is a "
                               f"{log.WhichOneof('log_type')}; the local server replays "
                               "predict_log records only")
        request = log.predict_log.request
        key = request.model_spec.signature_name or "serving_default"
        if key not in servable.signatures:
            raise invalid_argument(f"warmup record {count}: no signature {key!r}")
        signature = servable.signatures[key]
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        signature.check_inputs(inputs, {k: v.dtype for k, v in request.inputs.items()})
        for _ in range(iterations):
            signature.run(inputs, list(request.output_filter))
    return count
