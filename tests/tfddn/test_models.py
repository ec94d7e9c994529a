"""Model builder: raw values in, OOV behaviour, save -> load -> identical outputs."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfddn.layers.features import CategoricalEmbedding, NumericFeature, SequenceEmbedding
from tfddn.models.builder import build_model
from tfddn.models.config import ModelConfig

from specs import MINI_STATS, mini_spec

SPEC = mini_spec()
VOCABS = {"ad": ["a1", "a2"], "words": ["red", "car"], "site": [7, 8]}
STATS = MINI_STATS


def _batch(ads=("a1", "a2", "zz"), sites=(7, 8, 99)):
    n = len(ads)
    return {"ad": tf.constant(list(ads)), "words": tf.constant([["red", "car", ""]] * n),
            "age": tf.constant([1.0] * n), "site": tf.constant(list(sites), tf.int64)}


@pytest.mark.parametrize("kind, width", [("reg", 1), ("mdn", 6), ("ddn", 6), ("bbddn", 6)])
def test_output_shapes_and_range(kind, width):
    model = build_model(SPEC, VOCABS, STATS, ModelConfig(kind=kind, num_components=2), seed=0)
    out = model(_batch()).numpy()
    assert out.shape == (3, width)
    means = out[:, 0] if kind == "reg" else out[:, 2:4]
    assert np.all((means > 0) & (means < 1))


def test_empty_vocabularies_map_everything_to_oov(tmp_path):
    """No value reached min_count: the model still builds, saves and loads."""
    empty = {"ad": [], "words": [], "site": []}
    model = build_model(SPEC, empty, STATS, ModelConfig(kind="ddn", dropout=0.0), seed=0)
    out = model(_batch(ads=("a1", "a2", "zz"), sites=(7, 8, 99))).numpy()
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)
    np.testing.assert_allclose(out[0], out[2], rtol=1e-6)
    layer = model.get_layer("feature_encoder").get_layer("encode_site")
    assert layer.vocabulary == [] and layer.input_size == 2
    np.testing.assert_array_equal(layer.indices(tf.constant([7, 99], tf.int64)), [0, 0])
    path = str(tmp_path / "empty.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(_batch()).numpy(), model(_batch()).numpy(), rtol=1e-6)


def test_unknown_values_share_the_oov_embedding():
    model = build_model(SPEC, VOCABS, STATS, ModelConfig(kind="ddn", dropout=0.0), seed=0)
    out = model(_batch(ads=("new1", "new2", "a1"), sites=(123, 456, 7))).numpy()
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)
    assert not np.allclose(out[0], out[2])


def test_embedding_layers():
    layer = CategoricalEmbedding(["x", "y"], embedding_dim=3, name="e")
    vectors = layer(tf.constant(["x", "q"])).numpy()
    table = layer.embedding.embeddings.numpy()
    np.testing.assert_allclose(vectors, table[[1, 0]])  # OOV is row 0
    np.testing.assert_allclose(layer(tf.constant(["x"]), force_oov=True), table[[0]])
    pooled = SequenceEmbedding(["x", "y"], embedding_dim=3, name="s")
    out = pooled(tf.constant([["x", "y", ""], ["", "", ""]])).numpy()
    rows = pooled.embedding.embeddings.numpy()
    np.testing.assert_allclose(out[0], (rows[2] + rows[3]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[1], 0.0)
    np.testing.assert_allclose(NumericFeature(2.0, 4.0)(tf.constant([6.0])), [[1.0]])
    for layer in (CategoricalEmbedding([5, 6], "int64", 2, 0.1), NumericFeature(1.0, 2.0)):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_oov_rate_only_in_training():
    layer = CategoricalEmbedding(["x"], embedding_dim=2, oov_rate=0.5, seed=1)
    ids_train = layer.indices(tf.constant(["x"] * 2000), training=True).numpy()
    ids_infer = layer.indices(tf.constant(["x"] * 2000), training=False).numpy()
    assert 0.45 < np.mean(ids_train == 0) < 0.55
    assert np.all(ids_infer == 1)


def test_save_load_identical_outputs(tmp_path):
    model = build_model(SPEC, VOCABS, STATS, ModelConfig(kind="ddn"), seed=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(loaded(_batch()).numpy(), model(_batch()).numpy(), rtol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="kind=.gbm."):
        ModelConfig(kind="gbm")
    with pytest.raises(ValueError, match="dropout=1.5"):
        ModelConfig(dropout=1.5)
    assert ModelConfig(tower_units="32, 16").tower_units == (32, 16)


def _vocabularies(size):
    return {"ad": [f"ad{i}" for i in range(size)], "words": [f"w{i}" for i in range(size)],
            "site": list(range(7, 7 + size))}


def _big_batch():
    return {"ad": tf.constant(["ad1", "ad49999", "zz"]), "words": tf.constant(
        [["w3", "w40000", ""], ["w2", "", ""], ["nope", "", ""]]),
        "age": tf.constant([1.0, 2.0, 3.0]), "site": tf.constant([8, 50006, 99], tf.int64)}


def test_vocabularies_are_assets_not_config(tmp_path):
    """The saved config does not grow with a 50K-value vocabulary; the archive holds it as
    an asset and the reloaded model predicts identically."""
    sizes = {}
    for size in (50, 50_000):
        model = build_model(SPEC, _vocabularies(size), STATS,
                            ModelConfig(kind="ddn", dropout=0.0), seed=0)
        path = str(tmp_path / f"m{size}.keras")
        model.save(path)
        with zipfile.ZipFile(path) as archive:
            sizes[size] = (len(json.dumps(model.get_config())),
                           len(archive.read("config.json")))
            assets = [n for n in archive.namelist() if n.endswith("/vocabulary.json")]
            assert len(assets) == 3  # ad, words, site
        loaded = keras.saving.load_model(path, compile=False)
        np.testing.assert_array_equal(loaded(_big_batch()).numpy(), model(_big_batch()).numpy())
        layer = loaded.get_layer("feature_encoder").get_layer("encode_site")
        assert layer.vocabulary == list(range(7, 7 + size)) and layer.input_size == size + 1
    for small, large in zip(sizes[50], sizes[50_000]):
        assert large - small < 50, sizes  # a few digits of vocabulary_size, not 50K values


def test_runs_saved_with_the_vocabulary_in_the_config_still_load(tmp_path, monkeypatch):
    """A model.keras written before vocabularies were assets (the `vocabulary` list in each
    layer's config, no asset) loads and predicts as it did."""
    model = build_model(SPEC, VOCABS, STATS, ModelConfig(kind="ddn", dropout=0.0), seed=0)

    def old_get_config(layer):
        config = keras.layers.Layer.get_config(layer)
        return {**config, "vocabulary": layer.vocabulary, "dtype_kind": layer.dtype_kind,
                "embedding_dim": layer.embedding_dim, "oov_rate": layer.oov_rate,
                "seed": layer.seed}

    path = str(tmp_path / "old.keras")
    with monkeypatch.context() as patch:
        patch.setattr(CategoricalEmbedding, "get_config", old_get_config)
        patch.setattr(CategoricalEmbedding, "save_assets", lambda layer, dir_path: None)
        model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert '"vocabulary": ["a1", "a2"]' in archive.read("config.json").decode()
        assert not [n for n in archive.namelist() if n.endswith("vocabulary.json")]
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_array_equal(loaded(_batch()).numpy(), model(_batch()).numpy())
    assert loaded.get_layer("feature_encoder").get_layer("encode_ad").vocabulary == ["a1", "a2"]


def test_a_layer_from_its_config_alone_refuses_lookups():
    layer = CategoricalEmbedding(["x", "y"], embedding_dim=2, name="e")
    config = layer.get_config()
    assert "vocabulary" not in config and config["vocabulary_size"] == 2
    clone = CategoricalEmbedding.from_config(config)
    assert clone.input_size == 3 and clone.vocabulary is None
    with pytest.raises(ValueError, match="vocabulary is not loaded"):
        clone(tf.constant(["x"]))
    with pytest.raises(ValueError, match="vocabulary_size=3"):
        CategoricalEmbedding(["x", "y"], vocabulary_size=3)
