"""TF Serving's REST API on aiohttp (`model_servers/http_rest_api_handler.cc`).

Routes, matched case-insensitively on the raw path with TF Serving's own patterns:

    POST /v1/models/NAME[/versions/N | /labels/L]:predict      predict (row or columnar)
    POST /v1/models/NAME[/versions/N | /labels/L]:regress      regress (tf.Example JSON)
    GET  /v1/models/NAME[/versions/N | /labels/L]              model status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata     signature defs
    GET  /monitoring/prometheus/metrics                        Prometheus text

Every answer is JSON with `Content-Type: application/json`; failures are
`{"error": "..."}` with the HTTP status TF Serving derives from the error code. A
body over `--max_request_bytes` gets 413, a request past `--rest_api_timeout_in_ms`
gets 504, and nothing a client sends can stop the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
from http import HTTPStatus

from aiohttp import web, web_protocol
from google.protobuf import json_format
from tensorflow_serving.apis import model_pb2

from serving.json_tensor import (
    error_json,
    parse_json_object,
    predict_inputs_from_json,
    predict_outputs_to_json,
    signature_name,
)
from serving.metrics import UNKNOWN_LABEL, Metrics
from serving.prediction import Predictor
from serving.regression import check_regression_signature, examples_from_json, results_to_json
from serving.server_config import MonitoringConfig, ServerConfig
from serving.status import ServingError, invalid_argument

__all__ = ["make_rest_server"]

_log = logging.getLogger(__name__)
_PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                           r":(classify|regress|predict)", re.IGNORECASE)
_STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                          r"(?:/(metadata))?", re.IGNORECASE)
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
# `AddCORSHeaders` (model_servers/http_rest_api_util.cc), with --rest_api_enable_cors_support.
_CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET",
                 "Access-Control-Allow-Headers": "Content-Type"}
_LARGE_BODY_BYTES = 64 * 1024  # JSON larger than this is parsed off the event loop
_LARGE_OUTPUT_VALUES = 4096    # responses with more values are written off the loop


def _version(text: str | None) -> int | None:
    if not text:
        return None
    value = int(text)
    if value >= 2**63:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return value


def _json_response(text: str, status: int = 200) -> web.Response:
    """JSON with TF Serving's bare `Content-Type: application/json` (no charset)."""
    return web.Response(body=text.encode("utf-8"), status=status,
                        headers={"Content-Type": "application/json"})


def _to_json(message, preserve_names: bool) -> dict:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=preserve_names)


