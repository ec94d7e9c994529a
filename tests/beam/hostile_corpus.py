"""A corpus of hostile-but-fair raw log files, each with the outcome it must have.

Every row-level case is a record the pipeline must either accept (tricky but valid:
other line endings, a BOM, a quoted line break, a 10 MB field) or dead-letter with a
stated reason; file-level cases must be refused with a message naming the file.
The good rows' click and impression totals are counted here, independently of the
pipeline, so a test can check that nothing valid was lost or double counted.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json

HEADER = ["target_id", "title", "age", "publisher", "history", "clicks", "impressions",
          "cpc", "ts", "note"]  # `note` is not in the spec: a place for huge or odd text
INT64_MAX = 2**63 - 1


@dataclasses.dataclass
class Corpus:
    """Files written into one folder; `expected` reasons count rows, not records."""

    folder: object
    clicks: int = 0
    impressions: int = 0
    accepted: int = 0
    expected: dict = dataclasses.field(default_factory=dict)

    def good(self, i: int, note: str = "") -> list:
        """A valid row (target t{i%4}, publisher p{i%3}) whose counts are tallied."""
        clicks, impressions = i % 3, 3 + i % 4
        self.clicks += clicks
        self.impressions += impressions
        self.accepted += 1
        return [f"t{i % 4}", "red shoe", 1.5, f"p{i % 3}", "x|y", clicks, impressions, 0.5,
                100 + i, note]

    def bad(self, reason: str, rows: int = 1) -> None:
        self.expected[reason] = self.expected.get(reason, 0) + rows


def _csv_text(rows, terminator="\n") -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator=terminator).writerows(rows)
    return out.getvalue()


def _bad_csv(row) -> bytes:
    return (",".join(str(v) for v in row) + "\n").encode("utf-8")


def write_csv_corpus(corpus: Corpus) -> str:
    """Four CSV files sharing one header; returns their glob."""
    folder = corpus.folder
    good = _csv_text([HEADER] + [corpus.good(i) for i in range(12)])
    lines = [good.encode()]
    base = ["t1", "red", 1.5, "p1", "x", 1, 2, 0.5, 100, ""]

    def hostile(reason, **cells):
        corpus.bad(reason)
        lines.append(_bad_csv([cells.get(h, v) for h, v in zip(HEADER, base)]))

    lines.append(b"t1,r\xffd,1.5,p1,x,1,2,0.5,100,\n")  # a byte that is not UTF-8
    corpus.bad("invalid_encoding")
    lines.append("t1,café,1.5,p1,x,1,2,0.5,100,\n".encode("latin-1"))  # mixed encodings
    corpus.bad("invalid_encoding")
    hostile("out_of_range", clicks=2**63)
    hostile("out_of_range", impressions="1e308")
    hostile("out_of_range", impressions=1e30)
    hostile("out_of_range", age="1e39")  # beyond float32
    hostile("unparsable_value", impressions="1_0")  # Python's int() would say 10
    hostile("unparsable_value", target_id="t\x001")  # NUL inside a value
    hostile("malformed_row", note="a,b")  # one cell too many
    # Two valid rows on one key whose impressions sum beyond int64: one record, 2 rows.
    for _ in range(2):
        lines.append(_bad_csv(["big", "red", 1.5, "p1", "x", 0, INT64_MAX, 0.5, 100, ""]))
    corpus.bad("out_of_range", rows=2)
    # Valid but tricky: a quoted line break, a 200 KiB field, a 10 MB line.
    tricky = [corpus.good(100, note="line one\nline two"),
              corpus.good(101, note="q" * 200_000),
              corpus.good(102, note="z" * 10_000_000)]
    lines.append(_csv_text(tricky).encode())
    (folder / "a_main.csv").write_bytes(b"".join(lines))
    # Classic-Mac CR line endings, with a quoted CR inside a field.
    rows = [HEADER] + [corpus.good(200 + i) for i in range(5)]
    rows.append(corpus.good(210, note="before\rafter"))
    (folder / "b_cr.csv").write_bytes(_csv_text(rows, "\r").encode())
    # CRLF with a UTF-8 byte-order mark, gzip-compressed.
    text = "\ufeff" + _csv_text([HEADER] + [corpus.good(300 + i) for i in range(5)], "\r\n")
    (folder / "c_bom.csv.gz").write_bytes(gzip.compress(text.encode("utf-8")))
    return str(folder / "*.csv*")


def write_jsonl_corpus(corpus: Corpus) -> str:
    """Two JSONL files (one with a BOM and CRLF); returns their glob."""
    folder = corpus.folder

    def record(row):
        out = dict(zip(HEADER, row))
        out["title"] = out["title"].split()
        out["history"] = out["history"].split("|")
        return out

    first = [json.dumps(record(corpus.good(400 + i))) for i in range(6)]
    (folder / "a_bom.jsonl").write_bytes(("\ufeff" + "\r\n".join(first) + "\r\n").encode())
    base = record(["t1", "red", 1.5, "p1", "x", 1, 2, 0.5, 100, ""])
    lines = [json.dumps(record(corpus.good(500 + i))).encode() for i in range(6)]

    def hostile(reason, text):
        corpus.bad(reason)
        lines.append(text.encode() if isinstance(text, str) else text)

    hostile("invalid_encoding", json.dumps(base).replace("red", "r\udcffd").encode(
        "utf-8", "surrogateescape"))
    hostile("malformed_row", json.dumps(base)[:-1] + ', "clicks": 0}')  # a key twice
    hostile("malformed_row", '{"target_id": ' + "[" * 100_000 + "]" * 100_000 + "}")
    hostile("unparsable_value", json.dumps({**base, "impressions": "1_0"}))
    hostile("unparsable_value", json.dumps({**base, "impressions": "Infinity"}))
    hostile("out_of_range", json.dumps({**base, "impressions": 2**63}))
    hostile("unparsable_value", json.dumps({**base, "publisher": "p\x001"}))
    hostile("wrong_type", json.dumps({**base, "publisher": {"nested": [1]}}))
    lines.append(json.dumps(record(corpus.good(600, note="n" * 10_000_000))).encode())
    (folder / "b_main.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return str(folder / "*.jsonl")


def truncated_gzip(folder) -> str:
    text = _csv_text([HEADER] + [["t1", "red", 1.5, "p1", "x", 1, 2, 0.5, 100, ""]] * 3000)
    data = gzip.compress(text.encode())
    path = folder / "truncated.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    return str(path)
