"""Versioned SavedModel export of a trained run, with MC-dropout, UCB and explain signatures.

`export_run` turns a run directory (`tfddn train`) into
`saved_models/<name>/<version>/`, the layout TF Serving (and `tfddn serve`) polls.
The version is written into a hidden temporary directory next to it, reloaded and
checked against the Keras model, and only then renamed into place, so a server never
sees a half-written or wrong version. Every signature takes each feature as it is
logged, one value per row, under the spec's names (`tfddn.data.raw_signature`):

    categorical `(B,)` string/int64   numeric `(B,)` float32
    token list / history `(B,)` string: the items joined by the feature's separator
    ("red shoe", "17|4|9"); split, parsed and padded to `max_length` inside the graph

so a client sends the row exactly as it is logged (`Feature.raw` formats a list).

| signature         | outputs (all float32)                                              |
|-------------------|--------------------------------------------------------------------|
| `serving_default` | `ctr_mean` [B], `ctr_stddev` [B] (data), `mixture_weights` [B, K],  |
|                   | `mixture_means` [B, K], `mixture_stddevs` [B, K]; REG: `ctr_mean`   |
|                   | only; BBDDN also `mixture_concentrations` [B, K] (Beta alpha + beta)|
| `mc_dropout`      | `ctr_mean`, `data_stddev`, `model_stddev`, `total_stddev` [B]       |
| `ucb`             | extra input `c` [B]; `score`, `ctr_mean`, `total_stddev` [B]        |
| `posterior`       | extra inputs `clicks`, `impressions`, `quantile` [B];               |
|                   | `posterior_mean`, `posterior_stddev`, `ucb_score`, `thompson_sample`|
|                   | [B] (CTRs: multiply by the CPC to rank by revenue)                  |
| `explain`         | `saliency_model_stddev`, `saliency_data_stddev`, `delta_mean` [B, F];|
|                   | `ctr_mean`, `data_stddev`, `model_stddev` [B]; `feature_names` [B, F]|
|                   | (string); with attention `attention_<name>` [B, ...]               |
| `regress`         | TF Serving's Regress API (method `tensorflow/serving/regress`):     |
|                   | input `inputs` [B] serialized `tf.Example` (the TFRecord features); |
|                   | `outputs` [B] = `ctr_mean`                                          |
| `spec`            | input `row` [B] int64 (values unused); `spec` [B] string: the       |
|                   | feature spec's JSON in every row (`tfddn.served.served_spec`)       |

The vocabularies are SavedModel assets (`assets/<layer>.vocabulary.txt`, one value per
line; `tfddn.layers.features.vocabulary_files`): the lookup tables are initialised from
them when the SavedModel loads, so `saved_model.pb` does not hold them as constants.

`spec` lets a client of TF Serving learn the feature spec from the server: GetModelMetadata
returns the SignatureDefs only, never assets (`tfddn.served`), so the spec is a signature.

`mc_dropout` is `tfddn.uncertainty.decompose` (without impressions): T stochastic
passes as one batched graph (Naor et al., model uncertainty), the deterministic
`feature_encoder` once, its outputs tiled T times, `density_network` once on the
`[T*B]` batch with dropout on. Per row, `ctr_mean` is the mean over passes of the
mixture mean, `data_stddev = sqrt(mean_t s_d,t^2)`, `model_stddev` the (population)
std over passes of the mixture mean and `total_stddev = sqrt(data^2 + model^2)`
(Zeldes et al. 2018, Sec. 4). REG has no data term (`data_stddev = 0`). Each call
draws new dropout masks.

`explain` is `tfddn.explain.feature_saliency` with OOV marginalisation for the F
categorical, token and history features (spec order, repeated in every row of
`feature_names` so that the row format works; also `explain_features` in the
sidecar): `saliency_model_stddev[b, f]` = MC-dropout stddev of row b with feature f
set to OOV / that of row b as is; `saliency_data_stddev` likewise for the
(deterministic) data stddev; `delta_mean` the change of the deterministic mean; the
unmarginalised `ctr_mean`, `data_stddev` (deterministic) and `model_stddev` (MC).
When `tfddn.models.builder.attention_model(model)` finds attention layers, their
weights are added as `attention_<name>` (`/` in the name becomes `__`).

`posterior` is `tfddn.policy.CandidatePredictions.posterior` in one graph (issue #11): the
prior is the model's predictive distribution over T MC-dropout passes as one Beta mixture
(Gaussian components moment-matched), updated exactly by the row's `clicks` of
`impressions` (counts the pair collected since the model's data ends; 0 and 0: the
prior). `ucb_score` is the Bayes-UCB CTR, the `quantile` level quantile of the
posterior's moment-matched Beta (`tfddn.policy.PosteriorUCB`); `thompson_sample` one draw
from the posterior (`PosteriorThompson`). A frontend that keeps running counters per
(target, context) explores with one call.

`ucb` takes the exploration weight `c` **per row**, shape `[B]`: TF Serving's row
format (`"instances"`) batches every named input along dimension 0, so a scalar
input could not be sent that way. Send the same value in every row for one global
weight. `score = ctr_mean + c * total_stddev` of the same MC-dropout computation.

References:
    Zeldes et al., "Deep density networks and uncertainty in recommender systems",
    2018, arXiv:1711.02487 (Sec. 4, UCB). Naor et al., "Debugging large scale deep
    recommender systems using uncertainty estimations and attention" (MC dropout).

Example:
    >>> version_dir = export_run(ExportConfig("runs/ddn", "saved_models/ddn"))
    >>> loaded = tf.saved_model.load(version_dir)
    >>> loaded.signatures["mc_dropout"](**instances_to_features(spec, rows))
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid

import keras
import numpy as np
import tensorflow as tf

from serving.regression import mark_regression_signature
from serving.warmup import write_warmup_requests
from tfddn import data, distributions
from tfddn.distributions import beta as beta_tf
from tfddn.explain.attention import attention_model, attention_weights, output_name
from tfddn.explain.marginalise import OOV, saliency_features
from tfddn.explain.saliency import feature_saliency
from tfddn.layers.features import vocabulary_files
from tfddn.models.builder import ENCODER_NAME
from tfddn.configs import ExportConfig
from tfddn.models.config import ModelConfig
from tfddn.served import SPEC_INPUT, SPEC_OUTPUT, SPEC_SIGNATURE
from tfddn.spec import FeatureSpec, load_spec
from tfddn.uncertainty import decompose, decompose_params, mc_dropout_params

__all__ = ["METADATA_FILE", "POSTERIOR_INPUTS", "POSTERIOR_KEYS", "UCB_WEIGHT",
           "ExportCheckError", "ExportConfig", "example_instances", "explain_outputs",
           "export_model", "export_run", "input_signature", "instances_to_features",
           "load_export_metadata", "posterior_outputs", "serving_outputs"]

METADATA_FILE = os.path.join("assets.extra", "tfddn_export.json")
"""Sidecar inside a version dir: ModelConfig, spec, T (TF Serving ignores assets.extra)."""

UCB_WEIGHT = "c"
"""Name of the `ucb` signature's exploration-weight input."""

