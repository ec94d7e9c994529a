"""Command-line flags and `--config FILE` values from typed config dataclasses.

The one config mechanism of every command (`tfddn ...`, `python -m beam.preprocess`,
`tfddn serve`): a frozen dataclass per command, one `--flag` per field. A field's
`metadata` says how it shows on the command line:

* `help`: the help text (the default is appended);
* `choices`: allowed values;
* `flag`: the flag's name when it differs from the field's (e.g. `ExportConfig.export_base`
  is `--model_base_path`, the server's name for the same folder);
* `aliases`: older names, accepted but hidden, with a one-line deprecation note;
* `parse`: a function turning the text into the field's value (e.g. `load_spec`);
* `prefix`: for a field that is itself a config dataclass, the prefix of its flags
  (default `"<field>."`, e.g. `--world.pool_size`; `""` flattens it).

`--config FILE` (JSON or YAML, a mapping of flag names to values; a nested config may
be a nested mapping) supplies values that flags given on the command line override.
Lists become tuples (`tower_units: [64, 32]`).

Example:
    >>> parser = argparse.ArgumentParser()
    >>> add_dataclass_arguments(parser, TrainConfig)
    >>> config = parse_config(parser, TrainConfig, ["--data_dir", "d", "--run_dir", "r"])

The module imports only the standard library (YAML lazily), so help is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from typing import Any, Callable, Sequence

__all__ = ["add_config_file_argument", "add_dataclass_arguments", "config_file_values",
           "dataclass_from_args", "merge_config_file", "parse_bool", "parse_config"]

def parse_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def _unwrap_optional(kind):
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # `int | None`
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return kind


def _sequence_parser(item: type) -> Callable[[Any], tuple]:
    def parse(value) -> tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        try:
            return tuple(item(v) for v in value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {item.__name__} values, got {value!r}") from None
    parse.__name__ = f"{item.__name__} list"
    return parse


def _converter(field: dataclasses.Field, kind) -> Callable[[Any], Any] | None:
    """The function turning a flag's text (or a config file's value) into the field's.

    A field's own `parse` runs later, in `dataclass_from_args`, so that its error
    message (e.g. a spec's) reaches the user whole."""
    if "parse" in field.metadata:
        return str
    kind = _unwrap_optional(kind)
    if kind is bool:
        return parse_bool
    if kind in (int, float, str):
        return kind
    if typing.get_origin(kind) is tuple:
        return _sequence_parser(typing.get_args(kind)[0])
    return None


def _flag_name(field: dataclasses.Field, prefix: str) -> str:
    return prefix + field.metadata.get("flag", field.name)


def _dest(flag: str) -> str:
    return flag.replace(".", "__").replace("-", "_")


def _is_config(kind) -> bool:
    return dataclasses.is_dataclass(_unwrap_optional(kind))


def _nested_prefix(field: dataclasses.Field, prefix: str) -> str:
    return prefix + field.metadata.get("prefix", f"{field.name}.")


class _DeprecatedAlias(argparse.Action):
    """A hidden old flag name: stores into the new one's dest, with a note on stderr."""

    def __init__(self, option_strings, dest, new_flag: str, convert=None, is_bool=False,
                 **kwargs):
        self.new_flag, self.convert = new_flag, convert
        if is_bool:
            kwargs.update(nargs="?", const=True)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        noted = parser.__dict__.setdefault("_deprecation_notes", set())  # once per parser
        if option_string not in noted:
            noted.add(option_string)
            print(f"{parser.prog}: note: {option_string} is deprecated; use "
                  f"--{self.new_flag}", file=sys.stderr)
        if self.convert is not None and isinstance(values, str):
            try:
                values = self.convert(values)
            except (argparse.ArgumentTypeError, ValueError) as error:
                parser.error(f"argument {option_string}: {error}")
        setattr(namespace, self.dest, values)


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type,
                            exclude: Sequence[str] = (), prefix: str = "") -> None:
    """Adds one `--flag` per field of the config dataclass `cls` (module docstring).

    Fields without a default are required (checked by `dataclass_from_args`, so a
    `--config` file may supply them); booleans take `--flag` / `--flag false`.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        kind = hints[field.name]
        if _is_config(kind) and "parse" not in field.metadata:
            add_dataclass_arguments(parser, _unwrap_optional(kind),
                                    prefix=_nested_prefix(field, prefix))
            continue
        flag = _flag_name(field, prefix)
        kwargs: dict[str, Any] = {"help": field.metadata.get("help", ""), "dest": _dest(flag)}
        if field.metadata.get("choices"):
            kwargs["choices"] = field.metadata["choices"]
        if field.default is not dataclasses.MISSING:
            shown = field.default
            if isinstance(shown, tuple):
                shown = ",".join(str(v) for v in shown)
            if shown not in (None, "") and "(default" not in kwargs["help"]:
                kwargs["help"] += f" (default: {shown})"
        elif field.default_factory is dataclasses.MISSING:
            kwargs["help"] += " (required)"
        kwargs["default"] = argparse.SUPPRESS  # unset flags leave the dataclass default
        convert = _converter(field, kind)
        is_bool = _unwrap_optional(kind) is bool and "parse" not in field.metadata
        if is_bool:
            kwargs.update(type=parse_bool, nargs="?", const=True, metavar="BOOL")
        elif convert is not None:
            kwargs["type"] = convert
            if "choices" not in kwargs:
                kwargs["metavar"] = field.metadata.get("metavar",
                                                       flag.split(".")[-1].upper())
        parser.add_argument(f"--{flag}", **kwargs)
        for alias in field.metadata.get("aliases", ()):
            parser.add_argument(f"--{prefix}{alias}", action=_DeprecatedAlias, new_flag=flag,
                                convert=None if is_bool else convert, is_bool=is_bool,
                                dest=_dest(flag), default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)


def dataclass_from_args(cls: type, args: argparse.Namespace | dict, prefix: str = ""):
    """The config `cls` from parsed flags (and `--config` values merged under them).

    A nested config starts from its field's default (e.g. `RankConfig.policy` is UCB)
    and takes the flags given for it.

    Raises:
        ValueError: a required field is missing, or the config refuses a value.
    """
    values = vars(args) if isinstance(args, argparse.Namespace) else args
    missing: list[str] = []
    kwargs = _given(cls, values, prefix, missing)
    if missing:
        raise ValueError(f"the following arguments are required: {', '.join(missing)}")
    return cls(**kwargs)


def _given(cls: type, values: dict, prefix: str, missing: list[str]) -> dict[str, Any]:
    """The field values of `cls` that flags (or a config file) gave."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        has_default = (field.default is not dataclasses.MISSING
                       or field.default_factory is not dataclasses.MISSING)
        if _is_config(kind) and "parse" not in field.metadata:
            inner = _given(_unwrap_optional(kind), values, _nested_prefix(field, prefix),
                           missing if not has_default else [])
            if not inner and has_default:
                continue
            base = (field.default_factory() if field.default_factory is not dataclasses.MISSING
                    else field.default)
            kwargs[field.name] = (dataclasses.replace(base, **inner)
                                  if has_default and base is not None
                                  else _unwrap_optional(kind)(**inner))
            continue
        flag = _flag_name(field, prefix)
        if _dest(flag) in values:
            value = values[_dest(flag)]
            if "parse" in field.metadata and isinstance(value, str):
                value = field.metadata["parse"](value)
            kwargs[field.name] = value
        elif not has_default:
            missing.append(f"--{flag}")
    return kwargs


