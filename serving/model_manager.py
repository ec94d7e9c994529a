"""Which model versions are loaded, and hot swaps between them (TF Serving's manager).

Each poll (`poll_once`, run in a worker thread every `--file_system_poll_wait_seconds`)
lists the numeric version directories under every model's base path, skipping
half-written ones (non-numeric names such as `.tmp-3`, or no `saved_model.pb` yet),
asks the version policy which versions it wants, loads the missing ones *fully*,
and only then publishes the new version map in one assignment. Requests look a
version up once and keep that object, so a request in flight finishes on the
version it started with even after that version is unloaded. Like TF Serving's
availability-preserving policy, the old versions stay until a wanted version is
available, so there is never a moment without a model.

Statuses follow TF Serving's `ServableStateMonitor`: every version ever seen stays
listed (`LOADING`, `AVAILABLE`, or `END` after unloading or failing), newest first.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence

from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import get_model_status_pb2

from serving.metrics import Metrics
from serving.servable import ServableVersion, is_complete_version_dir
from serving.warmup import replay_warmup_requests
from serving.server_config import ModelConfig
from serving.status import invalid_argument, not_found

__all__ = ["ModelManager", "scan_versions"]

_log = logging.getLogger(__name__)
_State = get_model_status_pb2.ModelVersionStatus.State


def scan_versions(base_path: str) -> dict[int, str]:
    """Complete version directories under `base_path`: {version: path}."""
    try:
        names = os.listdir(base_path)
    except OSError:
        return {}
    found = {}
    for name in names:
        path = os.path.join(base_path, name)
        if name.isdigit() and os.path.isdir(path) and is_complete_version_dir(path):
            found[int(name)] = path
    return found


class ModelManager:
    """Loads, serves and unloads the versions of every configured model.

    Args:
        models: the models to serve.
        metrics: where load attempts are counted.
        tags: MetaGraphDef tags to load.
        max_num_load_retries: a version that failed this many more times is given up.
    """

    def __init__(self, models: Iterable[ModelConfig], metrics: Metrics | None = None,
                 tags: Sequence[str] = ("serve",), max_num_load_retries: int = 5,
                 enable_model_warmup: bool = True):
        self.metrics = metrics or Metrics()
        self.enable_model_warmup = enable_model_warmup
        self.tags = tuple(tags)
        self.max_num_load_retries = max_num_load_retries
        self._configs = {m.name: m for m in models}
        self._serving: dict[str, dict[int, ServableVersion]] = {}
        self._states: dict[str, dict[int, tuple[int, str, str]]] = {}
        self._failures: dict[tuple[str, int], int] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()       # guards publishing maps and states
        self._poll_lock = threading.Lock()  # one poll at a time
        self._polled = threading.Condition()  # notified after every poll
        self._polls = 0

    def apply_config(self, models: Iterable[ModelConfig]) -> None:
        """Replaces the model list (a config reload); the next poll acts on it."""
        self._configs = {m.name: m for m in models}

    def _set_state(self, name: str, version: int, state: int, code: str = "OK",
                   message: str = "") -> None:
        with self._lock:
            self._states.setdefault(name, {})[version] = (state, code, message)

    def _load(self, config: ModelConfig, version: int, path: str) -> ServableVersion | None:
        key = (config.name, version)
        self._set_state(config.name, version, _State.LOADING)
        try:
            servable = ServableVersion.load(config.name, version, path, self.tags)
            if self.enable_model_warmup and replay_warmup_requests(servable):
                _log.info("Finished reading warmup data for model at %s", path)
        except Exception as err:  # noqa: BLE001 - any load failure keeps the old versions
            self._failures[key] = self._failures.get(key, 0) + 1
            self.metrics.load_attempt_count.inc(path, "fail")
            _log.warning("Loading servable: {name: %s version: %d} failed: %s",
                         config.name, version, err)
            if self._failures[key] > self.max_num_load_retries:
                self._set_state(config.name, version, _State.END, "UNKNOWN", str(err))
            return None
        self.metrics.load_attempt_count.inc(path, "success")
        self.metrics.load_latency.inc(path, amount=servable.load_seconds * 1e6)
        _log.info("Successfully loaded servable version {name: %s version: %d}",
                  config.name, version)
        return servable

    def _poll_model(self, config: ModelConfig) -> None:
        on_disk = scan_versions(config.base_path)
        aspired = config.aspired(set(on_disk))
        if not aspired and config.name not in self._warned:
            self._warned.add(config.name)
            _log.warning("No versions of servable %s found under base path %s (policy %s)",
                         config.name, config.base_path, config.policy)
        current = self._serving.get(config.name, {})
        loaded = {}
        for version in sorted(aspired - set(current), reverse=True):
            if self._failures.get((config.name, version), 0) > self.max_num_load_retries:
                continue
            servable = self._load(config, version, on_disk[version])
            if servable is not None:
                loaded[version] = servable
        published = {v: s for v, s in current.items() if v in aspired}
        published.update(loaded)
        if not published and not current and config.policy == "latest":
            # Cold start with a broken newest version: serve the newest one that loads
            # (its failure stays in the status) rather than nothing.
            for version in sorted(set(on_disk) - aspired, reverse=True):
                servable = self._load(config, version, on_disk[version])
                if servable is not None:
                    loaded[version] = published[version] = servable
                    break
        if not published and current:  # availability preserving: keep serving the old ones
            published = dict(current)
        if published.keys() == current.keys() and not loaded:
            return
        unloaded = set(current) - set(published)
        with self._lock:
            self._serving[config.name] = published  # the atomic swap
            states = self._states.setdefault(config.name, {})
            states.update({v: (_State.AVAILABLE, "OK", "") for v in loaded})
            states.update({v: (_State.END, "OK", "") for v in unloaded})
        for version in sorted(unloaded):  # requests still holding them finish undisturbed
            _log.info("Done unloading servable version {name: %s version: %d}",
                      config.name, version)

    def poll_once(self) -> None:
        """One pass over every model: load wanted versions, swap, unload the rest."""
        with self._poll_lock:
            configs = dict(self._configs)
            for config in configs.values():
                self._poll_model(config)
            for name in set(self._serving) - set(configs):  # removed by a config reload
                with self._lock:
                    dropped = self._serving.pop(name)
                for version in dropped:
                    self._set_state(name, version, _State.END)
        with self._polled:
            self._polls += 1
            self._polled.notify_all()

    def wait_for_polls(self, count: int = 1, timeout: float | None = None) -> bool:
        """Waits until `count` more polls have completed; False if `timeout` s passed first.

        After `wait_for_polls(2)` at least one whole poll started after the call, so it
        saw the version directories as they were then: tests wait on this, not the clock.
        """
        with self._polled:
            target = self._polls + count
            return self._polled.wait_for(lambda: self._polls >= target, timeout)

    def knows(self, name: str) -> bool:
        """Whether `name` is a configured model (loaded or not)."""
        return name in self._configs

    def resolve(self, name: str, version: int | None = None,
                label: str | None = None) -> ServableVersion:
        """The servable a ModelSpec names (`ServerCore::GetServableHandle`).

        Raises:
            ServingError: INVALID_ARGUMENT for an unknown label, NOT_FOUND when the
                model or version is not loaded (TF Serving's messages).
        """
        if label is not None:
            config = self._configs.get(name)
            if config is None or label not in config.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = config.labels[label]
        versions = self._serving.get(name) or {}
        if version is None:
            if not versions:
                raise not_found(f"Servable not found for request: Latest({name})")
            return versions[max(versions)]
        if version not in versions:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return versions[version]

    def status(self, name: str, version: int | None = None
               ) -> get_model_status_pb2.GetModelStatusResponse:
        """`GetModelStatusImpl::GetModelStatusWithModelSpec` (labels are not consulted)."""
        with self._lock:
            states = dict(self._states.get(name, {}))
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            states = {version: states[version]}
        elif not states:
            raise not_found(f"Could not find any versions of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for number in sorted(states, reverse=True):
            state, code, message = states[number]
            entry = response.model_version_status.add(version=number, state=state)
            entry.status.error_code = error_codes_pb2.Code.Value(code)
            entry.status.error_message = message
        return response