POSTERIOR_INPUTS = ("clicks", "impressions", "quantile")
"""Extra `[B]` float inputs of the `posterior` signature."""

POSTERIOR_KEYS = ("posterior_mean", "posterior_stddev", "ucb_score", "thompson_sample")
"""Outputs of the `posterior` signature."""

MC_DROPOUT_KEYS = ("ctr_mean", "data_stddev", "model_stddev", "total_stddev")
"""Outputs of the `mc_dropout` signature (`tfddn.uncertainty.decompose` without n)."""

EXPLAIN_SALIENCY_KEYS = ("saliency_model_stddev", "saliency_data_stddev", "delta_mean")
"""`[B, F]` outputs of the `explain` signature (OOV marginalisation, F saliency features)."""

_TMP_PREFIX = ".tmp-"  # not a number: TF Serving's version poller skips it


class ExportCheckError(RuntimeError):
    """The reloaded SavedModel does not reproduce the Keras model."""


def input_signature(spec: FeatureSpec) -> dict[str, tf.TensorSpec]:
    """One named `tf.TensorSpec` per feature, as logged: the signatures' inputs."""
    return data.raw_signature(spec)


def serving_outputs(params, model_config: ModelConfig) -> dict[str, tf.Tensor]:
    """`serving_default`'s outputs from the model's output (packed params or REG)."""
    params = tf.cast(params, tf.float32)
    if not model_config.is_density:
        return {"ctr_mean": params[:, 0]}
    k, family = model_config.num_components, model_config.family
    logits, means, scales = distributions.split_params(params, k)
    out = {"ctr_mean": distributions.mixture_mean(params, k, family),
           "ctr_stddev": distributions.mixture_stddev(params, k, family),
           "mixture_weights": tf.nn.softmax(logits, axis=-1),
           "mixture_means": means,
           "mixture_stddevs": distributions.component_stddevs(params, k, family)}
    if family == "beta":  # Beta(m kappa, (1 - m) kappa): kappa completes the component
        out["mixture_concentrations"] = scales
    return out


