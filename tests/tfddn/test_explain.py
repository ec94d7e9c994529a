"""Marginalisation, mean embeddings, saliency, importance and `tfddn explain` in numbers."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfddn import cli, data, training
from tfddn.explain import (MEAN, OOV, embedding_layers, expand, feature_importance,
                           feature_saliency, fit_mean_embeddings, marginalise,
                           write_importance_report)
from tfddn.layers.features import MEAN_SENTINEL, MEAN_SENTINEL_INT, SequenceEmbedding
from tfddn.models.builder import ENCODER_NAME, build_model
from tfddn.models.config import ModelConfig

from specs import MINI_STATS, mini_spec

SPEC = mini_spec(history={"dtype": "int64", "max_length": 4})
VOCABS = {"ad": ["a1", "a2", "a3"], "words": ["red", "car", "cheap"], "site": [7, 8, 9],
          "history": [11, 12, 13]}
STATS = MINI_STATS
FEATURES = {
    "ad": tf.constant(["a1", "a2", "zz"]),
    "words": tf.constant([["red", "car", ""], ["cheap", "", ""], ["", "", ""]]),
    "age": tf.constant([1.0, 5.0, -2.0]),
    "site": tf.constant([7, 9, 8], tf.int64),
    "history": tf.constant([[11, 12, -1, -1], [13, 99, 11, -1], [12, -1, -1, -1]], tf.int64),
}
NAMES = ("ad", "words", "site", "history")


def _model(dropout=0.0, seed=0):
    config = ModelConfig(kind="ddn", embedding_dim=4, tower_units=(16,), fusion_units=(16,),
                         dropout=dropout, num_components=2)
    model = build_model(SPEC, VOCABS, STATS, config, seed=seed)
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(0.0, 0.5, v.shape).astype("float32"))
    for layer in embedding_layers(model).values():  # a known, uneven mean embedding
        layer.set_mean_embedding(np.arange(layer.embedding.input_dim, dtype=float) + 1.0)
    return model, config


def test_marginalise_replaces_values_and_keeps_padding():
    oov = marginalise(FEATURES["history"], SPEC.feature("history"), OOV).numpy()
    assert np.all((oov == -1) == (FEATURES["history"].numpy() == -1))
    assert len(set(oov[oov != -1].tolist())) == 1 and oov[0, 0] not in VOCABS["history"]
    mean = marginalise(FEATURES["ad"], SPEC.feature("ad"), MEAN).numpy()
    assert mean.tolist() == [MEAN_SENTINEL.encode()] * 3
    with pytest.raises(ValueError, match="age"):
        marginalise(FEATURES["age"], SPEC.feature("age"))


@pytest.mark.parametrize("method", [OOV, MEAN])
def test_marginalisation_changes_only_the_chosen_feature_encoding(method):
    """Per-feature encoder outputs: block j differs from block 0 only in feature j, whose
    rows with a value become the OOV row / the mean embedding; towers change in at most
    that feature's embedding_dim columns."""
    model, _ = _model()
    encoder = model.get_layer(ENCODER_NAME)
    batch = expand(FEATURES, SPEC, [(method, name) for name in NAMES])

    def blocks(tensor):
        return tensor.numpy().reshape(len(NAMES) + 1, 3, -1)

    encoded = {f: blocks(encoder.get_layer(f"encode_{f}")(batch[f])) for f in SPEC.feature_names}
    towers = {k: blocks(v) for k, v in encoder(batch).items()}
    for j, name in enumerate(NAMES, start=1):
        for other in SPEC.feature_names:
            if other != name:
                np.testing.assert_array_equal(encoded[other][j], encoded[other][0])
        layer = encoder.get_layer(f"encode_{name}")
        oov_row = 1 if isinstance(layer, SequenceEmbedding) else 0
        expected = (layer.embedding.embeddings.numpy()[oov_row] if method == OOV
                    else layer.mean_embedding.numpy())
        has_value = np.asarray(FEATURES[name]).reshape(3, -1) != (
            b"" if FEATURES[name].dtype == tf.string else -1)
        for r in range(3):
            want = expected if has_value[r].any() else encoded[name][0, r]
            np.testing.assert_allclose(encoded[name][j, r], want, rtol=1e-6)
        changed = sum(int(np.any(towers[k][j] != towers[k][0], axis=0).sum()) for k in towers)
        assert 0 < changed <= 4  # the columns of this feature's embedding only


