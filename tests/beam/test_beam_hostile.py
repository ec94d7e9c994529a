"""Hostile inputs (issue #12): every bad row dead-lettered with its reason, every bad file
refused by name, the accounting reconciled, and nothing valid lost or double counted."""

import json
import os

import pandas as pd
import pytest
from beam_test_utils import MARKET_SPEC, read_dead_letter, write_lines
from hostile_corpus import Corpus, truncated_gzip, write_csv_corpus, write_jsonl_corpus

from beam import preprocess
from beam.values import REASONS


def _check_run(metadata, output, corpus):
    """Reasons, reconciliation and the accepted totals against the corpus's own count."""
    expected = {code: corpus.expected.get(code, 0) for code in REASONS}
    assert metadata["rejected_by_reason"] == expected
    assert metadata["rows_aggregated"] == corpus.accepted
    assert metadata["rows_read"] == corpus.accepted + sum(expected.values())
    assert metadata["rows_read"] == metadata["rows_aggregated"] + metadata["rows_rejected"]
    assert sum(metadata["clicks"].values()) == corpus.clicks
    assert sum(metadata["impressions"].values()) == corpus.impressions
    dead = read_dead_letter(output)
    assert sum(r.get("rows", 1) for r in dead) == metadata["rows_rejected"]
    assert all(r["reason"] in REASONS and r["detail"] for r in dead)
    return dead


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "spec.json"
    path.write_text(json.dumps(MARKET_SPEC))
    return str(path)


def test_csv_corpus(tmp_path, spec_path):
    corpus = Corpus(tmp_path)
    pattern = write_csv_corpus(corpus)
    output = str(tmp_path / "out")
    metadata = preprocess.run(["--input", pattern, "--spec", spec_path, "--out_dir", output])
    dead = _check_run(metadata, output, corpus)
    undecodable = [r for r in dead if r["reason"] == "invalid_encoding"]
    assert {r["row"] for r in undecodable} == {"t1,r\\xffd,1.5,p1,x,1,2,0.5,100,",
                                               "t1,caf\\xe9,1.5,p1,x,1,2,0.5,100,"}
    assert all(r["source"].endswith("a_main.csv") for r in undecodable)
    [overflow] = [r for r in dead if r.get("rows") == 2]
    assert overflow["reason"] == "out_of_range" and "int64" in overflow["detail"]


def test_jsonl_corpus(tmp_path, spec_path):
    corpus = Corpus(tmp_path)
    pattern = write_jsonl_corpus(corpus)
    output = str(tmp_path / "out")
    metadata = preprocess.run(["--input", pattern, "--spec", spec_path, "--out_dir", output])
    dead = _check_run(metadata, output, corpus)
    twice = [r for r in dead if "more than once" in r["detail"]]
    assert len(twice) == 1 and twice[0]["reason"] == "malformed_row"


def _refused(tmp_path, spec_path, pattern, *extra):
    output = tmp_path / "refused"
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        preprocess.run(["--input", pattern, "--spec", spec_path, "--out_dir", str(output),
                        *extra])
    # Nothing a later step could mistake for a finished run.
    assert not (output / "metadata.json").exists()
    assert not (output / "train").exists()
    return str(info.value)


def test_truncated_gzip_is_refused_by_name(tmp_path, spec_path):
    path = truncated_gzip(tmp_path)
    message = _refused(tmp_path, spec_path, path)
    assert message.startswith(f"malformed input file: {path}: cannot be read to its end")


def test_corrupt_parquet_is_refused_by_name(tmp_path, spec_path):
    frame = pd.DataFrame({"target_id": ["t1"], "title": [["red"]], "age": [1.0],
                          "publisher": ["p1"], "history": [["x"]], "clicks": [1],
                          "impressions": [2], "cpc": [0.1], "ts": [5]})
    frame.to_parquet(tmp_path / "a.parquet")
    (tmp_path / "b.parquet").write_bytes(b"PAR1" + os.urandom(2000))  # read in the pipeline
    message = _refused(tmp_path, spec_path, str(tmp_path / "*.parquet"))
    assert f"{tmp_path / 'b.parquet'}: not readable as Parquet" in message
    (tmp_path / "a.parquet").write_bytes(os.urandom(100))  # the first file: at launch
    message = _refused(tmp_path, spec_path, str(tmp_path / "*.parquet"))
    assert f"{tmp_path / 'a.parquet'}: not readable as Parquet" in message