def explain_outputs(model: keras.Model, features, model_config: ModelConfig,
                    spec: FeatureSpec, mc_samples: int,
                    attention: keras.Model | None = None) -> dict[str, tf.Tensor]:
    """The `explain` signature's outputs (module docstring), from the library functions.

    Args:
        model, features, model_config, spec: as for `tfddn.explain.feature_saliency`.
        mc_samples: T of the model-stddev ratios.
        attention: `tfddn.explain.attention.attention_model(model)`, or None.
    """
    out = feature_saliency(model, features, model_config, spec, (OOV,), None, mc_samples)
    result = {key: out[OOV][key] for key in EXPLAIN_SALIENCY_KEYS}
    result.update({key: out[key] for key in ("ctr_mean", "data_stddev", "model_stddev")})
    names = tf.constant([list(saliency_features(spec))])
    result["feature_names"] = tf.tile(names, [tf.shape(out["ctr_mean"])[0], 1])
    if attention is not None:
        for name, weights in attention_weights(model, features, attention).items():
            result[output_name(name)] = tf.cast(weights, tf.float32)
    return result


def posterior_outputs(model: keras.Model, features, model_config: ModelConfig, clicks,
                      impressions, quantile, mc_samples: int) -> dict[str, tf.Tensor]:
    """The `posterior` signature's outputs (module docstring), float32 `[B]` each."""
    raw = mc_dropout_params(model, features, mc_samples)  # [T, B, P]
    params = tf.cast(raw, tf.float64)
    if model_config.is_density:
        k, family = model_config.num_components, model_config.family
        logits, means, scales = distributions.split_params(params, k)
        if family == "beta":
            alpha, beta = beta_tf.beta_parameters(means, scales)
        else:
            alpha, beta = beta_tf.matched_beta(
                means, tf.square(distributions.component_stddevs(params, k, family)))

        def passes_as_components(v):  # [T, B, K] -> [B, T*K]
            return tf.reshape(tf.transpose(v, [1, 0, 2]), [tf.shape(v)[1], -1])

        weights = passes_as_components(tf.nn.softmax(logits, axis=-1)) / mc_samples
        alpha, beta = passes_as_components(alpha), passes_as_components(beta)
    else:  # REG: one Beta with the MC-dropout mean and stddev
        parts = {k: tf.cast(v, tf.float64) for k, v in decompose_params(raw, model_config).items()}
        stddev = tf.maximum(parts["total_stddev"], distributions.MIN_STDDEV)
        alpha, beta = (v[:, tf.newaxis] for v in beta_tf.matched_beta(
            parts["ctr_mean"], tf.square(stddev)))
        weights = tf.ones_like(alpha)
    counts = [tf.cast(v, tf.float64) for v in (clicks, impressions)]
    weights, alpha, beta = beta_tf.posterior(weights, alpha, beta, *counts)
    mean, stddev = beta_tf.mixture_moments(weights, alpha, beta)
    out = {"posterior_mean": mean, "posterior_stddev": stddev,
           "ucb_score": beta_tf.collapsed_quantile(mean, stddev, tf.cast(quantile, tf.float64)),
           "thompson_sample": beta_tf.sample(weights, alpha, beta)}
    return {key: tf.cast(value, tf.float32) for key, value in out.items()}


