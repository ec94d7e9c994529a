"""A local model server that speaks TF Serving's REST and gRPC protocols.

It answers the same URLs, JSON and protos as `tensorflow_model_server`, so code and
curl commands written against the local server work unchanged against the official
`tensorflow/serving` container (see serving/README.md):

    python -m serving.server --model_name ddn --model_base_path saved_models/ddn
    python -m serving.server --model_config_file serving/configs/models.local.config \
        --enable_batching --batching_parameters_file serving/configs/batching.config

One asyncio event loop runs the aiohttp REST server and the `grpc.aio` server; model
calls run in a thread pool and version loads in a separate worker thread, so the
loop never waits on TensorFlow. `ServerHandle` runs the same server in a background
thread on free loopback ports, for tests and demos:

    with ServerHandle.start(ServerConfig(model_name="ddn", model_base_path=path)) as server:
        requests.post(f"{server.rest_url}/v1/models/ddn:predict", json=...)
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from serving.server_config import (
    BatchingParameters,
    ModelConfig,
    MonitoringConfig,
    ServerConfig,
    grpc_channel_options,
    read_batching_parameters,
    read_model_configs,
    read_monitoring_config,
)

if TYPE_CHECKING:  # the heavy imports (TensorFlow, gRPC) wait for run_server: --help is instant
    from serving.metrics import Metrics
    from serving.model_manager import ModelManager

__all__ = ["ServerHandle", "build_parser", "main", "run_server"]

_log = logging.getLogger(__name__)
_MAX_GRPC_MESSAGE = 2**31 - 1  # TF Serving lifts gRPC's 4 MB limit the same way


def _model_configs(config: ServerConfig) -> list[ModelConfig]:
    if config.model_config_file:
        return read_model_configs(config.model_config_file)
    return [ModelConfig(name=config.model_name, base_path=os.path.abspath(config.model_base_path))]


async def _poll_forever(manager: ModelManager, config: ServerConfig,
                        executor: concurrent.futures.Executor) -> None:
    """Looks for new versions (and, if asked, a changed config file) until cancelled."""
    loop = asyncio.get_running_loop()
    config_read = time.monotonic()
    while True:
        await asyncio.sleep(config.file_system_poll_wait_seconds)
        wait = config.model_config_file_poll_wait_seconds
        if config.model_config_file and wait > 0 and time.monotonic() - config_read >= wait:
            config_read = time.monotonic()
            try:
                manager.apply_config(read_model_configs(config.model_config_file))
            except (OSError, ValueError) as err:  # keep the config that works
                _log.error("Failed to reload %s: %s", config.model_config_file, err)
        try:
            await loop.run_in_executor(executor, manager.poll_once)
        except Exception:  # noqa: BLE001 - polling must outlive a bad directory
            _log.exception("File system poll failed")


def _set_tensorflow_threads(config: ServerConfig) -> None:
    """`--tensorflow_{intra,inter}_op_parallelism`, before TensorFlow starts its pools."""
    import tensorflow as tf

    try:
        if config.tensorflow_intra_op_parallelism:
            tf.config.threading.set_intra_op_parallelism_threads(
                config.tensorflow_intra_op_parallelism)
        if config.tensorflow_inter_op_parallelism:
            tf.config.threading.set_inter_op_parallelism_threads(
                config.tensorflow_inter_op_parallelism)
    except RuntimeError:  # TF already initialised in this process (tests, ServerHandle)
        _log.warning("TensorFlow is already initialised: the op parallelism flags are ignored")


async def run_server(config: ServerConfig, ready: Callable[[dict], None] | None = None,
                     stop: asyncio.Event | None = None) -> None:
    """Loads the models, serves REST and gRPC until `stop` is set (forever if None).

    Args:
        config: the server flags.
        ready: called once both servers listen, with `{"rest_port", "grpc_port",
            "manager", "metrics"}`.
        stop: set it to shut the server down gracefully.
    """
    import grpc
    from aiohttp import web

    from serving.grpc_service import add_services
    from serving.metrics import Metrics
    from serving.model_manager import ModelManager
    from serving.prediction import Predictor
    from serving.rest import make_rest_server

    _set_tensorflow_threads(config)
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    metrics = Metrics()
    manager = ModelManager(_model_configs(config), metrics,
                           tags=[t for t in config.saved_model_tags.split(",") if t],
                           max_num_load_retries=config.max_num_load_retries,
                           enable_model_warmup=config.enable_model_warmup)
    monitoring = (read_monitoring_config(config.monitoring_config_file)
                  if config.monitoring_config_file else MonitoringConfig())
    batching = None
    if config.enable_batching:
        batching = (read_batching_parameters(config.batching_parameters_file)
                    if config.batching_parameters_file else BatchingParameters())
    async with contextlib.AsyncExitStack() as cleanup:  # undone in reverse, even on errors
        load_executor = concurrent.futures.ThreadPoolExecutor(1, "tfddn-load")
        cleanup.callback(load_executor.shutdown, wait=False, cancel_futures=True)
        run_executor = concurrent.futures.ThreadPoolExecutor(config.rest_api_num_threads,
                                                             "tfddn-predict")
        cleanup.callback(run_executor.shutdown, wait=False, cancel_futures=True)
        await loop.run_in_executor(load_executor, manager.poll_once)  # initial versions
        predictor = Predictor(manager, run_executor, metrics, batching)

        async def reload(models: list[ModelConfig]) -> None:  # HandleReloadConfigRequest
            manager.apply_config(models)
            await loop.run_in_executor(load_executor, manager.poll_once)

        grpc_server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", _MAX_GRPC_MESSAGE),
            ("grpc.max_send_message_length", _MAX_GRPC_MESSAGE),
            *grpc_channel_options(config.grpc_channel_arguments)])
        health = await add_services(grpc_server, predictor, metrics, reload)
        grpc_port = grpc_server.add_insecure_port(
            f"{config.grpc_host}:{0 if config.pick_free_ports else config.port}")
        await grpc_server.start()
        cleanup.push_async_callback(grpc_server.stop, 1.0)
        cleanup.push_async_callback(health.enter_graceful_shutdown)  # runs before the stop
        rest_port = 0
        if config.rest_api_port or config.pick_free_ports:
            runner = web.ServerRunner(make_rest_server(predictor, config, metrics, monitoring),
                                      access_log=None, handle_signals=False)
            await runner.setup()
            cleanup.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, config.rest_api_host,
                              0 if config.pick_free_ports else config.rest_api_port).start()
            rest_port = runner.addresses[0][1]
        cleanup.callback(loop.create_task(_poll_forever(manager, config, load_executor)).cancel)
        _log.info("Running gRPC ModelServer at %s:%d", config.grpc_host, grpc_port)
        if rest_port:
            _log.info("Exporting HTTP/REST API at %s:%d", config.rest_api_host, rest_port)
        if ready is not None:
            ready({"rest_port": rest_port, "grpc_port": grpc_port, "manager": manager,
                   "metrics": metrics})
        await stop.wait()


class ServerHandle:
    """The server running in a background thread with its own event loop.

    Use `ServerHandle.start(config)`; then `.rest_url`, `.grpc_target`, `.manager`,
    `.metrics`, and `.stop()` (or a `with` block).
    """

    def __init__(self, config: ServerConfig):
        self.config = config
        self.rest_port = 0
        self.grpc_port = 0
        self.manager: ModelManager | None = None
        self.metrics: Metrics | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="tfddn-server", daemon=True)

    @classmethod
    def start(cls, config: ServerConfig, free_ports: bool = True,
              timeout: float = 120.0) -> ServerHandle:
        """Starts the server and waits until it listens (on free ports unless told not to)."""
        if free_ports:
            config = dataclasses.replace(config, pick_free_ports=True)
        handle = cls(config)
        handle._thread.start()
        if not handle._ready.wait(timeout):
            raise TimeoutError(f"server did not start within {timeout} s")
        if handle._error is not None:
            raise RuntimeError("server failed to start") from handle._error
        return handle

    def _main(self) -> None:
        async def serve():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await run_server(self.config, self._on_ready, self._stop)

        try:
            asyncio.run(serve())
        except BaseException as err:  # noqa: BLE001 - reported to the starting thread
            self._error = err
        finally:
            self._ready.set()

    def _on_ready(self, info: dict) -> None:
        self.rest_port, self.grpc_port = info["rest_port"], info["grpc_port"]
        self.manager, self.metrics = info["manager"], info["metrics"]
        self._ready.set()

    @property
    def _host(self) -> str:
        return "127.0.0.1"

    @property
    def rest_url(self) -> str:
        return f"http://{self._host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self._host}:{self.grpc_port}"

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def build_parser(prog: str = "python -m serving.server") -> argparse.ArgumentParser:
    from tfddn.flags import add_config_file_argument, add_dataclass_arguments

    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Local model server with TensorFlow Serving's REST and gRPC APIs.\n"
                    "Flags use tensorflow_model_server's names; see serving/README.md.",
        epilog="examples:\n"
               "  python -m serving.server --model_name ddn --model_base_path saved_models/ddn\n"
               "  python -m serving.server --model_config_file "
               "serving/configs/models.local.config \\\n"
               "      --enable_batching --batching_parameters_file "
               "serving/configs/batching.config\n"
               "  curl -d '{\"instances\": [...]}' localhost:8501/v1/models/ddn:predict")
    add_dataclass_arguments(parser, ServerConfig, exclude=("pick_free_ports",))
    add_config_file_argument(parser)
    parser.add_argument("--version", action="store_true",
                        help="print the server and TensorFlow versions and exit")
    return parser


def _versions() -> str:
    """What `tensorflow_model_server --version` prints, for the local server."""
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"

    return (f"TensorFlow ModelServer: tfddn-local {version('tfddn')} (TF Serving API "
            f"{version('tensorflow-serving-api')})\nTensorFlow Library: "
            f"{version('tensorflow')}")


def main(argv: Sequence[str] | None = None, prog: str = "python -m serving.server") -> int:
    """`python -m serving.server` / `tfddn serve`: parse flags and serve until Ctrl-C."""
    from tfddn.flags import parse_config

    parser = build_parser(prog)
    if parser.parse_args(argv).version:
        print(_versions())
        return 0
    try:
        config, _ = parse_config(parser, ServerConfig, argv)
    except ValueError as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s] %(message)s")

    async def serve():
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await run_server(config, stop=stop)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
