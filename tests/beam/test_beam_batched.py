"""The batched engine writes what the row-by-row engine writes (issue #15, item 1).

The row engine (`--engine rows`, one Beam element per row) is the reference: on seeded
generated logs and on the hostile corpora, both engines must produce the same examples in
every split, the same vocabulary files, the same dead-letter rows and the same
`metadata.json` (but for the shard file names and the float sums' last bits). The fast
path's pieces are checked on their own too: byte-exact `tf.train.Example`s, blocks cut
anywhere, plain CSV never falling back to the row validator.
"""

import json
import random

import numpy as np
import pyarrow as pa
import pytest
from beam_test_utils import MARKET_SPEC, run_outputs
from hostile_corpus import Corpus, write_csv_corpus, write_jsonl_corpus

from beam import preprocess, sources
from beam.columns import table_schema
from beam.examples import encode_batch, encode_example, example_fields
from beam.sources import BlockReader, text_records
from beam.validate import BatchValidator
from tfddn.spec import FeatureSpec

VOLATILE = ("created_at", "output", "files")
SPLITS = ("train", "validation", "eval")


def _both_engines(tmp_path, **settings) -> tuple[dict, dict]:
    runs = {}
    for engine in ("rows", "batched"):
        output = str(tmp_path / engine)
        metadata = preprocess.run_with(output=output, engine=engine, **settings)
        runs[engine] = run_outputs(output, metadata, metadata_without=VOLATILE)
    return runs["rows"], runs["batched"]


def _assert_same(rows, batched):
    assert batched["metadata"] == rows["metadata"]
    assert batched["dead_letter"] == rows["dead_letter"]
    assert batched["vocabularies"] == rows["vocabularies"]
    for split in SPLITS:
        assert batched["examples"][split] == rows["examples"][split], split


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from tfddn.generate import GenerateConfig, generate

    root = tmp_path_factory.mktemp("generated")
    return generate(GenerateConfig(out_dir=str(root), rows=3000, seed=3, targets=300,
                                   publishers=40))


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "spec.json"
    path.write_text(json.dumps(MARKET_SPEC))
    return str(path)


@pytest.mark.slow
def test_generated_logs_give_the_same_outputs(tmp_path, generated, monkeypatch):
    """Seeded generated logs, cut into many small blocks (every block boundary a chance
    to lose or double a row)."""
    monkeypatch.setattr(sources, "BLOCK_BYTES", 20_000)
    rows, batched = _both_engines(tmp_path, input=generated.logs_path,
                                  spec=generated.spec_path)
    assert all(batched["examples"][split] for split in SPLITS)
    assert batched["metadata"]["rows_read"] == 3000
    _assert_same(rows, batched)


@pytest.mark.slow
@pytest.mark.parametrize("write", [write_csv_corpus, write_jsonl_corpus],
                         ids=["csv", "jsonl"])
def test_hostile_corpora_give_the_same_outputs(tmp_path, spec_path, write, monkeypatch):
    """Every hostile row dead-lettered with the same reason, detail and verbatim row."""
    monkeypatch.setattr(sources, "BLOCK_BYTES", 64)
    pattern = write(Corpus(tmp_path))
    rows, batched = _both_engines(tmp_path, input=pattern, spec=spec_path)
    assert len(rows["dead_letter"]) >= 8
    _assert_same(rows, batched)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet"])
def test_generated_parquet_gives_the_same_outputs(tmp_path, fmt):
    """Parquet, which the batched engine validates row by row inside its batches (JSONL:
    the hostile corpus above)."""
    from tfddn.generate import GenerateConfig, generate

    logs = generate(GenerateConfig(out_dir=str(tmp_path / "logs"), rows=1500, seed=4,
                                   targets=200, publishers=30, format=fmt))
    rows, batched = _both_engines(tmp_path, input=logs.logs_path, spec=logs.spec_path)
    assert batched["metadata"]["rows_read"] == 1500
    _assert_same(rows, batched)


def test_hash_split_without_timestamp_gives_the_same_outputs(tmp_path, generated):
    """The hash eval split (no timestamp), and no cpc."""
    spec = json.loads(open(generated.spec_path).read())
    spec.pop("timestamp"), spec.pop("cpc")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    rows, batched = _both_engines(tmp_path, input=generated.logs_path, spec=str(path),
                                  num_shards=3)
    assert batched["metadata"]["split"]["method"] == "hash"
    _assert_same(rows, batched)


def test_plain_csv_never_falls_back_to_the_row_validator(generated, monkeypatch):
    spec = FeatureSpec.from_dict(json.loads(open(generated.spec_path).read()))
    header = next(iter(__import__("csv").reader([next(text_records(generated.logs_path,
                                                                   "csv"))])))
    validator = BatchValidator(spec, "csv", header)
    calls = []
    monkeypatch.setattr(validator.rows, "validate", lambda raw: calls.append(raw))
    with BlockReader(generated.logs_path, "csv") as reader:
        batch = validator.csv_block(generated.logs_path, reader.next_block(), True)
    assert batch is not None and batch.header_seen
    assert batch.rows_read == 3000 and batch.table.num_rows == 3000
    assert calls == []


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 20])
def test_block_reader_records_are_text_records(tmp_path, block_bytes):
    """Blocks cut anywhere: the exact path yields `text_records`' records."""
    text = ('h1,h2\r\n"a\nb",1\r\n\r\nc,"x""y"\rd,2\n"open,\n\n"\n\ufeffe,3\n'
            'f,"unterminated\n')
    path = tmp_path / "logs.csv"
    path.write_bytes(("\ufeff" + text).encode("utf-8") + b"g,\xff\n")
    with BlockReader(str(path), "csv", block_bytes) as reader:
        got = [record for block in iter(reader.next_block, None)
               for record in reader.records(block)]
    assert got == list(text_records(str(path), "csv"))