def _archive(model, model_config, spec, mc_samples):
    for name in (UCB_WEIGHT, *POSTERIOR_INPUTS):
        if name in spec.feature_names:
            raise ValueError(f"feature {name!r} clashes with an extra input of the ucb / "
                             "posterior signatures; rename the feature in the spec")
    signature = input_signature(spec)
    c_spec = tf.TensorSpec([None], tf.float32, name=UCB_WEIGHT)
    count_specs = [tf.TensorSpec([None], tf.float32, name=n) for n in POSTERIOR_INPUTS]

    def inputs(raw):  # rows as logged -> the model's inputs, inside the graph
        return data.features_from_raw(raw, spec)

    def predict(features):
        return serving_outputs(model(features, training=False), model_config)

    def serve(raw):
        return predict(inputs(raw))

    def mc_dropout(raw):
        parts = decompose(model, inputs(raw), model_config, mc_samples=mc_samples)
        return {key: parts[key] for key in MC_DROPOUT_KEYS}

    def ucb(raw, c):
        mc = decompose(model, inputs(raw), model_config, mc_samples=mc_samples)
        return {"score": mc["ctr_mean"] + c * mc["total_stddev"],
                "ctr_mean": mc["ctr_mean"], "total_stddev": mc["total_stddev"]}

    def posterior(raw, clicks, impressions, quantile):
        return posterior_outputs(model, inputs(raw), model_config, clicks, impressions,
                                 quantile, mc_samples)

    attention = attention_model(model)

    def explain(raw):
        return explain_outputs(model, inputs(raw), model_config, spec, mc_samples, attention)

    def regress(serialized):  # TF Serving's Regress API: serialized tf.Example -> CTR mean
        return {"outputs": predict(data.parse_features(serialized, spec))["ctr_mean"]}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[signature])
    archive.add_endpoint("mc_dropout", mc_dropout, input_signature=[signature])
    archive.add_endpoint("ucb", ucb, input_signature=[signature, c_spec])
    archive.add_endpoint("posterior", posterior, input_signature=[signature, *count_specs])
    archive.add_endpoint("explain", explain, input_signature=[signature])
    archive.add_endpoint("regress", regress,
                         input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    spec_json = json.dumps(spec.to_dict())

    def spec_rows(row):  # the feature spec, for clients of TF Serving (tfddn.served)
        return {SPEC_OUTPUT: tf.fill(tf.shape(row), spec_json)}

    archive.add_endpoint(SPEC_SIGNATURE, spec_rows,
                         input_signature=[tf.TensorSpec([None], tf.int64, name=SPEC_INPUT)])
    return archive


def example_instances(spec: FeatureSpec, vocabularies: dict, n: int, seed: int = 0,
                      numeric_stats: dict | None = None, oov_share: float = 0.1) -> list[dict]:
    """`n` JSON-ready request rows (TF Serving `"instances"`) built from the spec.

    Values come from the vocabularies, a share `oov_share` of them unseen (OOV);
    token lists and histories have random lengths (up to `max_length`), joined by the
    feature's separator as logged;
    numbers are drawn around `numeric_stats[name]["mean"]` (default N(0, 1)).
    """
    rng = np.random.default_rng(seed)
    numeric_stats = numeric_stats or {}

    def value(f, i):
        vocab = list(vocabularies.get(f.name, []))
        if vocab and rng.random() >= oov_share:
            v = vocab[rng.integers(len(vocab))]
            return int(v) if f.dtype == "int64" else str(v)
        if f.dtype == "int64":
            return max([int(v) for v in vocab], default=0) + 1000 + i
        return f"unseen_{f.name}_{i}"

    rows = []
    for i in range(n):
        row = {}
        for f in spec.features:
            if f.is_numeric:
                stats = numeric_stats.get(f.name, {})
                x = stats.get("mean", 0.0) + stats.get("std", 1.0) * rng.standard_normal()
                row[f.name] = round(float(x), 4)
            elif f.is_sequence:  # as logged: the items joined by the separator
                length = int(rng.integers(f.max_length + 1))
                row[f.name] = f.raw([value(f, i) for _ in range(length)])
            else:
                row[f.name] = value(f, i)
        rows.append(row)
    return rows


def instances_to_features(spec: FeatureSpec, instances: list[dict]) -> dict[str, tf.Tensor]:
    """Row-format instances -> the columnar tensors the signatures take (rows as logged;
    a token list given as a list is joined with `Feature.raw`)."""
    sig = input_signature(spec)
    return {f.name: tf.constant([f.raw(row[f.name]) for row in instances],
                                dtype=sig[f.name].dtype, shape=[len(instances)])
            for f in spec.features}


def _model_vocabularies(model, spec):
    encoder = model.get_layer(ENCODER_NAME)
    vocabularies, stats = {}, {}
    for f in spec.features:
        layer = encoder.get_layer(f"encode_{f.name}")
        if f.is_numeric:
            stats[f.name] = {"mean": layer.mean, "std": layer.std}
        else:
            vocabularies[f.name] = layer.vocabulary
    return vocabularies, stats


def _check_features(model, spec, rows, data_dir):
    """Up to `rows` rows of the run's data (eval split first), else synthetic ones."""
    for split in ("eval", "train") if data_dir else ():
        try:
            files = data.split_files(data_dir, split)
        except FileNotFoundError:
            continue
        config = data.InputConfig(batch_size=rows, shuffle=False)
        for features, _ in data.make_dataset(files, spec, config).take(1):
            return features, f"{split} split of {data_dir}"
    vocabularies, stats = _model_vocabularies(model, spec)
    instances = example_instances(spec, vocabularies, rows, numeric_stats=stats)
    return (data.features_from_raw(instances_to_features(spec, instances), spec),
            "synthetic rows (example_instances)")


def _compare(name, actual, expected, source):
    try:
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)
    except AssertionError as err:
        raise ExportCheckError(f"export check failed on {source}: {name} differs from "
                               f"the Keras model / expectation.{err}") from None