def _flat(values: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_file_values(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """A `--config` file's values by dest, converted and checked like the flags.

    Raises:
        ValueError: the file is not a mapping, names an unknown option or has a bad value.
    """
    if not os.path.isfile(path):
        raise ValueError(f"--config {path!r} is not a file")
    import yaml  # YAML is a superset of JSON

    with open(path) as fh:
        try:
            loaded = yaml.safe_load(fh) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"--config {path}: not JSON or YAML ({error})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"--config {path} must hold a mapping of option -> value. "
                         f"Received: {type(loaded).__name__}")
    actions = {a.option_strings[0][2:]: a for a in parser._actions
               if a.option_strings and a.option_strings[0].startswith("--")}
    for a in parser._actions:  # deprecated aliases are accepted in files too
        if isinstance(a, _DeprecatedAlias):
            actions.setdefault(a.option_strings[0][2:], a)
    values = {}
    for key, value in _flat(loaded).items():
        action = actions.get(key)
        if action is None or key in ("help", "config"):
            known = ", ".join(sorted(k for k in actions if k not in ("help", "config")))
            raise ValueError(f"--config {path}: unknown option {key!r}; known: {known}")
        convert = action.type if not isinstance(action, _DeprecatedAlias) else action.convert
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if convert is not None and value is not None:
            try:
                value = convert(str(value) if not isinstance(value, str) else value)
            except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
                raise ValueError(f"--config {path}: option {key!r}: {error}") from None
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"--config {path}: option {key!r} must be one of "
                             f"{list(action.choices)}. Received: {value!r}")
        values[action.dest] = value
    return values


def add_config_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="JSON or YAML file of these options (flags given here win)")


def merge_config_file(args: argparse.Namespace, parser: argparse.ArgumentParser
                      ) -> argparse.Namespace:
    """Adds to `args` the `--config FILE` values that no command-line flag gave."""
    if getattr(args, "config", None):
        for dest, value in config_file_values(args.config, parser).items():
            if dest not in vars(args):
                setattr(args, dest, value)
    return args


def parse_config(parser: argparse.ArgumentParser, cls: type | Sequence[type],
                 argv: Sequence[str] | None = None, known_only: bool = False):
    """Parses `argv` (with `--config FILE` values under the flags) into config(s).

    Returns the config (or a tuple of configs for several classes), the namespace, and
    with `known_only` the unparsed rest (e.g. Beam pipeline options).
    """
    if not any(a.dest == "config" for a in parser._actions):
        add_config_file_argument(parser)
    if known_only:
        args, rest = parser.parse_known_args(argv)
    else:
        args, rest = parser.parse_args(argv), []
    merge_config_file(args, parser)
    classes = cls if isinstance(cls, (list, tuple)) else [cls]
    configs = tuple(dataclass_from_args(c, args) for c in classes)
    config = configs if isinstance(cls, (list, tuple)) else configs[0]
    return (config, args, rest) if known_only else (config, args)