class _RestApi:
    def __init__(self, predictor: Predictor, config: ServerConfig, metrics: Metrics,
                 monitoring: MonitoringConfig):
        self.predictor = predictor
        self.manager = predictor.manager
        self.config = config
        self.metrics = metrics
        self.monitoring = monitoring

    async def dispatch(self, request: web.BaseRequest) -> web.Response:
        response = await self._dispatch(request)
        if self.config.rest_api_enable_cors_support:
            response.headers.update(_CORS_HEADERS)
        return response

    async def _dispatch(self, request: web.BaseRequest) -> web.Response:
        path = request.rel_url.raw_path
        if self.monitoring.enable and path == self.monitoring.path and request.method == "GET":
            return web.Response(text=self.metrics.render(), content_type="text/plain",
                                charset="utf-8")
        if not _API_PATH.fullmatch(path):
            return _json_response(error_json(f"Not found: {request.method} {path}"), 404)
        start = time.perf_counter()
        info = {"model": "", "api": "", "signature": ""}
        try:
            text = await self._process(request, path, info)
            status, code = 200, "OK"
        except ServingError as err:
            text, status, code = error_json(err.message), err.http_status, err.code
        except Exception as err:  # noqa: BLE001 - a bug must not take the server down
            _log.exception("REST request %s %s failed", request.method, path)
            text, status, code = error_json(f"Internal error: {err}"), 500, "INTERNAL"
        if info["model"]:
            self.metrics.request_count.inc(info["model"], code)
            if status == 200:  # TF Serving times successful requests only
                self.metrics.request_latency.observe((time.perf_counter() - start) * 1e6,
                                                     info["model"], info["api"], "REST")
            self.metrics.requests.inc(info["model"], info["signature"], "REST", str(status))
        return _json_response(text, status)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        limit = self.config.max_request_bytes
        too_large = ServingError("RESOURCE_EXHAUSTED", f"Request body is larger than the "
                                 f"server's limit of {limit} bytes (--max_request_bytes).", 413)
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None

    async def _process(self, request: web.BaseRequest, path: str, info: dict) -> str:
        method = request.method
        match = None
        if method == "POST":
            match = _PREDICT_PATH.fullmatch(path)
        elif method == "GET":
            match = _STATUS_PATH.fullmatch(path)
        if match is None:
            raise invalid_argument(f"Malformed request: {method} {path}")
        name = urllib.parse.unquote(match.group(1) or "")
        version = _version(match.group(2))
        label = urllib.parse.unquote(match.group(3)) if match.group(3) else None
        info["model"] = name if not name or self.manager.knows(name) else UNKNOWN_LABEL
        if method == "POST":
            info["api"] = verb = match.group(4).lower()
            body = await self._read_body(request)
            if verb == "predict":
                return await self._predict(name, version, label, body, info)
            if verb in ("classify", "regress"):
                big = len(body) > _LARGE_BODY_BYTES
                doc = await self._off_loop(big, parse_json_object, body)
                examples = await self._off_loop(big, examples_from_json, doc, verb)
                if verb == "regress":
                    return await self._regress(name, version, label, doc, examples, info)
                raise ServingError("UNIMPLEMENTED", "classify is not supported by the local "
                                                    "server; use predict or regress")
            raise invalid_argument(f"Malformed request: {method} {path}")
        if not name:
            raise invalid_argument("Missing model name in request.")
        if match.group(4):
            return self._metadata(name, version, label)
        return json.dumps(_to_json(self.manager.status(name, version), False), indent=1)

    async def _off_loop(self, big: bool, function, *args):
        """Runs JSON work for large payloads in the thread pool, so the loop stays free."""
        if not big:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self.predictor.executor,
                                                                function, *args)

    async def _predict(self, name: str, version: int | None, label: str | None, body: bytes,
                       info: dict) -> str:
        big = len(body) > _LARGE_BODY_BYTES
        doc = await self._off_loop(big, parse_json_object, body)
        servable, signature = self._lookup(name, version, label, doc, info)
        inputs, fmt = await self._off_loop(big, predict_inputs_from_json, doc,
                                           signature.input_dtypes)
        outputs = await self._run(servable, signature, inputs, "predict")
        big = sum(a.size for a in outputs.values()) > _LARGE_OUTPUT_VALUES
        return await self._off_loop(big, predict_outputs_to_json, outputs, fmt)

    async def _regress(self, name: str, version: int | None, label: str | None, doc: dict,
                       examples, info: dict) -> str:
        """`:regress` on a regression signature (`serving.regression`)."""
        servable, signature = self._lookup(name, version, label, doc, info)
        check_regression_signature(signature)
        outputs = await self._run(servable, signature, {"inputs": examples}, "regress")
        return results_to_json(outputs["outputs"].reshape(-1))

    def _lookup(self, name: str, version: int | None, label: str | None, doc: dict,
                info: dict):
        """The servable and signature a request names; its metrics label once known."""
        info["signature"] = UNKNOWN_LABEL  # until the lookup succeeds: names a client sends
        servable, signature = self.predictor.lookup(name, version, label, signature_name(doc),
                                                    "REST")
        info["signature"] = signature.name
        return servable, signature

    async def _run(self, servable, signature, inputs, api: str):
        """The model call, within `--rest_api_timeout_in_ms` (504 past it)."""
        timeout = self.config.rest_api_timeout_in_ms / 1000
        try:
            return await asyncio.wait_for(
                self.predictor.run(servable, signature, inputs, api=api),
                timeout if timeout > 0 else None)
        except TimeoutError:
            raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded") from None

    def _metadata(self, name: str, version: int | None, label: str | None) -> str:
        servable = self.manager.resolve(name, version, label)
        spec = model_pb2.ModelSpec(name=servable.name)
        spec.version.value = servable.version
        return json.dumps({"model_spec": _to_json(spec, True),
                           "metadata": {"signature_def": _to_json(servable.signature_def_map,
                                                                  True)}}, indent=1)


class _JsonErrorHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering its own protocol errors (an unknown method,
    a request line or header over 8 KiB, a bad Content-Length, a missing Host) with a JSON
    error body like every other answer, instead of aiohttp's plain text."""

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        _log.debug("HTTP protocol error from %s: %s", request.remote, exc or message)
        if request.writer.output_size > 0:  # a response is under way: close the connection
            raise ConnectionError("response already started; cannot send the error")
        text = getattr(exc, "message", None) or message or HTTPStatus(status).phrase
        response = _json_response(error_json(" ".join(str(text).split())), status)
        response.force_close()
        return response


class _RestServer(web.Server):
    """aiohttp's low-level server: every request to `handler`, with `_JsonErrorHandler`
    connections and our request size limit."""

    def __init__(self, handler, client_max_size: int):
        super().__init__(handler, request_factory=self._request)
        self._client_max_size = client_max_size

    def _request(self, message, payload, protocol, writer, task):
        return web.BaseRequest(message, payload, protocol, writer, task, self._loop,
                               client_max_size=self._client_max_size)

    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


def make_rest_server(predictor: Predictor, config: ServerConfig, metrics: Metrics,
                     monitoring: MonitoringConfig) -> web.Server:
    """The aiohttp server of TF Serving's REST API (run it with `web.ServerRunner`).

    Every request, whatever its method or target (`*` included), reaches one dispatcher,
    so every answer, protocol errors included, is JSON.
    """
    api = _RestApi(predictor, config, metrics, monitoring)
    return _RestServer(api.dispatch, config.max_request_bytes)