def _verify(path, model, model_config, spec, features, source):
    """Reloads the SavedModel and compares it with the Keras model (raises on mismatch):
    the signatures get the rows as logged (`raw_from_features`), the model its inputs."""
    loaded = tf.saved_model.load(path)
    raw = data.raw_from_features(features, spec)
    served = loaded.signatures["serving_default"](**raw)
    expected = serving_outputs(model(features, training=False), model_config)
    if sorted(served) != sorted(expected):
        raise ExportCheckError(f"serving_default outputs {sorted(served)}, "
                               f"expected {sorted(expected)}")
    for key, value in expected.items():
        _compare(f"serving_default/{key}", served[key].numpy(), value.numpy(), source)
    mc = {k: v.numpy() for k, v in loaded.signatures["mc_dropout"](**raw).items()}
    if not all(np.all(np.isfinite(v)) for v in mc.values()):
        raise ExportCheckError(f"mc_dropout returned non-finite values on {source}")
    if model_config.dropout == 0:  # T identical passes: the deterministic prediction
        _compare("mc_dropout/ctr_mean", mc["ctr_mean"], served["ctr_mean"].numpy(), source)
        _compare("mc_dropout/model_stddev", mc["model_stddev"], 0.0, source)
    c = tf.ones_like(served["ctr_mean"])
    ucb = loaded.signatures["ucb"](**raw, c=c)
    _compare("ucb/score", ucb["score"].numpy(),
             ucb["ctr_mean"].numpy() + ucb["total_stddev"].numpy(), source)
    zeros = tf.zeros_like(served["ctr_mean"])
    post = {k: v.numpy() for k, v in loaded.signatures["posterior"](
        **raw, clicks=zeros, impressions=zeros, quantile=zeros + 0.5).items()}
    if not all(np.all(np.isfinite(v)) for v in post.values()):
        raise ExportCheckError(f"posterior returned non-finite values on {source}")
    explained = {k: v.numpy() for k, v in loaded.signatures["explain"](**raw).items()}
    library = feature_saliency(model, features, model_config, spec, mc_samples=0)
    for key in ("saliency_data_stddev", "delta_mean"):
        _compare(f"explain/{key}", explained[key], library[OOV][key].numpy(), source)
    if not all(np.all(np.isfinite(v)) for k, v in explained.items() if k != "feature_names"):
        raise ExportCheckError(f"explain returned non-finite values on {source}")
    answer = loaded.signatures[SPEC_SIGNATURE](**{SPEC_INPUT: tf.zeros([2], tf.int64)})
    if FeatureSpec.from_dict(json.loads(answer[SPEC_OUTPUT].numpy()[1])) != spec:
        raise ExportCheckError(f"the {SPEC_SIGNATURE} signature does not return the spec")
    return {"rows": int(served["ctr_mean"].shape[0]), "source": source}


