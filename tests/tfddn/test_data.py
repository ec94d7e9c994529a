"""tf.data input: parsing by the spec, padding, labels, batching."""

import numpy as np
import pytest
import tensorflow as tf

from tfddn import data

from specs import mini_spec

SPEC = mini_spec(history={"dtype": "int64", "max_length": 2}, rename={"history": "pages"},
                 cpc="price")


def _example(ad, words, age, site, pages, clicks, impressions, cpc):
    def b(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))

    def i(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def f(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    return tf.train.Example(features=tf.train.Features(feature={
        "ad": b([ad]), "words": b(words), "age": f([age]), "site": i([site]),
        "pages": i(pages), "clicks": i([clicks]), "impressions": i([impressions]),
        "cpc": f([cpc]),
    })).SerializeToString()


ROWS = [
    ("a1", ["red", "car", "fast", "cheap"], 3.0, 7, [11, 12, 13], 2, 10, 0.5),
    ("a2", [], 0.5, 8, [], 0, 1, 1.5),
    ("a3", ["boat"], 10.0, 7, [11], 5, 5, 0.25),
]


@pytest.fixture
def shards(tmp_path):
    paths = []
    for shard, rows in enumerate([ROWS[:2], ROWS[2:]]):
        path = str(tmp_path / f"part-{shard}.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for row in rows:
                writer.write(_example(*row))
        paths.append(path)
    return paths


def test_parse_pads_truncates_and_computes_ctr(shards):
    ds = data.make_dataset(shards, SPEC, data.InputConfig(batch_size=8, shuffle=False))
    (features, labels), = list(ds)
    # Shards are interleaved: put the rows back in ROWS order before comparing.
    order = np.argsort(features["ad"].numpy())
    features = {k: tf.gather(v, order) for k, v in features.items()}
    labels = {k: tf.gather(v, order) for k, v in labels.items()}
    assert features["ad"].numpy().tolist() == [b"a1", b"a2", b"a3"]
    assert features["words"].numpy().tolist() == [
        [b"red", b"car", b"fast"], [b"", b"", b""], [b"boat", b"", b""]]
    assert features["pages"].numpy().tolist() == [[11, 12], [-1, -1], [11, -1]]
    assert features["site"].dtype == tf.int64
    np.testing.assert_allclose(features["age"], [3.0, 0.5, 10.0])
    np.testing.assert_allclose(labels["clicks"], [2, 0, 5])
    np.testing.assert_allclose(labels["impressions"], [10, 1, 5])
    np.testing.assert_allclose(labels["ctr"], [0.2, 0.0, 1.0])
    np.testing.assert_allclose(labels["cpc"], [0.5, 1.5, 0.25])


def test_features_from_columns_equal_the_parsed_tfrecords(shards):
    """Scoring rows that never went through TFRecords gives the same tensors."""
    import pyarrow as pa

    ds = data.make_dataset(shards, SPEC, data.InputConfig(batch_size=8, shuffle=False))
    (parsed, _), = list(ds)
    order = np.argsort(parsed["ad"].numpy())
    columns = {name: [row[i] for row in ROWS] for i, name in
               enumerate(("ad", "words", "age", "site", "pages"))}
    columns["words"] = pa.array(columns["words"])  # Arrow lists work too
    built = data.features_from_columns(SPEC, columns)
    for name, value in built.items():
        assert value.dtype == parsed[name].dtype, name
        np.testing.assert_array_equal(value.numpy(), tf.gather(parsed[name], order).numpy())
    with pytest.raises(ValueError, match="'pages' of the spec is missing"):
        data.features_from_columns(SPEC, {k: v for k, v in columns.items() if k != "pages"})


def test_shuffled_epochs_keep_every_example(shards):
    config = data.InputConfig(batch_size=2, shuffle=True, num_epochs=3, seed=1)
    ads = [a for f, _ in data.make_dataset(shards, SPEC, config) for a in f["ad"].numpy()]
    assert sorted(ads) == sorted([b"a1", b"a2", b"a3"] * 3)


def test_glob_and_missing_files(tmp_path, shards):
    ds = data.make_dataset(str(tmp_path / "*.tfrecord.gz"), SPEC,
                           data.InputConfig(batch_size=1, shuffle=False))
    assert sum(int(f["ad"].shape[0]) for f, _ in ds) == 3
    with pytest.raises(FileNotFoundError, match="no TFRecord shards"):
        data.split_files(str(tmp_path), "train")


def test_input_config_validation():
    with pytest.raises(ValueError, match="batch_size=0"):
        data.InputConfig(batch_size=0)