def test_mean_embedding_is_the_impression_weighted_average(tiny_marketplace, tmp_path):
    data_dir = tiny_marketplace["data_dir"]
    train = training.load_training_data(data_dir)
    model = build_model(train.spec, train.vocabularies, train.numeric_stats,
                        ModelConfig(embedding_dim=3, tower_units=(8,), fusion_units=(8,)))
    counted = fit_mean_embeddings(model, data_dir)
    ds = data.make_dataset(data.split_files(data_dir, "train"), train.spec,
                           data.InputConfig(batch_size=100_000, shuffle=False))
    features, labels = next(iter(ds))
    n = labels["impressions"].numpy()
    for name in ("advertiser_id", "title"):
        layer = embedding_layers(model)[name]
        offset = 2 if name == "title" else 1  # rows: [padding,] OOV, vocabulary
        row_of = {v.encode(): i + offset for i, v in enumerate(train.vocabularies[name])}
        values = features[name].numpy()
        weights = np.zeros(layer.embedding.input_dim)
        for value, impressions in zip(values.reshape(len(n), -1), n):
            for v in value:
                if v != b"":
                    weights[row_of.get(v, offset - 1)] += impressions
        assert weights[offset - 1] > 0  # rare values weigh on the OOV row
        expected = weights @ layer.embedding.embeddings.numpy() / weights.sum()
        np.testing.assert_allclose(layer.mean_embedding.numpy(), expected, rtol=1e-5)
        assert counted[name] == pytest.approx(weights.sum())
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    for name, layer in embedding_layers(loaded).items():
        assert layer.has_mean_embedding
        np.testing.assert_array_equal(layer.mean_embedding.numpy(),
                                      embedding_layers(model)[name].mean_embedding.numpy())


def _mixture_mean(params):
    weights = np.exp(params[:, :2]) / np.exp(params[:, :2]).sum(1, keepdims=True)
    return (weights * params[:, 2:4]).sum(1)