def _next_version(export_base):
    versions = [int(d) for d in os.listdir(export_base)
                if d.isdigit() and os.path.isdir(os.path.join(export_base, d))]
    return max(versions, default=0) + 1


def _fsync_tree(root):
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())


def export_model(model: keras.Model, model_config: ModelConfig, spec: FeatureSpec,
                 export_base: str, version: int | None = None, mc_samples: int = 32,
                 check_rows: int = 256, data_dir: str | None = None,
                 extra_metadata: dict | None = None) -> str:
    """Exports `model` as `export_base/<version>/` atomically; returns that directory.

    Args:
        model, model_config, spec: the Keras model, its `ModelConfig` and feature spec.
        export_base, version, mc_samples, check_rows: see `ExportConfig`.
        data_dir: a preprocessed dir whose eval (else train) split supplies the check
            rows; without one, `example_instances` rows are used.
        extra_metadata: merged into the sidecar `METADATA_FILE`.

    Raises:
        FileExistsError: `version` already exists (it is left untouched).
        ExportCheckError: the reloaded SavedModel differs from the Keras model
            (nothing is left behind).
    """
    if mc_samples < 2 or check_rows < 1:
        raise ValueError("mc_samples must be >= 2 and check_rows >= 1. Received: "
                         f"mc_samples={mc_samples}, check_rows={check_rows}")
    os.makedirs(export_base, exist_ok=True)
    version = _next_version(export_base) if version is None else int(version)
    final = os.path.join(export_base, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} already exists; pick another --version or omit it")
    tmp = os.path.join(export_base, f"{_TMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    try:
        with tempfile.TemporaryDirectory() as scratch, vocabulary_files(model, scratch):
            # the lookup tables read text files: tf.saved_model copies them to assets/
            _archive(model, model_config, spec, mc_samples).write_out(tmp, verbose=False)
        mark_regression_signature(tmp)
        features, source = _check_features(model, spec, check_rows, data_dir)
        check = _verify(tmp, model, model_config, spec, features, source)
        metadata = {
            "model_name": os.path.basename(os.path.normpath(export_base)),
            "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model_config": model_config.to_dict(), "spec": spec.to_dict(),
            "mc_samples": mc_samples, "ucb_weight_input": UCB_WEIGHT,
            "signatures": ["serving_default", "mc_dropout", "ucb", "posterior", "explain",
                           "regress", SPEC_SIGNATURE],
            "posterior_inputs": list(POSTERIOR_INPUTS),
            "explain_features": list(saliency_features(spec)), "check": check,
            "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
            **(extra_metadata or {}),
        }
        write_warmup_requests(tmp, data.raw_from_features(features, spec))  # serving.warmup
        with open(os.path.join(tmp, METADATA_FILE), "w") as fh:
            json.dump(metadata, fh, indent=2)
        _fsync_tree(tmp)
        if os.path.exists(final):  # another exporter won the race
            raise FileExistsError(f"{final} appeared during the export")
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def export_run(config: ExportConfig) -> str:
    """`tfddn export`: the run's model -> `export_base/<version>/`; returns that path."""
    from tfddn.training import load_run

    model, model_config, summary = load_run(config.run_dir)
    data_dir = summary.get("train", {}).get("data_dir")
    spec_path = config.spec_path or (os.path.join(data_dir, "spec.json") if data_dir else None)
    if not spec_path or not os.path.exists(spec_path):
        raise FileNotFoundError(f"no feature spec for run {config.run_dir} (looked for "
                                f"{spec_path}); pass ExportConfig(spec_path=...)")
    spec = load_spec(spec_path)
    if data_dir and not os.path.isdir(data_dir):
        data_dir = None
    return export_model(model, model_config, spec, config.export_base, config.version,
                        config.mc_samples, config.check_rows, data_dir,
                        {"run_dir": os.path.abspath(config.run_dir)})


def load_export_metadata(version_dir: str) -> dict:
    """The sidecar of an exported version: `model_config`, `spec`, `mc_samples`, ...

    `tfddn.spec.FeatureSpec.from_dict(meta["spec"])` and
    `ModelConfig(**meta["model_config"])` rebuild the objects.
    """
    path = os.path.join(version_dir, METADATA_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {version_dir} is not a tfddn export")
    with open(path) as fh:
        return json.load(fh)
