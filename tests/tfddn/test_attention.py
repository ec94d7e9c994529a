"""History and feature-interaction attention (Naor et al.): numbers, round trips, models."""

import argparse
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfddn.cli import add_dataclass_arguments, dataclass_from_args
from tfddn.layers.attention import (
    FieldInteractionAttention,
    HistoryAttention,
    SequenceItemEmbedding,
)
from tfddn.layers.features import SequenceEmbedding
from tfddn.models.builder import ENCODER_NAME, attention_model, build_model
from tfddn.models.config import ModelConfig
from tfddn.training import compile_model

from specs import MINI_STATS, mini_spec

SPEC = mini_spec(history={"max_length": 4})
VOCABS = {"ad": ["a1", "a2", "a3"], "words": ["red", "car"], "site": [7, 8],
          "history": ["h1", "h2", "h3", "h4", "h5"]}
STATS = MINI_STATS
BOTH = ModelConfig(kind="ddn", num_components=2, history_attention=True,
                   interaction_attention=True, attention_heads=2, embedding_dim=8)
HISTORIES = [["h1", "h2", "h3", ""], ["h4", "zz", "", ""], ["", "", "", ""],
             ["h5", "h1", "h2", "h3"]]


def _batch(ads=("a1", "a2", "a3", "zz"), histories=HISTORIES):
    n = len(ads)
    return {"ad": tf.constant(list(ads)), "words": tf.constant([["red", "car", ""]] * n),
            "age": tf.constant(np.linspace(0.0, 9.0, n), tf.float32),
            "site": tf.constant([7, 8, 99, 7][:n], tf.int64),
            "history": tf.constant(list(histories)[:n])}


def _history_attention(query_dim=2):
    layer = HistoryAttention(name="h")
    layer.build((None, query_dim), (None, 3, 2), (None, 3))
    layer.query_projection.set_weights([np.eye(query_dim, 2, dtype="float32"),
                                        np.zeros(2, "float32")])
    return layer


def test_history_attention_weights_by_hand():
    items = np.array([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]],
                      [[1.0, 1.0], [5.0, 5.0], [2.0, 0.0]]], "float32")
    mask = np.array([[True, True, False], [False, False, False]])
    query = np.array([[2.0, 0.0], [1.0, 1.0]], "float32")
    pooled, weights = _history_attention()(query, items, mask)
    # Row 0: scores (2, 0) / sqrt(2) over the two real items; the padded one gets 0.
    a = 1.0 / (1.0 + math.exp(-2.0 / math.sqrt(2.0)))
    np.testing.assert_allclose(weights[0], [a, 1.0 - a, 0.0], rtol=1e-6)
    np.testing.assert_allclose(pooled[0], [a, 1.0 - a], rtol=1e-6)
    assert weights.numpy()[0, 2] == 0.0  # exactly
    # Row 1: all padding -> zero weights, zero vector, no NaN.
    np.testing.assert_array_equal(weights[1], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(pooled[1], [0.0, 0.0])


def test_history_attention_gradients_are_finite_with_an_all_padding_row():
    layer = _history_attention()
    items = tf.Variable(np.ones((2, 3, 2), "float32"))
    mask = np.array([[True, False, True], [False, False, False]])
    with tf.GradientTape() as tape:
        pooled, _ = layer(np.ones((2, 2), "float32"), items, mask)
        loss = tf.reduce_sum(pooled)
    grads = tape.gradient(loss, [items, *layer.trainable_weights])
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_history_attention_query_changes_the_weights():
    items = np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]] * 2, "float32")
    mask = np.array([[True, True, False]] * 2)
    _, weights = _history_attention()(np.array([[3.0, 0.0], [0.0, 3.0]], "float32"), items,
                                      mask)
    a = 1.0 / (1.0 + math.exp(-3.0 / math.sqrt(2.0)))
    np.testing.assert_allclose(weights, [[a, 1 - a, 0.0], [1 - a, a, 0.0]], rtol=1e-6)


