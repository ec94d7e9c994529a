"""Prometheus metrics under TF Serving's names, rendered in the text exposition format.

The families a TF Serving dashboard reads are kept with their names and labels
(latencies in microseconds, as TF Serving reports them):

- `:tensorflow:serving:request_count{model_name, status}`
- `:tensorflow:serving:request_latency{model_name, API, entrypoint}` (histogram)
- `:tensorflow:serving:runtime_latency{model_name, API, runtime}` (histogram)
- `:tensorflow:cc:saved_model:load_attempt_count{model_path, status}`
- `:tensorflow:cc:saved_model:load_latency{model_path}`
- `:tensorflow:serving:batching_session:{input,processed}_batch_size` and
  `queuing_latency` (histograms, with `--enable_batching`)

plus one local family with the detail TF Serving lacks:
`tfddn_serving_requests_total{model_name, signature_name, entrypoint, code}` (`code`
is the HTTP status for REST and the gRPC code name for gRPC).

As in TF Serving (`model_servers/http_server.cc`, `prediction_service_impl.cc`), only
successful requests add to `request_latency`, and the latency buckets are its
`Buckets::Exponential(10, 1.8, 33)` (`servables/tensorflow/util.cc`). Unlike it, the
label values a client controls are bounded: a model or signature name the server does
not serve is counted under `UNKNOWN_LABEL`, so a flood of random names cannot grow the
page; any label text renders (escaped, undecodable characters as `\\x..`).
"""

from __future__ import annotations

import bisect
import threading

__all__ = ["UNKNOWN_LABEL", "Counter", "Histogram", "Metrics"]

UNKNOWN_LABEL = "_unknown"

_LATENCY_BUCKETS_US = tuple(10.0 * 1.8**i for i in range(33))  # TF's Exponential(10, 1.8, 33)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _escape(value: str) -> str:
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Counter:
    """A monotonically increasing count per label tuple."""

    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...]):
        self.name, self.help, self.labelnames = name, help_text, labelnames
        self._values: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels, amount: float = 1.0) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}. Received: {labels}")
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items())
        lines += [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items]
        return lines


class Histogram:
    """Cumulative buckets, sum and count per label tuple."""

    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...],
                 buckets: tuple[float, ...] = _LATENCY_BUCKETS_US):
        self.name, self.help, self.labelnames, self.buckets = name, help_text, labelnames, buckets
        self._values: dict[tuple, list] = {}  # labels -> [bucket counts..., sum, count]
        self._lock = threading.Lock()

    def observe(self, value: float, *labels) -> None:
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            state = self._values.setdefault(labels, [0] * (len(self.buckets) + 1) + [0.0, 0])
            state[index] += 1
            state[-2] += value
            state[-1] += 1

    def count(self, *labels) -> int:
        return self._values.get(labels, [0])[-1]

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._values.items())
        for labels, state in items:
            running = 0
            for bound, hits in zip(list(self.buckets) + ["+Inf"], state[:-2]):
                running += hits
                le = 'le="%s"' % (bound if bound == "+Inf" else format(bound, ".6g"))
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, labels, le)} {running}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, labels)} {_number(state[-2])}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, labels)} {state[-1]}")
        return lines


class Metrics:
    """Every metric the server records, and their Prometheus page."""

    def __init__(self):
        self.request_count = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.",
            ("model_name", "status"))
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"))
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"))
        self.load_attempt_count = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ("model_path", "status"))
        self.load_latency = Counter(
            ":tensorflow:cc:saved_model:load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ("model_path",))
        self.requests = Counter(
            "tfddn_serving_requests_total",
            "Requests by model, signature, entrypoint and response code (HTTP status for "
            "REST, gRPC code for gRPC).", ("model_name", "signature_name", "entrypoint", "code"))
        self.input_batch_size = Histogram(
            ":tensorflow:serving:batching_session:input_batch_size",
            "Tracks the batch size distribution on the inputs by model_name (if available).",
            ("model_name",), _SIZE_BUCKETS)
        self.processed_batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Tracks the batch size distribution on processing by model_name (if available).",
            ("model_name",), _SIZE_BUCKETS)
        self.queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Tracks the latency (in microseconds) a request waits in the queue.",
            ("model_name",))

    def render(self) -> str:
        families = [self.request_count, self.request_latency, self.runtime_latency,
                    self.load_attempt_count, self.load_latency, self.requests,
                    self.input_batch_size, self.processed_batch_size, self.queuing_latency]
        return "\n".join(line for family in families for line in family.render()) + "\n"
