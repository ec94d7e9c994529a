"""Fixtures for the serving tests: tiny exported CTR models and running servers.

`model_versions` exports versions 1-3 of one small Keras model with
`keras.export.ExportArchive` (the way `serving/export.py` exports DDN models):

- `serving_default`: inputs `advertiser` (string) and `bid` (float); outputs `ctr_mean`,
  `ctr_stddev`, `advertiser_echo` (string) and `advertiser_bytes` (binary string).
- `mc_dropout`: the same inputs through Dropout with training=True (outputs vary).
- `bid_score`: one input `bid`, one output `score = 2 * bid + version`, so a response
  tells which version answered.

Helpers reach the tests as fixtures: `http` (one REST call -> (status, JSON)),
`install_version` (atomic copy of a version into a base path), `wait_until` (polls a
condition) and `wait_for_polls` (returns after a server's next version polls); both fail
only after a generous timeout, so a loaded machine makes them slow, not red.
Servers listen on free ports (`ServerHandle.start`), so test processes can run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request

import pytest

MODEL = "ddn"
# How long a test waits for a server-side change before it fails. Only a failing test
# waits this long; no test asserts how quickly anything happened.
WAIT_SECONDS = 120.0


@pytest.fixture(scope="session")
def model_versions(tmp_path_factory) -> dict[int, str]:
    """{version: SavedModel directory} for versions 1, 2 and 3."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    advertiser = keras.Input(shape=(), dtype="string", name="advertiser")
    bid = keras.Input(shape=(), dtype="float32", name="bid")
    embedded = keras.layers.Embedding(8, 4)(keras.layers.Hashing(num_bins=8)(advertiser))
    hidden = keras.layers.Dense(8, activation="relu")(
        keras.layers.Concatenate()([embedded, keras.layers.Reshape((1,))(bid)]))
    hidden = keras.layers.Dropout(0.5)(hidden)
    logits = keras.layers.Dense(2)(hidden)
    model = keras.Model({"advertiser": advertiser, "bid": bid}, logits)
    offset = tf.Variable(1.0, name="version_offset")

    def serving_default(inputs):
        out = model(inputs, training=False)
        return {"ctr_mean": tf.sigmoid(out[:, 0]), "ctr_stddev": tf.nn.softplus(out[:, 1]),
                "advertiser_echo": inputs["advertiser"], "advertiser_bytes": inputs["advertiser"]}

    def mc_dropout(inputs):
        passes = tf.stack([tf.sigmoid(model(inputs, training=True)[:, 0]) for _ in range(4)])
        return {"ctr_mean": tf.reduce_mean(passes, 0),
                "model_stddev": tf.math.reduce_std(passes, 0)}

    def bid_score(bid):
        return {"score": 2.0 * bid + offset}

    features = {"advertiser": tf.TensorSpec([None], tf.string, name="advertiser"),
                "bid": tf.TensorSpec([None], tf.float32, name="bid")}
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_variable_collection("offset", [offset])
    archive.add_endpoint("serving_default", serving_default, input_signature=[features])
    archive.add_endpoint("mc_dropout", mc_dropout, input_signature=[features])
    archive.add_endpoint("bid_score", bid_score,
                         input_signature=[tf.TensorSpec([None], tf.float32, name="bid")])
    root = tmp_path_factory.mktemp("exported")
    paths = {}
    for version in (1, 2, 3):
        offset.assign(float(version))
        paths[version] = str(root / str(version))
        archive.write_out(paths[version], verbose=False)
    return paths


def _install_version(base_path: str, source: str, version: int) -> str:
    """Copies a SavedModel in as `base_path/version` atomically (copy, then rename)."""
    os.makedirs(base_path, exist_ok=True)
    staging = os.path.join(base_path, f".tmp-{version}")
    shutil.copytree(source, staging)
    final = os.path.join(base_path, str(version))
    os.rename(staging, final)
    return final


def write_models_config(path: str, base_path: str) -> str:
    with open(path, "w") as f:
        f.write(f"""model_config_list {{
  config {{
    name: "{MODEL}"
    base_path: "{base_path}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}
""")
    return path


def _http(method: str, url: str, body=None, timeout: float = 30.0) -> tuple[int, object]:
    """(HTTP status, parsed JSON body) of one request; `body` is JSON-encoded unless bytes."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _wait_until(predicate, what: str, timeout: float = WAIT_SECONDS) -> None:
    """Polls `predicate` until it is true; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.05)


def _wait_for_polls(server, count: int = 2) -> None:
    """Returns once `count` more version polls of `server` completed: after 2, one whole
    poll started after the call and saw the version directories as they are now."""
    if not server.manager.wait_for_polls(count, WAIT_SECONDS):
        pytest.fail(f"waited {WAIT_SECONDS:.0f} s for {count} version polls")


@pytest.fixture(scope="session")
def http():
    return _http


@pytest.fixture(scope="session")
def wait_until():
    return _wait_until


@pytest.fixture(scope="session")
def wait_for_polls():
    return _wait_for_polls


@pytest.fixture(scope="session")
def install_version():
    return _install_version


@pytest.fixture(scope="session")
def server(model_versions, tmp_path_factory):
    """One server for the session: model `ddn`, versions 1 and 2, labels stable/canary."""
    from serving.server import ServerHandle
    from serving.server_config import ServerConfig

    root = tmp_path_factory.mktemp("served")
    base_path = str(root / MODEL)
    for version in (1, 2):
        _install_version(base_path, model_versions[version], version)
    config = ServerConfig(model_config_file=write_models_config(str(root / "models.config"),
                                                                base_path),
                          max_request_bytes=1 << 20)
    handle = ServerHandle.start(config)
    yield handle
    handle.stop()
