"""The Apache Beam preprocessing pipeline of tfddn: raw CTR logs -> TFRecords.

Run it with `python -m beam.preprocess --help`. Modules, in pipeline order:

- `sources`: read CSV / JSONL / Parquet as (source filename, raw row).
- `values`, `validate`: parse + validate + key each row, or dead-letter it.
- `aggregate`: sum clicks / impressions / cpc per (features, time bucket).
- `split`: deterministic train/eval split (by time, or a stable hash).
- `vocabulary`: min-count vocabularies from the training split.
- `stats`, `metadata`: counts and numeric stats as combines -> metadata.json.
- `examples`, `outputs`: tf.train.Example encoding and the output layout.
- `preprocess`: `PreprocessConfig`, `build_pipeline`, `run`.

Nothing is imported here, so workers load only the modules a step needs.
"""