def _example_rows(spec, rng, count):
    rows = []
    for i in range(count):
        impressions = rng.choice([1, 2, 300, 2**40, 2**62])
        rows.append({
            "_key": str(i), "_bucket": 1, "_rows": 1,
            "site": rng.choice(["s", "ü€x", "a" * 200, ""]),
            "ad": rng.choice([0, -1, 7, 2**63 - 1, -(2**63)]),
            "words": [rng.choice(["w", "wörd", "x" * 150]) for _ in range(rng.randrange(4))],
            "clicked_ads": [rng.choice([0, -5, 2**40]) for _ in range(rng.randrange(4))],
            "price": rng.choice([0.0, 17.0, 1e-7, -3.5, 1e30]),
            "_clicks": rng.randrange(min(impressions, 1000) + 1),
            "_impressions": impressions, "_cpc_weighted": rng.random() * impressions})
    return rows


def test_encode_batch_is_byte_exact():
    """Column-wise encoding == `tf.train.Example(...).SerializeToString(deterministic=True)`
    for strings (non-ASCII, empty, long), negative and extreme int64s, empty and long
    token lists of both dtypes, floats."""
    import tensorflow as tf

    spec = FeatureSpec.from_dict({
        "name": "t", "log_format": "aggregated", "clicks": "c", "impressions": "i",
        "cpc": "cpc", "features": {
            "site": {"role": "context_categorical"},
            "ad": {"role": "target_categorical", "dtype": "int64"},
            "words": {"role": "target_tokens"},
            "clicked_ads": {"role": "history", "dtype": "int64"},
            "price": {"role": "target_numeric"}}})
    rows = _example_rows(spec, random.Random(0), 400)
    table = pa.Table.from_pylist(rows, schema=table_schema(spec))
    fields = example_fields(spec)
    got = encode_batch(table, fields, True).to_pylist()
    for row, record in zip(rows, got):
        example = {"features": {name: row[name] for name in spec.feature_names},
                   "clicks": row["_clicks"], "impressions": row["_impressions"],
                   "cpc": row["_cpc_weighted"] / row["_impressions"]}
        assert record == encode_example(example, fields, True, tf.train.Example)
    assert len(got) == 400 and np.all([len(r) > 0 for r in got])


def test_tfrecord_frames_are_beams():
    """Vectorised framing == Beam's TFRecord writer, record by record (sliced input too)."""
    import io

    from apache_beam.io.tfrecordio import _TFRecordUtil

    from beam.outputs import tfrecord_frames

    records = [b"", b"a", b"hello" * 100, bytes(range(256)) * 40, b"\x00" * 7]
    expected = io.BytesIO()
    for record in records[1:]:
        _TFRecordUtil.write_record(expected, record)
    assert tfrecord_frames(pa.array(records, pa.binary()).slice(1)) == expected.getvalue()


def test_json_key_is_json_dumps():
    """Keys rebuilt column-wise after the shuffle == `RowValidator`'s `json.dumps` keys, for
    strings JSON escapes (quotes, backslashes, control characters), non-ASCII and non-BMP
    text, int64 extremes, floats, empty and int64 token lists and null buckets."""
    from beam.columns import BUCKET, json_key

    spec = FeatureSpec.from_dict({
        "name": "t", "log_format": "aggregated", "clicks": "c", "impressions": "i",
        "features": {"site": {"role": "context_categorical"},
                     "ad": {"role": "target_categorical", "dtype": "int64"},
                     "words": {"role": "target_tokens"},
                     "h": {"role": "history", "dtype": "int64"},
                     "price": {"role": "target_numeric"}}})
    rng = random.Random(1)
    chars = ["a", "é", "€", '"', "\\", "\t", "\x01", "\x1f", "\x7f", "\u2028", "𝄞", "\b", " "]

    def text():
        return "".join(rng.choice(chars) for _ in range(rng.randrange(6)))

    rows = [{BUCKET: rng.choice([None, 0, -3, 20460]), "site": text(),
             "ad": rng.choice([0, -1, 2**63 - 1, -(2**63)]),
             "words": [text() or "x" for _ in range(rng.randrange(4))],
             "h": [rng.choice([0, -7, 2**40]) for _ in range(rng.randrange(3))],
             "price": rng.choice([0.0, 17.0, 1e-7, -3.5, 1e30, 0.1, 123456789.125])}
            for _ in range(2000)]
    schema = table_schema(spec)
    columns = {name: pa.array([r[name] for r in rows], schema.field(name).type)
               for name in (BUCKET, *spec.feature_names)}
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
    assert json_key(spec, columns).to_pylist() == [
        encoder.encode([r[BUCKET], *(r[name] for name in spec.feature_names)]) for r in rows]