def test_sequence_item_embedding_matches_the_mean_pooled_layer():
    items_layer = SequenceItemEmbedding(["x", "y"], embedding_dim=3, name="items")
    mean_layer = SequenceEmbedding(["x", "y"], embedding_dim=3, name="mean")
    values = tf.constant([["x", "q", ""], ["", "", ""]])
    items, mask = items_layer(values)
    mean_layer(values)
    mean_layer.set_weights(items_layer.get_weights())
    rows = items_layer.embedding.embeddings.numpy()
    np.testing.assert_array_equal(mask, [[True, True, False], [False, False, False]])
    np.testing.assert_allclose(items[0], [rows[2], rows[1], np.zeros(3)])  # x, OOV, pad
    np.testing.assert_allclose(items[1], 0.0)
    np.testing.assert_allclose(mean_layer(values)[0], (rows[2] + rows[1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(items_layer(values, force_oov=True)[0][0],
                               [rows[1], rows[1], np.zeros(3)])


def test_field_interaction_attention_map():
    fields = [tf.constant(np.random.default_rng(i).normal(size=(5, 4)), tf.float32)
              for i in range(3)]
    layer = FieldInteractionAttention(num_heads=2, name="fi")
    outputs, scores = layer(fields)
    assert scores.shape == (5, 2, 3, 3)
    assert outputs.shape == (5, 12)
    np.testing.assert_allclose(scores.numpy().sum(-1), 1.0, rtol=1e-5)
    attended = layer.attention(tf.stack(fields, 1), tf.stack(fields, 1))
    np.testing.assert_allclose(outputs, tf.reshape(tf.stack(fields, 1) + attended, (5, 12)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", [
    HistoryAttention(use_bias=False, name="h"),
    FieldInteractionAttention(num_heads=3, key_dim=5, dropout=0.1, seed=4, name="f"),
    SequenceItemEmbedding([3, 4], "int64", 6, 0.1, seed=2, name="s"),
])
def test_get_config_round_trips(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="num_heads=0"):
        FieldInteractionAttention(num_heads=0)
    with pytest.raises(ValueError, match="dropout=1.0"):
        FieldInteractionAttention(dropout=1.0)
    with pytest.raises(TypeError, match="use_bias='yes'"):
        HistoryAttention(use_bias="yes")
    with pytest.raises(ValueError, match="attention_heads=0"):
        ModelConfig(attention_heads=0)
    with pytest.raises(TypeError, match="history_attention=1"):
        ModelConfig(history_attention=1)


def test_config_flags_and_dict():
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, ModelConfig)
    config = dataclass_from_args(ModelConfig, parser.parse_args(
        ["--history_attention", "--attention_heads", "4"]))
    assert (config.history_attention, config.interaction_attention) == (True, False)
    assert config.to_dict()["attention_heads"] == 4
    assert ModelConfig(**config.to_dict()) == config


def test_model_attention_outputs():
    keras.utils.set_random_seed(0)
    model = build_model(SPEC, VOCABS, STATS, BOTH, seed=0)
    encoder, rng = model.get_layer(ENCODER_NAME), np.random.default_rng(0)
    # Every weight the history attention reads (the target embeddings form the query)
    # set to trained-size values, not ~U(+-0.05): its weights do not depend on the
    # Keras initialisation (nor on the order in which layers draw their seeds).
    for name in ("encode_ad", "encode_words", "encode_history"):
        table = encoder.get_layer(name).embedding.embeddings
        table.assign(rng.normal(size=table.shape).astype("float32"))
    projection = encoder.get_layer("history_attention_history").query_projection
    projection.kernel.assign(rng.normal(size=projection.kernel.shape).astype("float32"))
    projection.bias.assign(np.zeros(projection.bias.shape, "float32"))
    attention = attention_model(model)(_batch())
    assert sorted(attention) == ["history_attention/history", "interaction_attention"]
    history = attention["history_attention/history"].numpy()
    real = np.array([[h != "" for h in row] for row in HISTORIES])
    np.testing.assert_array_equal(history[~real], 0.0)
    np.testing.assert_allclose(history.sum(1), [1.0, 1.0, 0.0, 1.0], rtol=1e-6)
    interaction = attention["interaction_attention"].numpy()
    assert interaction.shape == (4, 2, 5, 5)  # 5 fields: ad, words, age, site, history
    np.testing.assert_allclose(interaction.sum(-1), 1.0, rtol=1e-5)
    # The query is the target: another ad, same history -> other weights (each row
    # moves by 0.24 to 0.99 with these weights).
    other_ads = ("a2", "a3", "a1", "a1")
    other = attention_model(model)(_batch(ads=other_ads))
    changed = np.abs(other["history_attention/history"].numpy() - history)
    assert changed[[0, 1, 3]].max(axis=1).min() > 0.1
    np.testing.assert_array_equal(changed[2], 0.0)  # all padding: zeros whatever the target
    # Control: without the query (zero projection) the weights are uniform over the
    # real items and the same for every target.
    projection.kernel.assign(np.zeros(projection.kernel.shape, "float32"))
    for ads in (("a1", "a2", "a3", "zz"), other_ads):
        weights = attention_model(model)(_batch(ads=ads))["history_attention/history"]
        np.testing.assert_allclose(weights, real / np.maximum(real.sum(1, keepdims=True), 1),
                                   rtol=1e-6)


def test_model_with_both_attentions_trains():
    keras.utils.set_random_seed(0)
    model = compile_model(build_model(SPEC, VOCABS, STATS, BOTH, seed=0), BOTH)
    rng = np.random.default_rng(0)
    features = {k: tf.repeat(v, 16, axis=0) for k, v in _batch().items()}
    impressions = rng.integers(50, 200, 64).astype("float32")
    y = np.stack([rng.binomial(impressions.astype(int), 0.05) / impressions, impressions], 1)
    ds = tf.data.Dataset.from_tensor_slices((features, y.astype("float32"))).batch(16)
    projection = model.get_layer(ENCODER_NAME).get_layer("history_attention_history")
    before = projection.query_projection.kernel.numpy().copy()
    history = model.fit(ds, epochs=2, shuffle=False, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert not np.allclose(projection.query_projection.kernel.numpy(), before)


def test_save_load_identical_outputs_and_attention(tmp_path):
    model = build_model(SPEC, VOCABS, STATS, BOTH, seed=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(loaded(_batch()).numpy(), model(_batch()).numpy(), rtol=1e-6)
    expected, actual = attention_model(model)(_batch()), attention_model(loaded)(_batch())
    for name in expected:
        np.testing.assert_allclose(actual[name].numpy(), expected[name].numpy(), rtol=1e-6)


def test_default_config_is_the_architecture_without_attention():
    model = build_model(SPEC, VOCABS, STATS, ModelConfig(kind="ddn", num_components=2), seed=0)
    assert attention_model(model) is None
    encoder = model.get_layer(ENCODER_NAME)
    assert not any(isinstance(layer, (HistoryAttention, FieldInteractionAttention,
                                      SequenceItemEmbedding)) for layer in encoder.layers)
    # Trainable parameters of the pre-attention builder for this spec: embeddings
    # 16 x (4+4+3+7) rows, towers (33->64, 32->64), fusion (128->64->32), head (32->6).
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 16 * 18 + (33 * 64 + 64) + (32 * 64 + 64) + (128 * 64 + 64) + (
        64 * 32 + 32) + (32 * 6 + 6)
    outputs = encoder(_batch())
    assert sorted(outputs) == ["context", "target"]
    history = encoder.get_layer("encode_history")
    rows = history.embedding.embeddings.numpy()
    site = encoder.get_layer("encode_site").embedding.embeddings.numpy()
    np.testing.assert_allclose(outputs["context"][0],  # site 7, mean of h1, h2, h3
                               np.concatenate([site[1], rows[2:5].mean(0)]), rtol=1e-6)


def test_history_relevance_is_the_attention_weighted_score():
    """`r = sum_i a_i s_i`: high when an item matches the query, 0 for all padding."""
    layer = HistoryAttention(use_bias=False, return_relevance=True, name="r")
    items = np.zeros((2, 3, 2), "float32")
    items[0] = [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    mask = np.array([[True, True, False], [False, False, False]])
    query = np.array([[2.0, 0.0], [1.0, 1.0]], "float32")
    layer.build(query.shape, items.shape, mask.shape)
    layer.query_projection.kernel.assign(np.eye(2, dtype="float32"))
    pooled, weights, relevance = (v.numpy() for v in layer(query, items, mask))
    scores = np.array([2.0, 0.0]) / np.sqrt(2.0)
    expected_weights = np.exp(scores) / np.exp(scores).sum()
    np.testing.assert_allclose(weights[0, :2], expected_weights, rtol=1e-6)
    np.testing.assert_allclose(relevance[0, 0], expected_weights @ scores, rtol=1e-6)
    np.testing.assert_array_equal(relevance[1], 0.0)
    assert relevance.shape == (2, 1) and pooled.shape == (2, 2)
    config = layer.get_config()
    assert config["return_relevance"] is True
    assert HistoryAttention.from_config(config).return_relevance
