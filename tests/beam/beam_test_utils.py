"""Helpers for the Beam preprocessing tests: specs, raw files, TFRecord reading."""

from __future__ import annotations

import csv
import glob
import json
import os

from tfddn.spec import FeatureSpec

MARKET_SPEC = {
    "name": "market",
    "log_format": "aggregated",
    "clicks": "clicks",
    "impressions": "impressions",
    "cpc": "cpc",
    "timestamp": "ts",
    "features": {
        "target_id": {"role": "target_categorical", "min_count": 2},
        "title": {"role": "target_tokens", "separator": " "},
        "age": {"role": "target_numeric"},
        "publisher": {"role": "context_categorical"},
        "history": {"role": "history", "separator": "|"},
    },
}
MARKET_HEADER = ["target_id", "title", "age", "publisher", "history",
                 "clicks", "impressions", "cpc", "ts"]
DAY = 86400


def market_spec(**overrides) -> FeatureSpec:
    return FeatureSpec.from_dict({**MARKET_SPEC, **overrides})


def write_spec(path, spec_dict) -> str:
    with open(path, "w") as fh:
        json.dump(spec_dict, fh)
    return str(path)


def write_csv(path, header, rows) -> str:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def write_lines(path, lines) -> str:
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return str(path)


def _value(feature):
    for kind in ("bytes_list", "int64_list", "float_list"):
        if feature.HasField(kind):
            values = list(getattr(feature, kind).value)
            return [v.decode() for v in values] if kind == "bytes_list" else values
    return []


def read_examples(output, split) -> list[dict]:
    """Every `tf.train.Example` of a split as `{key: list of values}`, sorted."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(output, split, "part-*.tfrecord.gz")))
    assert files, f"no {split} shards in {output}"
    out = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        out.append({k: _value(v) for k, v in example.features.feature.items()})
    return sorted(out, key=lambda e: json.dumps(e, sort_keys=True))


def read_vocab(output, name) -> list[str]:
    with open(os.path.join(output, "vocab", f"{name}.txt")) as fh:
        return fh.read().splitlines()


def read_dead_letter(output) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(output, "dead_letter", "rejected-*.jsonl"))):
        with open(path) as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    return rows


def rounded(value, digits: int = 9):
    """Floats to `digits` significant digits (two runs sum in different orders)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item, digits) for item in value]
    return value


def run_outputs(output, metadata: dict, metadata_without=("created_at", "output"),
                digits: int = 9) -> dict:
    """Everything a preprocessing run wrote, in a form two runs can be compared on:
    examples per split (sorted), vocabularies, dead-letter rows (sorted) and the
    metadata without `metadata_without` (and without the dead-letter shard names)."""
    vocabularies = metadata["files"]["vocabulary"]
    metadata = {key: value for key, value in metadata.items() if key not in metadata_without}
    if "files" in metadata:
        metadata["files"] = {k: v for k, v in metadata["files"].items() if k != "dead_letter"}
    return {
        "examples": {split: rounded(read_examples(output, split), digits)
                     for split in ("train", "validation", "eval")},
        "vocabularies": {name: read_vocab(output, name) for name in vocabularies},
        "dead_letter": sorted(read_dead_letter(output),
                              key=lambda r: json.dumps(r, sort_keys=True)),
        "metadata": rounded(metadata, digits),
    }
