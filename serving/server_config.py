"""Typed configs for the local server, read from TF Serving's flags and text protos.

`ServerConfig` holds the command-line flags (TF Serving's names). The three config
files are TF Serving's text-format protos, parsed with `google.protobuf.text_format`
so a file that the real server accepts is accepted here and a typo fails loudly:

- `--model_config_file`: `ModelServerConfig` (from `tensorflow-serving-api`), one
  `config { name base_path model_version_policy version_labels }` per model.
- `--batching_parameters_file`: `BatchingParameters` (`session_bundle_config.proto`).
- `--monitoring_config_file`: `MonitoringConfig` (`monitoring_config.proto`).

The last two protos are not shipped in the `tensorflow-serving-api` wheel, so their
descriptors are declared here with the same field names and numbers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

__all__ = ["BatchingParameters", "ModelConfig", "MonitoringConfig", "ServerConfig",
           "grpc_channel_options", "model_configs_from_proto", "read_batching_parameters", "read_model_configs",
           "read_monitoring_config"]

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def _flag(default, help_text: str):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """`tensorflow_model_server` flags understood by the local server."""

    port: int = _flag(8500, "gRPC port (PredictionService, ModelService)")
    grpc_host: str = _flag("127.0.0.1", "gRPC bind address (local addition; TF Serving "
                                        "binds 0.0.0.0)")
    rest_api_port: int = _flag(8501, "REST/HTTP port; 0 turns REST off")
    rest_api_host: str = _flag("127.0.0.1", "REST bind address")
    rest_api_num_threads: int = _flag(8, "threads that run model calls (REST and gRPC)")
    rest_api_timeout_in_ms: int = _flag(30000, "REST request deadline; over it: 504")
    max_request_bytes: int = _flag(64 * 1024 * 1024, "largest accepted REST body; over it: "
                                                     "413 with a JSON error")
    model_name: str = _flag("default", "model name, used with --model_base_path")
    model_base_path: str = _flag("", "directory holding numeric version subdirectories")
    model_config_file: str = _flag("", "ModelServerConfig text proto (models, version "
                                       "policies, labels); overrides --model_name/base_path")
    model_config_file_poll_wait_seconds: float = _flag(
        0.0, "re-read --model_config_file this often; 0 reads it once")
    file_system_poll_wait_seconds: float = _flag(1.0, "look for new versions this often")
    allow_version_labels_for_unavailable_models: bool = _flag(
        True, "accepted for parity; the local server always lets a label name a version that "
              "is not loaded yet (requests to it get 404 until it is)")
    saved_model_tags: str = _flag("serve", "comma-separated MetaGraphDef tags to load")
    max_num_load_retries: int = _flag(5, "retries of a version that fails to load")
    enable_batching: bool = _flag(False, "batch concurrent predict requests per signature")
    batching_parameters_file: str = _flag("", "BatchingParameters text proto")
    monitoring_config_file: str = _flag("", "MonitoringConfig text proto (Prometheus path); "
                                            "without it the local server still exports at "
                                            f"{DEFAULT_PROMETHEUS_PATH}")
    rest_api_enable_cors_support: bool = _flag(
        False, "add TF Serving's CORS headers (Allow-Origin *, Methods POST, GET, Headers "
               "Content-Type) to every REST answer")
    grpc_channel_arguments: str = _flag(
        "", "comma-separated gRPC server arguments, e.g. grpc.max_connection_age_ms=2000")
    tensorflow_intra_op_parallelism: int = _flag(
        0, "threads within one TensorFlow op; 0 lets TensorFlow choose")
    tensorflow_inter_op_parallelism: int = _flag(
        0, "TensorFlow ops run in parallel; 0 lets TensorFlow choose")
    enable_model_warmup: bool = _flag(
        True, "replay a version's assets.extra/tf_serving_warmup_requests (PredictionLog "
              "TFRecords, at most 1,000) before it serves; a failing record fails the load")
    # Not a flag: bind both servers to ephemeral ports (tests, ServerHandle).
    pick_free_ports: bool = False

    def __post_init__(self):
        grpc_channel_options(self.grpc_channel_arguments)  # fails early on a typo
        if self.file_system_poll_wait_seconds <= 0:
            raise ValueError("file_system_poll_wait_seconds must be > 0. Received: "
                             f"file_system_poll_wait_seconds={self.file_system_poll_wait_seconds}")
        if self.max_request_bytes <= 0:
            raise ValueError(f"max_request_bytes must be > 0. Received: "
                             f"max_request_bytes={self.max_request_bytes}")
        if not self.model_config_file and not self.model_base_path:
            raise ValueError("Either --model_config_file or --model_base_path is required.")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One model: where its versions live, which to load, and its version labels.

    Args:
        policy: `latest` (the `num_versions` highest), `all`, or `specific` (`versions`).
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.policy not in ("latest", "all", "specific"):
            raise ValueError(f"Unknown version policy. Received: policy={self.policy!r}")
        if self.policy == "latest" and self.num_versions < 1:
            raise ValueError(f"num_versions must be >= 1. Received: "
                             f"num_versions={self.num_versions}")

    def aspired(self, on_disk: set[int]) -> set[int]:
        """The versions on disk this policy wants loaded."""
        if self.policy == "all":
            return set(on_disk)
        if self.policy == "specific":
            return on_disk & set(self.versions)
        return set(sorted(on_disk, reverse=True)[:self.num_versions])


def grpc_channel_options(text: str) -> list[tuple[str, int | str]]:
    """`--grpc_channel_arguments` ("k=v,k=v") as gRPC options; numbers become ints."""
    options = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"grpc_channel_arguments: {item!r} is not key=value")
        options.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return options


def read_model_configs(path: str) -> list[ModelConfig]:
    """Parses a `models.config` (`ModelServerConfig` text proto) into ModelConfigs."""
    with open(path) as f:
        proto = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    try:
        return model_configs_from_proto(proto)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def model_configs_from_proto(proto: model_server_config_pb2.ModelServerConfig
                             ) -> list[ModelConfig]:
    """ModelConfigs from a `ModelServerConfig` (file or `HandleReloadConfigRequest`)."""
    if proto.HasField("custom_model_config"):
        raise ValueError("custom_model_config is not supported, use model_config_list")
    configs = []
    for entry in proto.model_config_list.config:
        if entry.model_platform not in ("", "tensorflow"):
            raise ValueError(f"model {entry.name!r}: only model_platform 'tensorflow' is "
                             f"supported. Received: {entry.model_platform!r}")
        policy = entry.model_version_policy
        kind = policy.WhichOneof("policy_choice") or "latest"
        base = os.path.abspath(entry.base_path)  # relative to the working directory
        configs.append(ModelConfig(
            name=entry.name, base_path=base, policy=kind,
            num_versions=(policy.latest.num_versions or 1) if kind == "latest" else 1,
            versions=tuple(policy.specific.versions), labels=dict(entry.version_labels)))
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate model names: {names}")
    return configs


def _message_classes(package: str, messages: dict[str, list[tuple]]) -> dict:
    """Message classes for a small proto3 file declared as {name: [(field, number, type)]}."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=f"tfddn_local/{package}.proto", package=package, syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    kinds = {"bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
             "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
             "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64}
    for name, fields in messages.items():
        message = file_proto.message_type.add(name=name)
        for field_name, number, kind, *repeated in fields:
            field = message.field.add(name=field_name, number=number)
            field.label = (descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated
                           else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
            if kind in kinds:
                field.type = kinds[kind]
            else:
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                field.type_name = kind if kind.startswith(".") else f".{package}.{kind}"
    pool.Add(file_proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
            for name in messages}


_INT64 = ".google.protobuf.Int64Value"
_PROTOS = _message_classes("tensorflow.serving", {
    "BatchingParameters": [
        ("max_batch_size", 1, _INT64), ("batch_timeout_micros", 2, _INT64),
        ("max_enqueued_batches", 3, _INT64), ("num_batch_threads", 4, _INT64),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, "int64", "repeated"), ("pad_variable_length_inputs", 7, "bool"),
        ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, _INT64)],
    "PrometheusConfig": [("enable", 1, "bool"), ("path", 2, "string")],
    "MonitoringConfig": [("prometheus_config", 1, "PrometheusConfig")],
})


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """The BatchingParameters the local batcher honours (TF Serving's defaults)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")


def read_batching_parameters(path: str) -> BatchingParameters:
    with open(path) as f:
        proto = text_format.Parse(f.read(), _PROTOS["BatchingParameters"]())
    values = {name: getattr(proto, name).value for name in
              ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
               "num_batch_threads") if proto.HasField(name)}
    return BatchingParameters(**values)


@dataclasses.dataclass(frozen=True)
class MonitoringConfig:
    enable: bool = True
    path: str = DEFAULT_PROMETHEUS_PATH


def read_monitoring_config(path: str) -> MonitoringConfig:
    with open(path) as f:
        proto = text_format.Parse(f.read(), _PROTOS["MonitoringConfig"]())
    prometheus = proto.prometheus_config
    return MonitoringConfig(enable=prometheus.enable,
                            path=prometheus.path or DEFAULT_PROMETHEUS_PATH)