def test_duplicate_header_binary_file_and_empty_input_are_refused(tmp_path, spec_path):
    header = "target_id,title,age,publisher,history,clicks,impressions,cpc,ts"
    dup = write_lines(tmp_path / "dup.csv", [header + ",clicks", "t1,red,1,p1,x,0,2,0.1,5,9"])
    assert "names column(s) ['clicks'] more than once" in _refused(tmp_path, spec_path, dup)
    os.remove(dup)
    write_lines(tmp_path / "a.csv", [header, "t1,red,1,p1,x,0,2,0.1,5"])
    (tmp_path / "b.csv").write_bytes(os.urandom(5000).replace(b"\n", b"") + b"\n1,2\n")
    message = _refused(tmp_path, spec_path, str(tmp_path / "*.csv"))
    assert str(tmp_path / "b.csv") in message
    empty = write_lines(tmp_path / "empty.jsonl", ["", "  "])
    assert "hold no rows" in _refused(tmp_path, spec_path, empty)


def test_a_dtype_contradicting_the_data_fails_with_the_reasons(tmp_path):
    spec = json.loads(json.dumps(MARKET_SPEC))
    spec["features"]["publisher"]["dtype"] = "int64"  # the data has p1, p2, ...
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    header = "target_id,title,age,publisher,history,clicks,impressions,cpc,ts"
    rows = [f"t{i},red,1,p{i},x,0,2,0.1,5" for i in range(10)]
    path = write_lines(tmp_path / "logs.csv", [header, *rows, "t9,red,1,7,x,0,2,0.1,5"])
    message = _refused(tmp_path, str(spec_path), path)
    assert message.startswith("10 of 11 rows rejected (91% > --max_rejected_share 0.5)")
    assert "wrong_type 10" in message and "dtype int64" in message
    dead = read_dead_letter(str(tmp_path / "refused"))  # kept for the diagnosis
    assert len(dead) == 10
    # Above the threshold the same run succeeds and keeps the one good row.
    metadata = preprocess.run(["--input", path, "--spec", str(spec_path), "--out_dir",
                               str(tmp_path / "refused"), "--max_rejected_share", "0.95"])
    assert metadata["rows_aggregated"] == 1


def test_a_killed_run_leaves_nothing_and_a_rerun_needs_no_overwrite(tmp_path, spec_path):
    header = "target_id,title,age,publisher,history,clicks,impressions,cpc,ts"
    path = write_lines(tmp_path / "logs.csv", [header, "t1,red,1,p1,x,0,2,0.1,5"])
    output = tmp_path / "out"
    # What a run killed mid-way leaves: its staging folder and a half-promoted shard.
    (output / "_staging" / "train").mkdir(parents=True)
    (output / "_staging" / "spec.json").write_text("{}")
    (output / "train").mkdir()
    (output / "train" / "part-00000-of-00001.tfrecord.gz").write_bytes(b"partial")
    (output / "spec.json").write_text("{}")
    metadata = preprocess.run(["--input", path, "--spec", spec_path, "--out_dir", str(output)])
    assert metadata["rows_aggregated"] == 1
    assert not (output / "_staging").exists()
    assert sorted(os.listdir(output)) == ["dead_letter", "eval", "metadata.json", "spec.json",
                                          "train", "validation", "vocab"]
    with pytest.raises(FileExistsError, match="finished run"):  # a finished run is guarded
        preprocess.run(["--input", path, "--spec", spec_path, "--out_dir", str(output)])
