"""Configs, flags, version policies, the manager's load rules, and JSON number output."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2

from serving.json_tensor import COLUMNAR, ROW, predict_outputs_to_json
from serving.server import build_parser
from tfddn.flags import dataclass_from_args
from serving.server_config import (
    ModelConfig,
    ServerConfig,
    read_batching_parameters,
    read_model_configs,
    read_monitoring_config,
)

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "serving", "configs")


def test_production_configs_parse_as_tf_serving_text_protos():
    (ddn,) = read_model_configs(os.path.join(CONFIGS, "models.config"))
    assert (ddn.name, ddn.base_path, ddn.policy, ddn.versions) == ("ddn", "/models/ddn",
                                                                   "specific", (1, 2))
    assert ddn.labels == {"stable": 1, "canary": 2}
    (local,) = read_model_configs(os.path.join(CONFIGS, "models.local.config"))
    assert local.base_path == os.path.abspath("saved_models/ddn")
    assert (local.policy, local.versions, local.labels) == (ddn.policy, ddn.versions, ddn.labels)
    batching = read_batching_parameters(os.path.join(CONFIGS, "batching.config"))
    assert (batching.max_batch_size, batching.batch_timeout_micros,
            batching.num_batch_threads) == (64, 2000, 2)
    monitoring = read_monitoring_config(os.path.join(CONFIGS, "monitoring.config"))
    assert (monitoring.enable, monitoring.path) == (True, "/monitoring/prometheus/metrics")


def test_local_server_accepts_the_containers_flags():
    with open(os.path.join(CONFIGS, "docker-compose.yml")) as f:
        service = yaml.safe_load(f)["services"]["serving"]
    assert service["image"].startswith("tensorflow/serving:")
    argv = [flag.replace("/config/", CONFIGS + "/") for flag in service["command"]]
    args = build_parser().parse_args(argv)
    config = dataclass_from_args(ServerConfig, args)
    assert (config.port, config.rest_api_port, config.enable_batching) == (8500, 8501, True)
    assert config.monitoring_config_file.endswith("monitoring.config")


def test_common_tensorflow_model_server_flags_are_accepted(capsys):
    from serving.server import main

    argv = ["--model_name", "m", "--model_base_path", "/m", "--enable_model_warmup", "false",
            "--tensorflow_intra_op_parallelism", "2", "--tensorflow_inter_op_parallelism", "1",
            "--rest_api_enable_cors_support", "--grpc_channel_arguments",
            "grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x"]
    args = build_parser().parse_args(argv)
    config = dataclass_from_args(ServerConfig, args)
    assert config.rest_api_enable_cors_support and config.tensorflow_intra_op_parallelism == 2
    from serving.server_config import grpc_channel_options

    assert grpc_channel_options(config.grpc_channel_arguments) == [
        ("grpc.max_connection_age_ms", 2000), ("grpc.primary_user_agent", "x")]
    with pytest.raises(ValueError, match="not key=value"):
        ServerConfig(grpc_channel_arguments="grpc.x")
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("TensorFlow ModelServer: ") and "TensorFlow Library: " in out


def test_cors_headers(model_versions, install_version, tmp_path):
    import urllib.request

    from serving.server import ServerHandle

    base_path = str(tmp_path / "ddn")
    install_version(base_path, model_versions[1], 1)
    config = ServerConfig(model_name="ddn", model_base_path=base_path,
                          rest_api_enable_cors_support=True)
    with ServerHandle.start(config) as server, urllib.request.urlopen(
            f"{server.rest_url}/v1/models/ddn", timeout=30) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Allow-Methods"] == "POST, GET"
        assert response.headers["Access-Control-Allow-Headers"] == "Content-Type"


def test_help_uses_tf_serving_flag_names(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--port", "--rest_api_port", "--model_name", "--model_base_path",
                 "--model_config_file", "--file_system_poll_wait_seconds", "--enable_batching",
                 "--batching_parameters_file", "--monitoring_config_file"):
        assert flag in text


def test_bad_configs_fail_loudly(tmp_path):
    path = tmp_path / "models.config"
    path.write_text('model_config_list { config { name: "x" base_pth: "/x" } }')
    with pytest.raises(text_format.ParseError):
        read_model_configs(str(path))
    path.write_text('custom_model_config { }')
    with pytest.raises(ValueError, match="custom_model_config"):
        read_model_configs(str(path))
    with pytest.raises(ValueError, match="model_base_path"):
        ServerConfig()
    with pytest.raises(ValueError, match="Received: policy='newest'"):
        ModelConfig("x", "/x", policy="newest")


@pytest.mark.parametrize("config, expected", [
    (ModelConfig("m", "/m"), {7}),
    (ModelConfig("m", "/m", num_versions=2), {5, 7}),
    (ModelConfig("m", "/m", policy="all"), {1, 5, 7}),
    (ModelConfig("m", "/m", policy="specific", versions=(1, 9)), {1}),
])
def test_version_policies(config, expected):
    assert config.aspired({1, 5, 7}) == expected


def test_broken_version_keeps_the_old_one_serving(model_versions, install_version, tmp_path):
    from serving.model_manager import ModelManager
    from serving.status import ServingError

    base_path = str(tmp_path / "m")
    install_version(base_path, model_versions[2], 2)
    manager = ModelManager([ModelConfig("m", base_path)], max_num_load_retries=1)
    manager.poll_once()
    broken = os.path.join(base_path, "3")
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"not a SavedModel")
    for _ in range(3):
        manager.poll_once()
    assert manager.resolve("m").version == 2
    assert manager.metrics.load_attempt_count.value(broken, "fail") == 2  # first try + 1 retry
    state = get_model_status_pb2.ModelVersionStatus.State.Name
    states = {s.version: (state(s.state), s.status.error_message)
              for s in manager.status("m").model_version_status}
    assert states[2] == ("AVAILABLE", "")
    assert states[3][0] == "END" and "Error parsing message" in states[3][1]
    manager.apply_config([ModelConfig("m", base_path, labels={"stable": 2})])
    assert manager.resolve("m", label="stable").version == 2
    with pytest.raises(ServingError, match="Unrecognized servable version label: beta"):
        manager.resolve("m", label="beta")


def test_cold_start_with_a_broken_newest_version_serves_the_newest_that_loads(
        model_versions, install_version, tmp_path):
    from serving.model_manager import ModelManager

    base_path = str(tmp_path / "m")
    install_version(base_path, model_versions[1], 1)
    broken = os.path.join(base_path, "2")
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"not a SavedModel")
    manager = ModelManager([ModelConfig("m", base_path)], max_num_load_retries=0)
    manager.poll_once()  # the first poll of a fresh server
    assert manager.resolve("m").version == 1
    assert manager.resolve("m", version=1).version == 1
    state = get_model_status_pb2.ModelVersionStatus.State.Name
    states = {s.version: (state(s.state), s.status.error_message)
              for s in manager.status("m").model_version_status}
    assert states[1] == ("AVAILABLE", "")
    assert states[2][0] == "END" and "Error parsing message" in states[2][1]
    manager.poll_once()  # later polls keep it (the broken one is not retried forever)
    assert manager.resolve("m").version == 1


def test_numbers_are_written_like_tf_serving():
    outputs = {"x": np.array([0.1, 3.0, 1 / 3, 1e-5, 9e6, -0.0], np.float32),
               "y": np.array([1 / 3, 2.5, 1e300, np.nan, -np.inf, 7.0], np.float64),
               "n": np.array([1, -2, 3, 4, 5, 6], np.int64),
               "flag": np.array([True, False] * 3)}
    text = predict_outputs_to_json(outputs, COLUMNAR)
    assert text == ('{"outputs": {"flag": [true, false, true, false, true, false], '
                    '"n": [1, -2, 3, 4, 5, 6], '
                    '"x": [0.1, 3.0, 0.333333343, 1e-05, 9e+06, -0.0], '
                    '"y": [0.33333333333333331, 2.5, 1e+300, NaN, -Infinity, 7.0]}}')
    strings = {"label": np.array([b"caf\xc3\xa9", b"x"], object),
               "raw_bytes": np.array([b"\xff\x00", b"x"], object)}
    assert predict_outputs_to_json(strings, ROW) == (
        '{"predictions": [{"label": "café", "raw_bytes": {"b64": "/wA="}}, '
        '{"label": "x", "raw_bytes": {"b64": "eA=="}}]}')


def _reference_float(value: float, np_type) -> str:
    """TF Serving's WriteDecimal, one value at a time (the definition)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    if np_type(float(text)) != np_type(value):
        text = f"{value:.9g}" if np_type is np.float32 else f"{value:.17g}"
    return text + ".0" if "." not in text and "e" not in text else text