def test_saliency_equals_one_feature_at_a_time():
    model, config = _model(dropout=0.0)
    out = feature_saliency(model, FEATURES, config, SPEC, methods=(OOV, MEAN), mc_samples=4)
    base = model(FEATURES).numpy()
    for method in (OOV, MEAN):
        for j, name in enumerate(NAMES):
            features = dict(FEATURES, **{name: marginalise(FEATURES[name],
                                                           SPEC.feature(name), method)})
            params = model(features).numpy()
            np.testing.assert_allclose(out[method]["delta_mean"][:, j],
                                       _mixture_mean(params) - _mixture_mean(base),
                                       rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(out[method]["saliency_model_stddev"].numpy(), 1.0)
    assert np.all(out[OOV]["saliency_data_stddev"].numpy() > 0)
    int_mean = marginalise(FEATURES["site"], SPEC.feature("site"), MEAN).numpy()
    assert np.all(int_mean == MEAN_SENTINEL_INT)


def test_a_group_marginalises_every_member_at_once():
    model, config = _model(dropout=0.0)
    out = feature_saliency(model, FEATURES, config, SPEC, methods=(OOV,),
                           feature_names=["ad+site", "words"], mc_samples=0)
    both = dict(FEATURES, ad=marginalise(FEATURES["ad"], SPEC.feature("ad")),
                site=marginalise(FEATURES["site"], SPEC.feature("site")))
    expected = _mixture_mean(model(both).numpy()) - _mixture_mean(model(FEATURES).numpy())
    np.testing.assert_allclose(out[OOV]["delta_mean"][:, 0], expected, rtol=1e-4, atol=1e-6)
    batch = expand(FEATURES, SPEC, [(OOV, "ad+site")])
    np.testing.assert_array_equal(batch["words"][3:], FEATURES["words"])  # not a member
    with pytest.raises(ValueError, match="saliency features must be"):
        feature_saliency(model, FEATURES, config, SPEC, feature_names=["ad+age"], mc_samples=0)


def test_model_stddev_saliency_is_exactly_one_when_nothing_changes():
    """Common dropout masks: a row whose feature is already OOV keeps its model stddev."""
    model, config = _model(dropout=0.3)
    out = feature_saliency(model, FEATURES, config, SPEC, methods=(OOV,), mc_samples=8)
    ratio = out[OOV]["saliency_model_stddev"].numpy()
    unknown = np.array([v not in VOCABS["ad"] for v in FEATURES["ad"].numpy().astype(str)])
    assert unknown.any() and not unknown.all()
    np.testing.assert_array_equal(ratio[unknown, NAMES.index("ad")], 1.0)
    assert np.any(ratio[~unknown, NAMES.index("ad")] != 1.0)


def test_mean_method_needs_fitted_mean_embeddings():
    config = ModelConfig(embedding_dim=4, tower_units=(8,), fusion_units=(8,))
    model = build_model(SPEC, VOCABS, STATS, config, seed=0)
    with pytest.raises(ValueError, match="fit_mean_embeddings"):
        feature_saliency(model, FEATURES, config, SPEC, methods=(MEAN,), mc_samples=0)


@pytest.fixture(scope="module")
def trained_run(tiny_marketplace, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("explain") / "ddn")
    training.train(training.TrainConfig(data_dir=tiny_marketplace["data_dir"], run_dir=run_dir,
                                        epochs=2, batch_size=256, verbose=0),
                   ModelConfig(kind="ddn", embedding_dim=8, tower_units=(16,),
                               fusion_units=(16,), dropout=0.2, num_components=2,
                               oov_rate=0.1, learning_rate=3e-3))
    return run_dir


def test_importance_on_a_trained_model(trained_run, tiny_marketplace, tmp_path):
    model, config, _ = training.load_run(trained_run)
    result = feature_importance(model, config, tiny_marketplace["data_dir"], max_rows=200,
                                mc_samples=8)
    assert result.data_ratio.shape == (200, 7) and result.model_ratio.shape == (200, 7)
    assert np.all(np.isfinite(result.data_ratio)) and np.all(result.data_ratio > 0)
    assert np.all(np.isfinite(result.model_ratio)) and np.all(result.model_ratio > 0)
    paths = write_importance_report(result, str(tmp_path / "importance"))
    with open(paths["json"]) as fh:
        report = json.load(fh)
    assert report["rows"] == 200 and set(report["data"]) == set(result.feature_names)
    median = np.median(result.data_ratio[:, result.feature_names.index("device")])
    assert report["data"]["device"]["median"] == pytest.approx(median)
    assert os.path.getsize(paths["png"]) > 10_000
    with open(paths["md"]) as fh:
        assert "| advertiser_id |" in fh.read()


def test_cli_explain(trained_run, tiny_marketplace, tmp_path, capsys):
    data_dir, out = tiny_marketplace["data_dir"], str(tmp_path / "out")
    common = ["--run_dir", trained_run, "--data_dir", data_dir, "--out_dir", out]
    assert cli.main(["explain", "sample", *common, "--rows", "0,3", "--method", "both",
                     "--mc_samples", "16"]) == 0
    with open(os.path.join(out, "saliency.json")) as fh:
        saliency = json.load(fh)
    table = saliency["rows"]["3"]["features"]
    assert len(table) == 7 and {"oov/delta_mean", "mean/saliency_model_stddev"} <= set(table[0])
    ranks = [e["oov/saliency_model_stddev"] for e in table]
    assert ranks == sorted(ranks, reverse=True)
    assert os.path.exists(os.path.join(out, "saliency.png"))
    assert cli.main(["explain", "importance", *common, "--max_rows", "64",
                     "--mc_samples", "0", "--features", "target_id+title,device"]) == 0
    with open(os.path.join(out, "importance.json")) as fh:
        importance = json.load(fh)
    assert "model" not in importance
    assert importance["features"] == ["target_id+title", "device"]
    assert cli.main(["explain", "attention", *common, "--rows", "0"]) == 0
    assert "no attention" in capsys.readouterr().out
