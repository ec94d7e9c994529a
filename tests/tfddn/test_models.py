"""Model builder: raw values in, OOV behaviour, save -> load -> identical outputs."""

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
