"""The one config-and-flags mechanism (`tfddn.flags`), the flag vocabulary across
commands, help without TensorFlow and a quiet start."""

import argparse
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tfddn import cli, configs, flags


@dataclasses.dataclass(frozen=True)
class _Inner:
    size: int = dataclasses.field(default=3, metadata={"help": "size"})
    names: tuple[str, ...] = dataclasses.field(default=("a",), metadata={"help": "names"})


@dataclasses.dataclass(frozen=True)
class _Outer:
    path: str = dataclasses.field(metadata={"help": "required", "flag": "out_dir",
                                            "aliases": ("output",)})
    rate: float = dataclasses.field(default=0.5, metadata={"help": "rate"})
    on: bool = dataclasses.field(default=False, metadata={"help": "switch"})
    inner: _Inner = dataclasses.field(default_factory=_Inner, metadata={"help": "nested"})
    flat: _Inner = dataclasses.field(default_factory=lambda: _Inner(size=7),
                                     metadata={"prefix": "flat_"})


def _parse(argv):
    parser = argparse.ArgumentParser(prog="t")
    flags.add_dataclass_arguments(parser, _Outer)
    return flags.parse_config(parser, _Outer, argv)[0]


def test_flags_build_nested_configs_with_prefixes():
    config = _parse(["--out_dir", "o", "--rate", "0.25", "--on", "--inner.size", "5",
                     "--inner.names", "x,y", "--flat_size", "9"])
    assert config == _Outer("o", 0.25, True, _Inner(5, ("x", "y")), _Inner(9, ("a",)))
    assert _parse(["--out_dir", "o", "--on", "false"]).on is False
    assert _parse(["--out_dir", "o"]).flat == _Inner(size=7)  # the field's own default


def test_missing_required_flag_is_a_value_error():
    with pytest.raises(ValueError, match="required: --out_dir"):
        _parse(["--rate", "1"])


def test_deprecated_alias_works_with_a_note(capsys):
    assert _parse(["--output", "o"]).path == "o"
    assert "--output is deprecated; use --out_dir" in capsys.readouterr().err
    help_text = argparse.ArgumentParser(prog="t")
    flags.add_dataclass_arguments(help_text, _Outer)
    assert "--output" not in help_text.format_help()  # hidden


def test_config_file_values_under_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("out_dir: from_file\nrate: 0.75\ninner:\n  size: 11\n  names: [p, q]\n")
    config = _parse(["--config", str(path), "--rate", "0.1"])
    assert config == _Outer("from_file", 0.1, False, _Inner(11, ("p", "q")), _Inner(7))
    path.write_text(json.dumps({"output": "old-name", "flat_size": 2}))
    assert _parse(["--config", str(path)]) == _Outer("old-name", flat=_Inner(2))


@pytest.mark.parametrize("text, message", [
    ("rates: 1", "unknown option 'rates'"),
    ("out_dir: o\nrate: fast", "option 'rate'"),
    ("- a\n- b", "must hold a mapping"),
])
def test_config_file_errors_name_the_problem(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        _parse(["--config", str(path)])


def _options(command: str, sub: str | None = None) -> set[str]:
    parser = cli.build_parser(command)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = action.choices[command]
    if sub:
        p = next(a for a in p._actions
                 if isinstance(a, argparse._SubParsersAction)).choices[sub]
    return {s for a in p._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def test_one_vocabulary_across_commands():
    shown = {name: _options(name) for name, c in cli.COMMANDS.items()
             if name not in ("serve", "explain")}
    for sub in ("importance", "sample", "attention"):
        shown[f"explain {sub}"] = _options("explain", sub)
    everything = set().union(*shown.values())
    for old in ("--output", "--export_base", "--model", "--ucb_c", "--verbose"):
        assert old not in everything, old
    assert "--out_dir" in shown["preprocess"] and "--out_dir" in shown["demo"]
    assert "--model_base_path" in shown["export"] and "--kind" in shown["simulate"]
    assert "--c" in shown["demo"] and "--c" in shown["rank"]
    for name, options in shown.items():
        assert "--config" in options, name


def test_old_names_still_parse(capsys):
    parser = cli.build_parser("simulate")
    args = parser.parse_args(["simulate", "--out_dir", "x", "--model", "mdn"])
    assert flags.dataclass_from_args(cli._load(cli.COMMANDS["simulate"].configs[0]),
                                     args).model == "mdn"
    assert "--model is deprecated; use --kind" in capsys.readouterr().err


def test_one_mc_samples_default():
    from tfddn.simulation.simulator import SimulationConfig

    defaults = {cls.__name__: {f.name: f.default for f in dataclasses.fields(cls)}
                ["mc_samples"] for cls in (
                    configs.ExportConfig, configs.PredictConfig, configs.RankConfig,
                    configs.OPEConfig, configs.ImportanceConfig, configs.SampleConfig,
                    SimulationConfig)}
    assert set(defaults.values()) == {configs.MC_SAMPLES}, defaults
    with pytest.raises(ValueError, match="mc_samples must be >= 2"):
        configs.ExportConfig("run", "base", mc_samples=1)
    configs.ImportanceConfig("run", "data", mc_samples=0)  # 0 skips the model stddev


_HELP_WITHOUT_TF = """
import sys, contextlib, io
from tfddn import cli
names = [n for n in cli.COMMANDS if n != "explain"] + ["explain importance", "explain sample"]
for name in names:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        cli.main([*name.split(), "--help"])
    assert "usage: tfddn" in out.getvalue(), (name, out.getvalue()[:200])
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    cli.main(["--help"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(len(names), loaded)
"""


def test_every_help_without_tensorflow():
    out = subprocess.run([sys.executable, "-c", _HELP_WITHOUT_TF], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"{len(cli.COMMANDS) + 1} []", out


def test_a_user_error_after_tensorflow_starts_is_one_quiet_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "tfddn.cli", "train", "--data_dir", str(tmp_path / "none"),
         "--run_dir", str(tmp_path / "run")], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "tensorflow" not in result.stdout.lower()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfddn: error: "), result.stderr
    verbose = subprocess.run(
        [sys.executable, "-m", "tfddn.cli", "train", "--data_dir", str(tmp_path / "none"),
         "--run_dir", str(tmp_path / "run"), "--verbose"], capture_output=True, text=True,
        env=env)
    assert verbose.returncode == 2 and len(verbose.stderr.strip().splitlines()) > 1


def test_train_verbose_n_is_the_old_name_of_progress(capsys):
    from tfddn.cli import _old_progress_flag

    assert _old_progress_flag(["train", "--data_dir", "d", "--verbose", "2"]) == [
        "train", "--data_dir", "d", "--progress", "2"]
    assert "--verbose 2 is deprecated; use --progress 2" in capsys.readouterr().err
    assert _old_progress_flag(["train", "--verbose"]) == ["train", "--verbose"]  # the logs
    assert _old_progress_flag(["evaluate", "--verbose", "2"])[1] == "--verbose"
