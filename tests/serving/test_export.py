"""SavedModel export: round trips, atomic versions, MC dropout, UCB, signature names."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from serving import export
from serving.export import (
    ExportCheckError,
    ExportConfig,
    example_instances,
    export_model,
    export_run,
    instances_to_features,
    load_export_metadata,
)
from tfddn import data
from tfddn.explain import OOV, feature_saliency
from tfddn.explain.attention import attention_weights, output_name
from tfddn.models.builder import DENSITY_NAME, ENCODER_NAME, build_model
from tfddn.distributions import Mixture
from tfddn.models.config import ModelConfig
from tfddn.spec import FeatureSpec

from specs import MINI_STATS, mini_spec

# "site-id" is not a Python identifier; the label columns are not the TFRecord keys.
SPEC = mini_spec(history={"max_length": 4}, rename={"site": "site-id"}, clicks="clicks_col")
VOCABS = {"ad": ["a1", "a2", "a3"], "words": ["red", "car", "cheap"], "site-id": [7, 8, 9],
          "history": ["h1", "h2", "h3"]}
STATS = MINI_STATS
T = 256  # MC samples of the dropout exports: enough for the statistical checks


def _model(kind="ddn", dropout=0.3, oov_rate=0.0, seed=0, **attention):
    """A tiny model with random weights, so that rows (and passes) differ clearly."""
    config = ModelConfig(kind=kind, embedding_dim=4, tower_units=(16,), fusion_units=(16,),
                         dropout=dropout, num_components=2, oov_rate=oov_rate, **attention)
    model = build_model(SPEC, VOCABS, STATS, config, seed=seed)
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(0.0, 0.5, v.shape).astype("float32"))
    return model, config


def _features(n=16, seed=1):
    """The model's inputs of `n` synthetic rows (the signatures get them as logged)."""
    return data.features_from_raw(instances_to_features(SPEC, example_instances(
        SPEC, VOCABS, n, seed=seed, numeric_stats=STATS)), SPEC)


def _export(tmp_path_factory, name, kind="ddn", dropout=0.3, oov_rate=0.0, mc_samples=T,
            **attention):
    model, config = _model(kind, dropout, oov_rate, **attention)
    base = str(tmp_path_factory.mktemp(name) / "ddn")
    path = export_model(model, config, SPEC, base, mc_samples=mc_samples, check_rows=32)
    return {"model": model, "config": config, "path": path,
            "loaded": tf.saved_model.load(path)}


@pytest.fixture(scope="module")
def ddn(tmp_path_factory):
    return _export(tmp_path_factory, "ddn")


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    return _export(tmp_path_factory, "reg", kind="reg", mc_samples=8)


@pytest.fixture(scope="module")
def bbddn(tmp_path_factory):
    return _export(tmp_path_factory, "bbddn", kind="bbddn", mc_samples=16)


@pytest.fixture(scope="module")
def ddn_no_dropout(tmp_path_factory):
    # oov_rate > 0: training=True in mc_dropout must not reach the encoder's OOV replacement.
    return _export(tmp_path_factory, "ddn0", dropout=0.0, oov_rate=0.5, mc_samples=8)


