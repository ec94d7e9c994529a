"""User errors print one line and exit 2; bugs and `--debug` keep the traceback."""

import json

import pytest

from tfddn import cli
from tfddn.errors import run_main

HEADER = "target_id,publisher,clicks,impressions"
SPEC = {"log_format": "aggregated", "clicks": "clicks", "impressions": "impressions",
        "features": {"target_id": {"role": "target_categorical"},
                     "publisher": {"role": "context_categorical"}}}


def _one_line_error(capsys, argv, *fragments):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("tfddn: error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in errors[0]
    return errors[0]


def test_user_errors_are_one_line(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    logs = tmp_path / "logs.csv"
    logs.write_text(f"{HEADER}\nt1,p1,1,2\nt2,p1,0,3\n")
    out = str(tmp_path / "out")
    _one_line_error(capsys, ["preprocess", "--input", str(tmp_path / "none*.csv"), "--spec",
                             str(spec), "--out_dir", out], "no file matches")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SPEC, "features": {**SPEC["features"], "target_id": {
        "role": "target_categorical", "min_count": True}}}))
    _one_line_error(capsys, ["preprocess", "--input", str(logs), "--spec", str(bad),
                             "--out_dir", out], "min_count must be an integer")
    assert cli.main(["preprocess", "--input", str(logs), "--spec", str(spec), "--out_dir",
                     out]) == 0
    _one_line_error(capsys, ["preprocess", "--input", str(logs), "--spec", str(spec),
                             "--out_dir", out], "already holds a finished run", "--overwrite")
    _one_line_error(capsys, ["train", "--data_dir", str(tmp_path), "--run_dir",
                             str(tmp_path / "run"), "--kind", "ddn"],
                    "not a finished `tfddn preprocess` output")
    with pytest.raises(FileNotFoundError):  # --debug: the traceback
        cli.main(["train", "--data_dir", str(tmp_path), "--run_dir", str(tmp_path / "run"),
                  "--kind", "ddn", "--debug"])


def test_bugs_keep_their_traceback():
    def broken(argv):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_main(broken, [])
    assert run_main(lambda argv: None, ["--debug"]) == 0
