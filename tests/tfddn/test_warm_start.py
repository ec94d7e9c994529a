"""`tfddn.warm_start`: yesterday's weights into today's model, embedding rows by value."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfddn import training
from tfddn.models.builder import build_model
from tfddn.models.config import ModelConfig
from tfddn.warm_start import warm_start

from specs import mini_spec

SPEC = mini_spec(history={"max_length": 3})
OLD_VOCABS = {"ad": ["a1", "a2", "a3", "a4"], "words": ["red", "car", "blue"],
              "site": [7, 8, 9], "history": ["h1", "h2", "h3"]}
# Shared values in another order, some new (a5, a6, green, 10, h4), some gone (a2, a4, blue, 8).
NEW_VOCABS = {"ad": ["a5", "a3", "a1", "a6"], "words": ["car", "green", "red"],
              "site": [9, 10, 7], "history": ["h3", "h1", "h4", "h2"]}
CONFIG = ModelConfig(kind="ddn", embedding_dim=4, tower_units=(8,), fusion_units=(8,),
                     dropout=0.3, num_components=2)
ENCODER, DENSITY = "feature_encoder", "density_network"


def _features(ads, words, sites, histories):
    return {"ad": tf.constant(ads), "words": tf.constant(words),
            "age": tf.constant(np.linspace(0.0, 3.0, len(ads)), tf.float32),
            "site": tf.constant(sites, tf.int64), "history": tf.constant(histories)}


SHARED = _features(["a1", "a3", "a1"], [["red", "", ""], ["car", "red", ""], ["", "", ""]],
                   [7, 9, 9], [["h1", "h3", ""], ["h2", "", ""], ["h3", "h2", "h1"]])
NEW = _features(["a5", "a6", "a3"], [["green", "", ""], ["car", "green", ""], ["red", "", ""]],
                [10, 10, 7], [["h4", "", ""], ["h4", "h1", ""], ["h2", "", ""]])
GONE = _features(["a2", "a4", "a1"], [["blue", "", ""], ["red", "", ""], ["car", "", ""]],
                 [8, 7, 8], [["h1", "", ""], ["h2", "", ""], ["h3", "", ""]])


def _previous(config=CONFIG):
    """The old model with known random weights and a set mean embedding for `ad`."""
    model = build_model(SPEC, OLD_VOCABS, {}, config, seed=0)
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:
        v.assign(rng.normal(0.0, 0.5, v.shape).astype("float32"))
    ad = model.get_layer(ENCODER).get_layer("encode_ad")
    ad.set_mean_embedding(np.arange(ad.embedding.input_dim, dtype=np.float64))
    return model


def _table(model, feature):
    return model.get_layer(ENCODER).get_layer(f"encode_{feature}").embedding.embeddings.numpy()


def _row(model, feature, value):
    """The embedding row of `value`; None is the OOV row."""
    layer = model.get_layer(ENCODER).get_layer(f"encode_{feature}")
    index = 0 if value is None else 1 + layer.vocabulary.index(value)
    return layer.embedding.embeddings.numpy()[layer._padding_rows + index]


def test_embedding_rows_are_copied_by_value_and_new_values_start_at_oov():
    previous, model = _previous(), build_model(SPEC, NEW_VOCABS, {}, CONFIG, seed=1)
    warm_start(model, previous)
    for feature, vocabulary in NEW_VOCABS.items():
        oov = _row(previous, feature, None)
        np.testing.assert_array_equal(_row(model, feature, None), oov)
        for value in vocabulary:
            expected = _row(previous, feature, value) if value in OLD_VOCABS[feature] else oov
            np.testing.assert_array_equal(_row(model, feature, value), expected)
    for feature in ("words", "history"):  # the padding row of sequence features
        np.testing.assert_array_equal(_table(model, feature)[0], _table(previous, feature)[0])


def test_fresh_new_rows_keep_their_initial_values():
    previous, model = _previous(), build_model(SPEC, NEW_VOCABS, {}, CONFIG, seed=1)
    initial = _table(model, "ad").copy()
    report = warm_start(model, previous, new_rows="fresh")
    assert report["new_rows"] == "fresh"
    for value in ("a5", "a6"):
        index = 1 + NEW_VOCABS["ad"].index(value)
        np.testing.assert_array_equal(_table(model, "ad")[index], initial[index])
    np.testing.assert_array_equal(_row(model, "ad", "a3"), _row(previous, "ad", "a3"))


def test_dense_and_head_weights_are_copied_and_predictions_match_exactly():
    previous, model = _previous(), build_model(SPEC, NEW_VOCABS, {}, CONFIG, seed=1)
    assert not np.array_equal(model(SHARED, training=False), previous(SHARED, training=False))
    warm_start(model, previous)
    for layer in previous.get_layer(DENSITY).layers:
        for old, new in zip(layer.get_weights(), model.get_layer(DENSITY).get_layer(
                layer.name).get_weights()):
            np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(model(SHARED, training=False).numpy(),
                                  previous(SHARED, training=False).numpy())
    # New values start at the OOV row: the previous model served them through OOV too.
    np.testing.assert_array_equal(model(NEW, training=False).numpy(),
                                  previous(NEW, training=False).numpy())
    # Gone values had a learned row, they are OOV now.
    changed = np.any(model(GONE, training=False).numpy() != previous(GONE, training=False).numpy(),
                     axis=1)
    np.testing.assert_array_equal(changed, [True, True, True])


def test_report_counts_rows_and_drops_the_mean_embedding():
    previous, model = _previous(), build_model(SPEC, NEW_VOCABS, {}, CONFIG, seed=1)
    report = warm_start(model, previous)
    embeddings = {path.split("/encode_")[1]: v for path, v in report["embeddings"].items()}
    # rows_copied = shared values + OOV (+ padding for words / history).
    counts = {"ad": (3, 2, 2, 2), "words": (4, 1, 2, 1), "site": (3, 1, 2, 1),
              "history": (5, 1, 3, 0)}
    for feature, (copied, new, shared, gone) in counts.items():
        entry = embeddings[feature]
        assert (entry["rows_copied"], entry["rows_new"], entry["values_shared"],
                entry["values_gone"]) == (copied, new, shared, gone), feature
        assert entry["mean_embedding_dropped"] == (feature == "ad")
    assert report["skipped"] == {} and report["unused"] == []
    assert {f"{DENSITY}/target_tower_dense_0", f"{DENSITY}/context_tower_dense_0",
            f"{DENSITY}/fusion_dense_0", f"{DENSITY}/mixture_head"} == set(report["copied"])
    ad = model.get_layer(ENCODER).get_layer("encode_ad")
    assert not ad.has_mean_embedding
    np.testing.assert_array_equal(ad.mean_embedding.numpy(), 0.0)
    json.dumps(report)  # goes into the run's config.json


def test_changed_architecture_skips_mismatched_layers_with_the_reason():
    wider = ModelConfig(kind="ddn", embedding_dim=4, tower_units=(16,), fusion_units=(8,),
                        dropout=0.3, num_components=2)
    previous, model = _previous(), build_model(SPEC, NEW_VOCABS, {}, wider, seed=1)
    report = warm_start(model, previous)
    assert set(report["skipped"]) == {f"{DENSITY}/target_tower_dense_0",
                                      f"{DENSITY}/context_tower_dense_0",
                                      f"{DENSITY}/fusion_dense_0"}
    assert all(r.startswith("shape mismatch") for r in report["skipped"].values())
    assert report["copied"] == [f"{DENSITY}/mixture_head"]
    assert len(report["embeddings"]) == 4
    np.testing.assert_array_equal(_row(model, "ad", "a1"), _row(previous, "ad", "a1"))


def test_regression_model_warm_starts_a_density_model_except_the_head():
    reg = ModelConfig(kind="reg", embedding_dim=4, tower_units=(8,), fusion_units=(8,),
                      dropout=0.3)
    report = warm_start(build_model(SPEC, NEW_VOCABS, {}, CONFIG, seed=1), _previous(reg))
    assert report["skipped"] == {f"{DENSITY}/mixture_head": "not in the previous model"}
    assert report["unused"] == [f"{DENSITY}/regression_head"]


def test_nothing_in_common_raises():
    other = ModelConfig(kind="ddn", embedding_dim=2, tower_units=(4,), fusion_units=(4,),
                        num_components=3)
    with pytest.raises(ValueError, match="no layer matches"):
        warm_start(build_model(SPEC, NEW_VOCABS, {}, other, seed=1), _previous())
    with pytest.raises(ValueError, match="new_rows"):
        warm_start(build_model(SPEC, NEW_VOCABS, {}, CONFIG), _previous(), new_rows="zero")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ddn", "bbddn"])
def test_warm_started_training_starts_lower_and_records_the_report(kind, tiny_marketplace,
                                                                   tmp_path):
    data_dir = tiny_marketplace["data_dir"]
    model_config = ModelConfig(kind=kind, num_components=2, learning_rate=3e-3)

    def run(name, **kwargs):
        config = training.TrainConfig(data_dir=data_dir, run_dir=str(tmp_path / name),
                                      epochs=1, batch_size=256, verbose=0, **kwargs)
        summary = training.train(config, model_config)
        with open(os.path.join(config.run_dir, "history.json")) as fh:
            return summary, json.load(fh)["loss"][0]

    cold_summary, cold_loss = run("cold")
    warm_summary, warm_loss = run("warm", warm_start_from=str(tmp_path / "cold"))
    assert "warm_start" not in cold_summary
    assert warm_loss < cold_loss
    with open(tmp_path / "warm" / "config.json") as fh:
        saved = json.load(fh)
    assert saved["warm_start"] == warm_summary["warm_start"]
    assert saved["train"]["warm_start_from"] == str(tmp_path / "cold")
    report = saved["warm_start"]
    assert report["skipped"] == {} and report["copied"]
    assert all(e["rows_new"] == 0 and e["values_gone"] == 0  # same data, same vocabularies
               for e in report["embeddings"].values())