def _call(loaded, signature, features, **extra):
    """A signature on model inputs, sent as the rows are logged (joined token lists)."""
    out = loaded.signatures[signature](**data.raw_from_features(features, SPEC), **extra)
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("name", ["ddn", "reg"])
def test_serving_default_round_trip(name, request):
    export_ = request.getfixturevalue(name)
    features = _features(64)
    served = _call(export_["loaded"], "serving_default", features)
    params = export_["model"](features, training=False).numpy()
    if name == "reg":
        assert sorted(served) == ["ctr_mean"]
        np.testing.assert_allclose(served["ctr_mean"], params[:, 0], rtol=1e-5)
        return
    assert sorted(served) == ["ctr_mean", "ctr_stddev", "mixture_means", "mixture_stddevs",
                              "mixture_weights"]
    logits, means, stddevs = params[:, :2], params[:, 2:4], params[:, 4:]
    weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    mean = (weights * means).sum(axis=1)
    stddev = np.sqrt((weights * (stddevs**2 + means**2)).sum(axis=1) - mean**2)
    np.testing.assert_allclose(served["mixture_weights"], weights, rtol=1e-5)
    np.testing.assert_allclose(served["mixture_means"], means, rtol=1e-5)
    np.testing.assert_allclose(served["mixture_stddevs"], stddevs, rtol=1e-5)
    np.testing.assert_allclose(served["ctr_mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(served["ctr_stddev"], stddev, rtol=1e-4)
    assert np.ptp(mean) > 0.05  # the rows really differ


def test_vocabularies_are_savedmodel_assets(ddn):
    """Each vocabulary is a file in the SavedModel's assets/ that the served lookup tables
    read at load time, not constants in saved_model.pb."""
    assets = os.path.join(ddn["path"], "assets")
    files = {}
    for name in os.listdir(assets):
        with open(os.path.join(assets, name), encoding="utf-8") as fh:
            files[name] = fh.read().split("\n")[:-1]
    assert files == {f"encode_{name}.vocabulary.txt": [str(v) for v in values]
                     for name, values in VOCABS.items()}
    with open(os.path.join(ddn["path"], "saved_model.pb"), "rb") as fh:
        assert b"cheap" not in fh.read()
    out = _call(ddn["loaded"], "serving_default", _features())
    expected = export.serving_outputs(ddn["model"](_features(), training=False), ddn["config"])
    np.testing.assert_allclose(out["ctr_mean"], expected["ctr_mean"].numpy(), rtol=1e-6)


def test_bbddn_serving_default_and_mc_dropout(bbddn):
    features = _features(64)
    served = _call(bbddn["loaded"], "serving_default", features)
    params = bbddn["model"](features, training=False).numpy()
    mix = Mixture.from_params(params, 2, "beta")
    assert sorted(served) == ["ctr_mean", "ctr_stddev", "mixture_concentrations",
                              "mixture_means", "mixture_stddevs", "mixture_weights"]
    np.testing.assert_allclose(served["mixture_concentrations"], mix.scales, rtol=1e-5)
    np.testing.assert_allclose(served["mixture_stddevs"], mix.component_stddevs(), rtol=1e-5)
    np.testing.assert_allclose(served["ctr_mean"], mix.mean(), rtol=1e-5)
    np.testing.assert_allclose(served["ctr_stddev"], mix.stddev(), rtol=1e-4)
    mc = _call(bbddn["loaded"], "mc_dropout", features)
    assert np.all(mc["model_stddev"] > 0) and np.all(np.isfinite(mc["total_stddev"]))
    # The MC-dropout data stddev is the Beta mixture's, averaged over passes: same scale.
    np.testing.assert_allclose(np.median(mc["data_stddev"] / served["ctr_stddev"]), 1.0,
                               atol=0.5)


def test_signature_inputs_are_the_spec_names(ddn):
    """TF Serving's input names are the TensorSpec names: exactly the spec's names.

    (tf.function sanitises a Python keyword like `site-id` to `site_id`, but the
    SignatureDef, TF Serving and calls with `**{"site-id": ...}` use the spec name.)
    """
    for signature, extra in (("serving_default", ()), ("mc_dropout", ()), ("ucb", ("c",)),
                             ("explain", ())):
        args, kwargs = ddn["loaded"].signatures[signature].structured_input_signature
        assert args == ()
        specs = {spec.name: spec for spec in kwargs.values()}
        assert sorted(specs) == sorted([*SPEC.feature_names, *extra])
        # Every feature as logged: one value per row, token lists as one string.
        assert specs["words"].shape.as_list() == [None] and specs["words"].dtype == tf.string
        assert specs["history"].shape.as_list() == [None]
        assert specs["ad"].shape.as_list() == [None] and specs["ad"].dtype == tf.string
        assert specs["site-id"].dtype == tf.int64 and specs["age"].dtype == tf.float32
    c = {s.name: s for s in ddn["loaded"].signatures["ucb"].structured_input_signature[1].values()}
    assert c["c"].shape.as_list() == [None] and c["c"].dtype == tf.float32  # per row
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(ddn["path"], "saved_model.pb"), "rb") as fh:
        proto.ParseFromString(fh.read())
    signature_defs = proto.meta_graphs[0].signature_def
    assert sorted(signature_defs["ucb"].inputs) == sorted([*SPEC.feature_names, "c"])
    assert sorted(signature_defs["mc_dropout"].outputs) == ["ctr_mean", "data_stddev",
                                                            "model_stddev", "total_stddev"]


def test_mc_dropout_varies_between_calls(ddn):
    features = _features(8)
    first = _call(ddn["loaded"], "mc_dropout", features)
    second = _call(ddn["loaded"], "mc_dropout", features)
    assert not np.allclose(first["ctr_mean"], second["ctr_mean"], rtol=1e-7, atol=0)
    assert np.all(first["model_stddev"] > 1e-4)
    assert np.all(first["data_stddev"] > 0)
    np.testing.assert_allclose(first["total_stddev"]**2,
                               first["data_stddev"]**2 + first["model_stddev"]**2, rtol=1e-5)


def test_mc_dropout_without_dropout_is_the_deterministic_prediction(ddn_no_dropout):
    features = _features(32)
    served = _call(ddn_no_dropout["loaded"], "serving_default", features)
    mc = _call(ddn_no_dropout["loaded"], "mc_dropout", features)
    np.testing.assert_allclose(mc["ctr_mean"], served["ctr_mean"], rtol=1e-5)
    np.testing.assert_allclose(mc["model_stddev"], 0.0, atol=1e-6)
    np.testing.assert_allclose(mc["data_stddev"], served["ctr_stddev"], rtol=1e-5)


def test_reg_mc_dropout_has_no_data_term(reg):
    mc = _call(reg["loaded"], "mc_dropout", _features(8))
    np.testing.assert_array_equal(mc["data_stddev"], 0.0)
    np.testing.assert_allclose(mc["total_stddev"], mc["model_stddev"], rtol=1e-6)
    assert np.all(mc["model_stddev"] > 0)


def test_batched_mc_dropout_matches_explicit_passes(ddn):
    """One [T*B] batch has the statistics of T separate dropout passes, row by row.

    (The [T, B] layout itself is checked exactly by the dropout-0 test: distinct rows,
    a row mix-up would change their means.)
    """
    features = _features(8, seed=3)
    encoder = ddn["model"].get_layer(ENCODER_NAME)
    density = ddn["model"].get_layer(DENSITY_NAME)
    encoded = encoder(features, training=False)
    one_pass = tf.function(lambda: export.serving_outputs(density(encoded, training=True),
                                                          ddn["config"]))
    means, variances = [], []
    for _ in range(T):  # each call draws new masks (the seed generator's state advances)
        out = one_pass()
        means.append(out["ctr_mean"].numpy())
        variances.append(out["ctr_stddev"].numpy() ** 2)
    means, variances = np.array(means), np.array(variances)
    mc = _call(ddn["loaded"], "mc_dropout", features)

    def within_5_standard_errors(actual, samples):
        """`actual` vs the mean of `samples`: two independent estimates from T passes."""
        standard_error = samples.std(axis=0) * np.sqrt(2.0 / T)
        assert np.all(np.abs(actual - samples.mean(axis=0)) < 5 * standard_error)

    within_5_standard_errors(mc["ctr_mean"], means)
    within_5_standard_errors(mc["data_stddev"] ** 2, variances)
    within_5_standard_errors(mc["model_stddev"] ** 2, (means - means.mean(axis=0)) ** 2)
    deterministic = _call(ddn["loaded"], "serving_default", features)["ctr_mean"]
    np.testing.assert_allclose(mc["ctr_mean"], deterministic, atol=5 * means.std(axis=0).max())


def test_ucb_score_is_mean_plus_c_total_stddev(ddn):
    features = _features(8)
    c = tf.constant([0.0, 0.5, 1.0, 2.0, 0.0, 3.0, 1.0, 10.0])
    out = _call(ddn["loaded"], "ucb", features, c=c)
    assert sorted(out) == ["ctr_mean", "score", "total_stddev"]
    np.testing.assert_allclose(out["score"], out["ctr_mean"] + c.numpy() * out["total_stddev"],
                               rtol=1e-6)
    np.testing.assert_array_equal(out["score"][[0, 4]], out["ctr_mean"][[0, 4]])
    assert np.all(out["total_stddev"] > 0)


EXPLAIN_NAMES = ["ad", "words", "site-id", "history"]  # the vocabulary features, spec order


def test_explain_signature_equals_the_library(tmp_path_factory):
    """Every output, MC dropout included: the export starts from the model's dropout seed
    state and the check at export time draws no masks from the model, so the first call
    of each draws the same masks."""
    export_ = _export(tmp_path_factory, "explain", mc_samples=16)
    features = _features(16, seed=4)
    served = _call(export_["loaded"], "explain", features)
    assert sorted(served) == ["ctr_mean", "data_stddev", "delta_mean", "feature_names",
                              "model_stddev", "saliency_data_stddev", "saliency_model_stddev"]
    assert served["feature_names"].shape == (16, 4)
    assert [v.decode() for v in served["feature_names"][5]] == EXPLAIN_NAMES
    library = feature_saliency(export_["model"], features, export_["config"], SPEC,
                               mc_samples=16)
    for key in ("saliency_model_stddev", "saliency_data_stddev", "delta_mean"):
        np.testing.assert_allclose(served[key], library[OOV][key].numpy(), rtol=1e-5,
                                   atol=1e-7)
    for key in ("ctr_mean", "data_stddev", "model_stddev"):
        np.testing.assert_allclose(served[key], library[key].numpy(), rtol=1e-5, atol=1e-7)
    deterministic = _call(export_["loaded"], "serving_default", features)
    np.testing.assert_allclose(served["ctr_mean"], deterministic["ctr_mean"], rtol=1e-5)
    np.testing.assert_allclose(served["data_stddev"], deterministic["ctr_stddev"], rtol=1e-5)
    assert np.ptp(served["delta_mean"]) > 0.01 and np.ptp(served["saliency_data_stddev"]) > 0.01


def test_explain_model_saliency_within_sampling_error(ddn):
    """After other calls the dropout masks differ: two independent T-pass estimates."""
    features = _features(16, seed=5)
    served = _call(ddn["loaded"], "explain", features)
    library = feature_saliency(ddn["model"], features, ddn["config"], SPEC, mc_samples=T)
    log_diff = np.log(served["saliency_model_stddev"]) - np.log(
        library[OOV]["saliency_model_stddev"].numpy())
    spread = np.ptp(np.log(served["saliency_model_stddev"]))
    assert spread > 0.5  # the features' ratios really differ ...
    # ... far more than two estimates of one ratio (mean |diff| ~0.1, max ~0.45 at T=256)
    assert np.abs(log_diff).mean() < 0.2 and np.abs(log_diff).max() < 0.8
    np.testing.assert_allclose(served["model_stddev"], library["model_stddev"], rtol=0.5)


def test_explain_without_dropout_has_unit_model_ratios(ddn_no_dropout):
    served = _call(ddn_no_dropout["loaded"], "explain", _features(8))
    np.testing.assert_array_equal(served["saliency_model_stddev"], 1.0)
    np.testing.assert_array_equal(served["model_stddev"], 0.0)
    meta = load_export_metadata(ddn_no_dropout["path"])
    assert "explain" in meta["signatures"] and meta["explain_features"] == EXPLAIN_NAMES


def test_explain_exports_attention_weights(tmp_path_factory):
    if "interaction_attention" not in ModelConfig.__dataclass_fields__:
        pytest.skip("this ModelConfig has no attention")
    export_ = _export(tmp_path_factory, "attention", mc_samples=4, history_attention=True,
                      interaction_attention=True)
    features = _features(8)
    served = _call(export_["loaded"], "explain", features)
    weights = attention_weights(export_["model"], features)
    assert weights, "attention configured but attention_weights found none"
    for name, value in weights.items():
        np.testing.assert_allclose(served[output_name(name)], value.numpy(), rtol=1e-5,
                                   atol=1e-7)


def test_example_instances_are_rows_as_logged():
    rows = example_instances(SPEC, VOCABS, 50, seed=0, numeric_stats=STATS)
    json.dumps(rows)  # JSON-ready
    assert all(isinstance(r["words"], str) and len(r["words"].split()) <= 3 for r in rows)
    assert any(r["ad"] not in VOCABS["ad"] for r in rows)  # some OOV
    raw = instances_to_features(SPEC, rows)
    assert raw["site-id"].dtype == tf.int64 and raw["words"].shape == (50,)
    features = data.features_from_raw(raw, SPEC)
    assert features["words"].shape == (50, 3) and features["history"].shape == (50, 4)
    # Lists are joined as logged; the graph splits, drops empty items, pads and cuts.
    listed = instances_to_features(SPEC, [{**rows[0], "words": ["a", "", "b", "c", "d"]}])
    assert listed["words"].numpy().tolist() == [b"a b c d"]
    assert data.features_from_raw(listed, SPEC)["words"].numpy().tolist() == [
        [b"a", b"b", b"c"]]
    np.testing.assert_array_equal(
        data.features_from_raw(data.raw_from_features(features, SPEC), SPEC)["history"],
        features["history"])


def _fake_run(tmp_path, model, config, data_dir):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save(str(run_dir / "model.keras"))
    (run_dir / "config.json").write_text(json.dumps(
        {"model": config.to_dict(), "train": {"data_dir": str(data_dir)}}))
    return str(run_dir)


def test_export_run_versions_are_atomic_and_incremented(tmp_path):
    model, config = _model(dropout=0.2)
    data_dir = tmp_path / "data"  # spec only, no TFRecords: synthetic check rows
    data_dir.mkdir()
    SPEC.save(str(data_dir / "spec.json"))
    run_dir = _fake_run(tmp_path, model, config, data_dir)
    base = tmp_path / "saved_models" / "ddn"
    (base / "3").mkdir(parents=True)
    (base / "3" / "marker").write_text("old")
    (base / "notes").mkdir()
    cfg = ExportConfig(run_dir=run_dir, export_base=str(base), mc_samples=4, check_rows=16)
    assert export_run(cfg) == str(base / "4")
    assert export_run(cfg) == str(base / "5")
    with pytest.raises(FileExistsError):
        export_run(ExportConfig(run_dir, str(base), version=3, mc_samples=4, check_rows=16))
    assert sorted(os.listdir(base)) == ["3", "4", "5", "notes"]  # no temporary dir left
    assert os.listdir(base / "3") == ["marker"]
    assert (base / "3" / "marker").read_text() == "old"
    meta = load_export_metadata(str(base / "5"))
    assert meta["version"] == 5 and meta["mc_samples"] == 4
    assert FeatureSpec.from_dict(meta["spec"]) == SPEC
    assert ModelConfig(**meta["model_config"]) == config
    assert meta["check"]["source"].startswith("synthetic")
    served = _call(tf.saved_model.load(str(base / "5")), "serving_default", _features(8))
    np.testing.assert_allclose(served["ctr_mean"], export.serving_outputs(
        model(_features(8), training=False), config)["ctr_mean"], rtol=1e-5)


def _write_eval_shard(data_dir, rows):
    """A one-shard eval split as `beam.preprocess` writes it (unpadded lists)."""
    os.makedirs(data_dir / "eval")
    with tf.io.TFRecordWriter(str(data_dir / "eval" / "part-0.tfrecord.gz"), "GZIP") as out:
        for row in rows:
            feature = {"clicks": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
                       "impressions": tf.train.Feature(int64_list=tf.train.Int64List(value=[9]))}
            for f in SPEC.features:
                values = row[f.name] if f.is_sequence else [row[f.name]]
                values = [v for v in values if v not in ("", -1)]
                if f.is_numeric:
                    feature[f.name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                elif f.dtype == "int64":
                    feature[f.name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
                else:
                    feature[f.name] = tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[v.encode() for v in values]))
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            out.write(example.SerializeToString())


def test_export_run_checks_on_the_run_data(tmp_path):
    model, config = _model(kind="reg", dropout=0.0)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    SPEC.save(str(data_dir / "spec.json"))
    _write_eval_shard(data_dir, example_instances(SPEC, VOCABS, 20, seed=7, numeric_stats=STATS))
    run_dir = _fake_run(tmp_path, model, config, data_dir)
    path = export_run(ExportConfig(run_dir, str(tmp_path / "reg"), version=7, mc_samples=2))
    assert path == str(tmp_path / "reg" / "7")
    meta = load_export_metadata(path)
    assert meta["check"] == {"rows": 20, "source": f"eval split of {data_dir}"}
    assert meta["run_dir"] == run_dir and meta["model_name"] == "reg"


def test_failed_check_leaves_no_version(tmp_path, monkeypatch):
    model, config = _model(dropout=0.0)
    other, _ = _model(dropout=0.0, seed=5)
    verify = export._verify
    monkeypatch.setattr(export, "_verify",
                        lambda path, _model, *args: verify(path, other, *args))
    base = tmp_path / "ddn"
    with pytest.raises(ExportCheckError, match="serving_default/"):
        export_model(model, config, SPEC, str(base), mc_samples=2, check_rows=8)
    assert os.listdir(base) == []


def test_config_validation():
    with pytest.raises(ValueError, match="mc_samples=1"):
        ExportConfig("run", "base", mc_samples=1)
    with pytest.raises(ValueError, match="version=-1"):
        ExportConfig("run", "base", version=-1)


@pytest.fixture(scope="module")
def bbddn_no_dropout(tmp_path_factory):
    return _export(tmp_path_factory, "bbddn0", kind="bbddn", dropout=0.0, mc_samples=4)


@pytest.mark.parametrize("name", ["bbddn_no_dropout", "ddn_no_dropout"])
def test_posterior_signature_equals_the_library(name, request):
    """Without dropout every pass is the deterministic one, so the library's posterior of
    the same parameters is exact to compare: mean, stddev and the Bayes-UCB quantile for
    counts from none to many; Thompson draws match the posterior's mean and spread."""
    from tfddn.policy import CandidatePredictions, PosteriorUCB

    export_ = request.getfixturevalue(name)
    config, features = export_["config"], _features(6, seed=5)
    clicks = np.array([0, 0, 1, 3, 40, 2], dtype=np.float32)
    impressions = np.array([0, 1, 1, 50, 1000, 7], dtype=np.float32)
    quantile = np.array([0.5, 0.9, 0.99, 0.8, 0.95, 0.7], dtype=np.float32)
    served = _call(export_["loaded"], "posterior", features, clicks=clicks,
                   impressions=impressions, quantile=quantile)
    assert sorted(served) == sorted(export.POSTERIOR_KEYS)
    params = export_["model"](features, training=False).numpy()
    t = load_export_metadata(export_["path"])["mc_samples"]
    zeros = np.zeros(6)
    predictions = CandidatePredictions(
        ctr_mean=zeros, data_stddev=zeros, model_stddev=zeros, cpc=np.ones(6),
        mixture=np.tile(params[None], (t, 1, 1)), num_components=config.num_components,
        family=config.family, clicks=clicks, impressions=impressions)
    posterior = predictions.posterior()
    np.testing.assert_allclose(served["posterior_mean"], posterior.mean(), rtol=2e-5, atol=1e-8)
    np.testing.assert_allclose(served["posterior_stddev"], posterior.stddev(), rtol=2e-5,
                               atol=1e-8)
    for i, level in enumerate(quantile):
        row = dataclasses.replace(predictions, ctr_mean=zeros[:1], data_stddev=zeros[:1],
                                  model_stddev=zeros[:1], cpc=np.ones(1),
                                  mixture=predictions.mixture[:, i:i + 1],
                                  clicks=clicks[i:i + 1], impressions=impressions[i:i + 1])
        ucb = PosteriorUCB(quantile=float(level)).scores(row, np.random.default_rng(0))
        np.testing.assert_allclose(served["ucb_score"][i], ucb[0], rtol=1e-4, atol=1e-8)
    assert np.all(served["ucb_score"][quantile > 0.6] >= served["posterior_mean"][
        quantile > 0.6] - 1e-6)
    # Thompson: 4,000 draws of one row have the posterior's mean and stddev.
    one = {k: np.repeat(v[4:5], 4000, axis=0) for k, v in features.items()}
    draws = _call(export_["loaded"], "posterior", one, clicks=np.full(4000, 40, np.float32),
                  impressions=np.full(4000, 1000, np.float32),
                  quantile=np.full(4000, 0.5, np.float32))["thompson_sample"]
    mean, sd = posterior.mean()[4], posterior.stddev()[4]
    assert abs(draws.mean() - mean) < 4 * sd / np.sqrt(4000)
    assert abs(draws.std() / sd - 1) < 0.1


def test_posterior_signature_of_a_dropout_model_narrows_with_counts(ddn):
    features = _features(4, seed=6)
    ones = np.ones(4, np.float32)
    prior = _call(ddn["loaded"], "posterior", features, clicks=0 * ones, impressions=0 * ones,
                  quantile=0.9 * ones)
    after = _call(ddn["loaded"], "posterior", features, clicks=20 * ones,
                  impressions=1000 * ones, quantile=0.9 * ones)
    assert np.all(after["posterior_stddev"] < prior["posterior_stddev"])
    np.testing.assert_allclose(after["posterior_mean"], 0.02, rtol=0.5)  # the data speak
    assert np.all((prior["thompson_sample"] >= 0) & (prior["thompson_sample"] <= 1))


def test_export_writes_warmup_requests_that_the_server_replays(ddn, tmp_path):
    from serving.model_manager import ModelManager
    from serving.servable import ServableVersion
    from serving.warmup import WARMUP_FILE, replay_warmup_requests
    from serving.server_config import ModelConfig as ServedModel

    path = os.path.join(ddn["path"], WARMUP_FILE)
    records = list(tf.compat.v1.io.tf_record_iterator(path))
    assert len(records) == 2  # serving_default and mc_dropout, 8 rows each
    servable = ServableVersion.load("ddn", 1, ddn["path"])
    assert replay_warmup_requests(servable) == 2
    # A corrupt warmup file fails the load, as in TF Serving (the version is not served).
    broken = str(tmp_path / "m" / "1")
    shutil.copytree(ddn["path"], broken)
    with open(os.path.join(broken, WARMUP_FILE), "ab") as fh:
        fh.write(b"\x00" * 40)
    manager = ModelManager([ServedModel("m", str(tmp_path / "m"))], max_num_load_retries=0)
    manager.poll_once()
    assert manager.metrics.load_attempt_count.value(broken, "fail") == 1
    without = ModelManager([ServedModel("m", str(tmp_path / "m"))], enable_model_warmup=False)
    without.poll_once()
    assert without.resolve("m").version == 1


def _example_json(row: dict) -> dict:
    """A request row as TF Serving's tf.Example JSON: lists unpadded, like the TFRecords."""
    out = {}
    for f in SPEC.features:
        value = row[f.name]
        if f.is_sequence:
            value = f.items(value)
        elif f.is_numeric:
            value = float(value)
        out[f.name] = value
    return out


def test_regress_api_over_rest_and_grpc_equals_serving_default(ddn):
    import grpc
    import urllib.request

    from tensorflow_serving.apis import prediction_service_pb2_grpc, regression_pb2

    from serving.regression import examples_from_json
    from serving.server import ServerHandle
    from serving.server_config import ServerConfig

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(ddn["path"], "saved_model.pb"), "rb") as fh:
        saved.ParseFromString(fh.read())
    assert saved.meta_graphs[0].signature_def["regress"].method_name == \
        "tensorflow/serving/regress"
    rows = example_instances(SPEC, VOCABS, 6, seed=3, numeric_stats=STATS)
    expected = _call(ddn["loaded"], "serving_default", data.features_from_raw(
        instances_to_features(SPEC, rows), SPEC))["ctr_mean"]
    body = {"signature_name": "regress", "examples": [_example_json(r) for r in rows]}
    base = os.path.dirname(ddn["path"])
    config = ServerConfig(model_name="ddn", model_base_path=base)
    with ServerHandle.start(config) as server:
        request = urllib.request.Request(f"{server.rest_url}/v1/models/ddn:regress",
                                         data=json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            results = json.load(response)["results"]
        np.testing.assert_allclose(results, expected, rtol=1e-5)
        # The context's features go into every example (here: the site).
        site = body["examples"][0]["site-id"]
        shared = {"signature_name": "regress", "context": {"site-id": site},
                  "examples": [{k: v for k, v in e.items() if k != "site-id"}
                               for e in body["examples"][:2]]}
        request = urllib.request.Request(f"{server.rest_url}/v1/models/ddn:regress",
                                         data=json.dumps(shared).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            with_context = json.load(response)["results"]
        assert with_context[0] == pytest.approx(results[0], rel=1e-5)
        # Predict signatures are refused, with TF Serving's message.
        request = urllib.request.Request(f"{server.rest_url}/v1/models/ddn:regress",
                                         data=json.dumps({"examples": body["examples"]}).encode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 400
        assert "Expected regression signature method_name to be tensorflow/serving/regress" \
            in json.load(refused.value)["error"]
        grpc_request = regression_pb2.RegressionRequest()
        grpc_request.model_spec.name = "ddn"
        grpc_request.model_spec.signature_name = "regress"
        for serialized in examples_from_json(body, "regress"):
            grpc_request.input.example_list.examples.add().ParseFromString(serialized)
        with grpc.insecure_channel(server.grpc_target) as channel:
            answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Regress(
                grpc_request, timeout=60)
        np.testing.assert_allclose([r.value for r in answer.result.regressions], expected,
                                   rtol=1e-5)
        assert answer.model_spec.signature_name == "regress"
