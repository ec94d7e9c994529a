"""Canonical error codes, mapped to HTTP and gRPC exactly as TF Serving maps them.

TF Serving builds every error as a `tensorflow::Status` with a canonical code; the
REST front end turns the code into an HTTP status (`ToHTTPStatusCode` in
`model_servers/http_server.cc`) and the gRPC front end passes it through as the
gRPC status code. `ServingError` carries the same (code, message) pair here.
"""

from __future__ import annotations

import grpc

__all__ = ["HTTP_STATUS", "ServingError", "invalid_argument", "not_found"]

# tensorflow_serving/model_servers/http_server.cc: ToHTTPStatusCode.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """An error with a canonical code (`"NOT_FOUND"`, `"INVALID_ARGUMENT"`, ...).

    Args:
        code: canonical code name, a key of `HTTP_STATUS`.
        message: the message clients see (REST `{"error": message}`, gRPC details).
        http_status: overrides the HTTP status derived from `code` (e.g. 413 for a
            body over `--max_request_bytes`, which TF Serving has no code for).
    """

    def __init__(self, code: str, message: str, http_status: int | None = None):
        if code not in HTTP_STATUS:
            raise ValueError(f"Unknown canonical code. Received: code={code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS[code]

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.code]

    def __str__(self) -> str:  # `Status::ToString()` form, used inside nested messages
        return f"{self.code}: {self.message}"


def invalid_argument(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)
