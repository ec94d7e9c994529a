"""One run per dead-letter reason: the bad row lands there verbatim, the counts reconcile."""

import json

import pandas as pd
import pytest
from beam_test_utils import MARKET_HEADER, MARKET_SPEC, read_dead_letter, write_lines

from beam.sources import printable
from beam.values import REASONS

# The publisher is an int64 categorical here, so a non-integer publisher is wrong_type.
SPEC = json.loads(json.dumps(MARKET_SPEC))
SPEC["features"]["publisher"]["dtype"] = "int64"
GOOD = ["t1,red shoe,1.5,11,x|y,1,10,0.5,100",
        "t2,blue,2,12,,0,5,0.2,86500"]
BAD_CSV = {  # reason: (raw line, text the detail must contain)
    "invalid_encoding": ("t3,r\udcffd,3,13,x,1,10,0.5,100", "not UTF-8"),  # byte 0xff
    "malformed_row": ("t3,red,3,13,x,1,10,0.5", "found 8"),
    "missing_field": ("t3,red,,13,x,1,10,0.5,100", "'age'"),
    "unparsable_value": ("t3,red,3,13,x,1,2.5,0.5,100", "'2.5'"),
    "wrong_type": ("t3,red,3,p13,x,1,10,0.5,100", "'p13'"),
    "negative_count": ("t3,red,3,13,x,1,10,-0.5,100", "'cpc'"),
    "clicks_exceed_impressions": ("t3,red,3,13,x,11,10,0.5,100", "'clicks'"),
    "zero_impressions": ("t3,red,3,13,x,0,0,0.5,100", "'impressions'"),
    "out_of_range": ("t3,red,3,13,x,1,9223372036854775808,0.5,100", "int64"),
}


def _expected_reasons(**counts):
    return {code: counts.get(code, 0) for code in REASONS}


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    """One run over good rows, a blank line and one bad row per reason code."""
    from beam import preprocess

    root = tmp_path_factory.mktemp("dead_letter")
    lines = [",".join(MARKET_HEADER), GOOD[0], "", *(bad for bad, _ in BAD_CSV.values()),
             "   ", GOOD[1]]
    path = str(root / "logs.csv")
    with open(path, "w", errors="surrogateescape") as fh:  # the undecodable byte as is
        fh.write("\n".join(lines) + "\n")
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    output = str(root / "out")
    metadata = preprocess.run(["--input", path, "--spec", str(spec_path), "--out_dir", output,
                               "--max_rejected_share", "1"])
    return metadata, {r["reason"]: r for r in read_dead_letter(output)}


def test_counts_reconcile(csv_run):
    metadata, _ = csv_run
    assert metadata["rows_read"] == 2 + len(BAD_CSV)  # blank lines are not rows
    assert metadata["rows_aggregated"] == 2
    assert metadata["rows_rejected"] == len(BAD_CSV)
    assert metadata["rows_read"] == metadata["rows_aggregated"] + metadata["rows_rejected"]
    assert metadata["rejected_by_reason"] == _expected_reasons(**dict.fromkeys(BAD_CSV, 1))
    examples, impressions = metadata["examples"], metadata["impressions"]
    assert set(examples) == set(impressions) == {"train", "validation", "eval"}
    assert (examples["train"] + examples["validation"], examples["eval"]) == (1, 1)
    assert (impressions["train"] + impressions["validation"], impressions["eval"]) == (10, 5)


@pytest.mark.parametrize("reason", REASONS)
def test_each_reason_code(reason, csv_run):
    _, records = csv_run
    bad, named = BAD_CSV[reason]
    record = records[reason]
    assert record["row"] == printable(bad)  # verbatim; a byte that is not UTF-8 as \xNN
    assert record["source"].endswith("logs.csv")
    assert named in record["detail"]


def test_jsonl_malformed_and_missing(tmp_path, run_preprocess):
    good = {"target_id": "t1", "title": "red", "age": 1, "publisher": "p1", "history": [],
            "clicks": 1, "impressions": 2, "cpc": 0.1, "ts": 5}
    lines = [json.dumps(good), "{not json", "[1, 2, 3]", "",
             json.dumps({k: v for k, v in good.items() if k != "cpc"}),
             json.dumps({**good, "publisher": None})]
    metadata, output = run_preprocess(write_lines(tmp_path / "logs.jsonl", lines), MARKET_SPEC,
                                      "--max_rejected_share", "1")
    assert (metadata["rows_read"], metadata["rows_aggregated"], metadata["rows_rejected"]) == (
        5, 1, 4)
    assert metadata["rejected_by_reason"] == _expected_reasons(malformed_row=2, missing_field=2)
    rows = sorted(r["row"] for r in read_dead_letter(output))
    assert rows == sorted(lines[1:3] + lines[4:])


def test_parquet_dead_letter_keeps_the_row_dict(tmp_path, run_preprocess):
    frame = pd.DataFrame({"target_id": ["t1", "t2"], "title": ["red", "blue"], "age": [1.0, 2.0],
                          "publisher": ["p1", "p2"], "history": [["x"], []],
                          "clicks": [1, 3], "impressions": [2, 2], "cpc": [0.1, 0.2],
                          "ts": [5, 6]})
    path = tmp_path / "logs.parquet"
    frame.to_parquet(path)
    metadata, output = run_preprocess(path, MARKET_SPEC)
    assert metadata["rejected_by_reason"] == _expected_reasons(clicks_exceed_impressions=1)
    [record] = read_dead_letter(output)
    assert record["row"] == {"target_id": "t2", "title": "blue", "age": 2.0, "publisher": "p2",
                             "history": [], "clicks": 3, "impressions": 2, "cpc": 0.2, "ts": 6}