@pytest.mark.parametrize("np_type", [np.float32, np.float64])
def test_vectorised_float_writing_equals_the_definition(np_type):
    from serving.json_tensor import _format_floats

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 500), rng.uniform(0, 1e-6, 100),
                             10.0 ** rng.integers(-40, 40, 100), [0.0, -0.0, 1.0, 3.0, 1e6,
                             123456789.0, np.nan, np.inf, -np.inf, 0.1, 1 / 3]])
    with np.errstate(over="ignore"):
        flat = values.astype(np_type)
    assert _format_floats(flat, np_type) == [_reference_float(v, np_type)
                                             for v in flat.tolist()]


def test_column_fast_path_equals_the_row_by_row_conversion(monkeypatch):
    from serving import json_tensor
    from tensorflow.core.framework import types_pb2

    dtypes = {"ad": types_pb2.DT_STRING, "words": types_pb2.DT_STRING,
              "bid": types_pb2.DT_FLOAT, "site": types_pb2.DT_INT64}
    rng = np.random.default_rng(1)
    good = [{"ad": f"a{i}", "words": [f"w{j}" for j in range(3)], "bid": float(rng.normal()),
             "site": int(rng.integers(0, 100))} for i in range(50)]
    good[3]["bid"] = 2  # an int for a float input
    good[4]["ad"] = {"b64": "YWJj"}
    bad_sets = [
        [*good[:5], {**good[5], "words": ["x", "y"]}],  # ragged
        [*good[:5], {**good[5], "bid": "x"}],           # a string for a float
        [*good[:5], {**good[5], "site": 2**63}],        # out of int64
        [*good[:5], {**good[5], "site": 1.5}],
        [*good[:5], {k: v for k, v in good[5].items() if k != "bid"}],
    ]

    def both(instances):
        results = []
        for fast in (True, False):
            if not fast:
                monkeypatch.setattr(json_tensor, "_rows_fast", lambda *a: None)
            try:
                arrays, _ = json_tensor.predict_inputs_from_json({"instances": instances},
                                                                 dtypes)
                results.append({k: v.tolist() for k, v in arrays.items()})
            except json_tensor.ServingError as err:
                results.append(err.message)
            monkeypatch.undo()
        return results

    fast, slow = both(good)
    assert fast == slow and isinstance(fast, dict)
    for instances in bad_sets:
        fast, slow = both(instances)
        assert fast == slow and isinstance(fast, str)
