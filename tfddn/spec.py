"""The feature spec: one file that names every column's role.

Beam preprocessing, `tfddn.data`, training, export and serving all read the same
spec, so nothing downstream is hard-coded to the bundled generator's columns.
A spec is JSON or YAML:

```json
{
  "name": "marketplace",
  "log_format": "aggregated",
  "clicks": "clicks", "impressions": "impressions", "cpc": "cpc", "timestamp": "ts",
  "features": {
    "target_id":   {"role": "target_categorical", "min_count": 3},
    "title":       {"role": "target_tokens", "separator": " ", "max_length": 8},
    "age_days":    {"role": "target_numeric"},
    "publisher_id": {"role": "context_categorical"},
    "history":     {"role": "history", "separator": "|", "max_length": 10}
  }
}
```

`log_format` is `aggregated` (each row carries `clicks` and `impressions` columns) or
`impressions` (one row per recommendation with a 0/1 `clicked` column). After
preprocessing, TFRecords hold every feature under its own name plus the reserved
label keys `clicks`, `impressions` and `cpc`, whatever the raw columns were called.

This module has no TensorFlow or Beam dependency on purpose: Beam workers import it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

__all__ = [
    "CATEGORICAL_ROLES",
    "FEATURE_ROLES",
    "LABEL_KEYS",
    "SEQUENCE_ROLES",
    "Feature",
    "FeatureSpec",
    "SpecError",
    "load_spec",
    "split_cell",
]

FEATURE_ROLES = (
    "target_categorical",
    "target_numeric",
    "target_tokens",
    "context_categorical",
    "context_numeric",
    "history",
)
CATEGORICAL_ROLES = ("target_categorical", "context_categorical")
SEQUENCE_ROLES = ("target_tokens", "history")
NUMERIC_ROLES = ("target_numeric", "context_numeric")
LOG_FORMATS = ("aggregated", "impressions")
# Keys the preprocessed TFRecords reserve for labels; no feature may use them.
LABEL_KEYS = ("clicks", "impressions", "cpc")
_DTYPES = {"string", "int64"}
_DEFAULT_MAX_LENGTH = 16


class SpecError(ValueError):
    """A feature spec is invalid; the message names the offending field."""


PAD_STRING = ""
PAD_INT = -1  # int64 token lists / histories; never a real id in the vocabularies


@dataclasses.dataclass(frozen=True)
class Feature:
    """One model input column.

    Attributes:
        name: column name in the raw logs, the TFRecords and the serving API.
        role: one of `FEATURE_ROLES`.
        dtype: raw value type of categorical, token and history values:
            `"string"` or `"int64"`. Numeric features are always float.
        min_count: vocabulary threshold. A value seen in fewer than `min_count`
            training impressions gets no embedding of its own and maps to OOV.
        separator: how a token list or history is joined in a CSV cell (JSONL and
            Parquet may also hold real lists).
        max_length: token lists and histories are truncated/padded to this length.
    """

    name: str
    role: str
    dtype: str = "string"
    min_count: int = 1
    separator: str = " "
    max_length: int = _DEFAULT_MAX_LENGTH

    def __post_init__(self):
        where = f"features.{self.name}"
        if not self.name or not isinstance(self.name, str):
            raise SpecError(f"features: a feature name must be a non-empty string. "
                            f"Received: {self.name!r}")
        if self.role not in FEATURE_ROLES:
            raise SpecError(f"{where}.role must be one of {list(FEATURE_ROLES)}. "
                            f"Received: role={self.role!r}")
        if self.role in NUMERIC_ROLES:
            if self.dtype not in ("string", "float32"):  # "string" is the default
                raise SpecError(f"{where}.dtype: numeric features are float32. "
                                f"Received: dtype={self.dtype!r}")
            object.__setattr__(self, "dtype", "float32")
        elif not isinstance(self.dtype, str) or self.dtype not in _DTYPES:
            raise SpecError(f"{where}.dtype must be one of {sorted(_DTYPES)}. "
                            f"Received: dtype={self.dtype!r}")
        if not _is_int(self.min_count) or self.min_count < 1:
            raise SpecError(f"{where}.min_count must be an integer >= 1. "
                            f"Received: min_count={self.min_count!r}")
        if not _is_int(self.max_length) or self.max_length < 1:
            raise SpecError(f"{where}.max_length must be an integer >= 1. "
                            f"Received: max_length={self.max_length!r}")
        if not isinstance(self.separator, str) or not self.separator:
            raise SpecError(f"{where}.separator must be a non-empty string. "
                            f"Received: separator={self.separator!r}")

    @property
    def tower(self) -> str:
        """`"target"` or `"context"` (a browsing history describes the context)."""
        return "target" if self.role.startswith("target_") else "context"

    @property
    def is_categorical(self) -> bool:
        return self.role in CATEGORICAL_ROLES

    @property
    def is_numeric(self) -> bool:
        return self.role in NUMERIC_ROLES

    @property
    def is_sequence(self) -> bool:
        return self.role in SEQUENCE_ROLES

    @property
    def has_vocabulary(self) -> bool:
        """Categorical, token-list and history features are looked up in a vocabulary."""
        return not self.is_numeric

    @property
    def pad(self):
        """The filler of a padded token list / history: -1 (int64) or "" (string)."""
        return PAD_INT if self.dtype == "int64" else PAD_STRING

    def items(self, value) -> list:
        """A token list / history cell as its list of values: a string is split by the
        separator, a list (or array) taken as is; empty items and padding dropped; int64
        items as ints. The value codec every client and the exported graph share."""
        parts = split_cell(value, self.separator)
        if self.dtype == "int64":
            return [int(p) for p in parts if p != "" and p != PAD_INT]
        return [p.decode() if isinstance(p, bytes) else str(p) for p in parts
                if p not in ("", b"")]

    def raw(self, value):
        """A cell as it is logged, as the exported signatures take it: a token list /
        history as one separator-joined string, anything else unchanged."""
        if not self.is_sequence:
            return value
        return self.separator.join(str(item) for item in self.items(value))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        del out["name"]
        if self.is_numeric:
            for key in ("min_count", "separator", "max_length"):
                out.pop(key)
        elif not self.is_sequence:
            out.pop("separator")
            out.pop("max_length")
        return out


def split_cell(value, separator: str) -> list:
    """A token list / history cell's items before parsing: a string split by the
    separator, a list or array as is, None as no items (nothing dropped or parsed yet).
    `Feature.items` and the Beam validation (`beam.values.parse_sequence`) both start here.

    Raises:
        TypeError: `value` is neither a string nor a sequence of items.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return value.split(separator)
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist"):  # NumPy / Arrow arrays
        value = value.tolist()
        return value if isinstance(value, list) else [value]
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"a token list must be a list or a {separator!r}-separated string. "
                        f"Received: {value!r}") from None


_FEATURE_KEYS = {f.name for f in dataclasses.fields(Feature)} - {"name"}
_SPEC_KEYS = {"name", "log_format", "clicks", "impressions", "clicked", "cpc",
              "timestamp", "time_bucket_seconds", "features"}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Roles of every raw column, read by every stage of tfddn.

    Attributes:
        features: the model inputs, in spec order.
        log_format: `"aggregated"` or `"impressions"`.
        clicks, impressions: raw column names of the counts (aggregated logs).
        clicked: raw column name of the 0/1 click flag (impression-level logs).
        cpc: optional raw column with the cost per click (revenue = clicks x CPC).
        timestamp: optional raw column (unix seconds or ISO-8601). When present,
            rows are aggregated per time bucket and train/eval is split by time.
        time_bucket_seconds: width of the aggregation bucket (a day by default).
        name: a label for the dataset.
    """

    features: tuple[Feature, ...]
    log_format: str = "aggregated"
    clicks: str | None = None
    impressions: str | None = None
    clicked: str | None = None
    cpc: str | None = None
    timestamp: str | None = None
    time_bucket_seconds: int = 86400
    name: str = "default"

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(self.features))
        if self.log_format not in LOG_FORMATS:
            raise SpecError(f"log_format must be one of {list(LOG_FORMATS)}. "
                            f"Received: log_format={self.log_format!r}")
        if self.log_format == "aggregated":
            for key in ("clicks", "impressions"):
                if not getattr(self, key):
                    raise SpecError(f"{key}: aggregated logs need the name of the "
                                    f"{key} column. Received: {key}=None")
            if self.clicked:
                raise SpecError("clicked: only impression-level logs have a click flag; "
                                f"Received: clicked={self.clicked!r} with log_format='aggregated'")
        else:
            if not self.clicked:
                raise SpecError("clicked: impression-level logs need the name of the 0/1 "
                                "click column. Received: clicked=None")
            for key in ("clicks", "impressions"):
                if getattr(self, key):
                    raise SpecError(f"{key}: impression-level logs have no {key} column "
                                    f"(use log_format='aggregated'). Received: "
                                    f"{key}={getattr(self, key)!r}")
        if not _is_int(self.time_bucket_seconds) or self.time_bucket_seconds < 1:
            raise SpecError("time_bucket_seconds must be an integer >= 1. "
                            f"Received: time_bucket_seconds={self.time_bucket_seconds!r}")
        if not self.features:
            raise SpecError("features: the spec names no features")
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(f"features: duplicate feature names {dupes}")
        for f in self.features:
            if f.name in LABEL_KEYS:
                raise SpecError(f"features.{f.name}: the name is reserved for a label "
                                f"in the TFRecords {list(LABEL_KEYS)}; rename the feature")
        used = set(names)
        for key in self.label_columns:
            col = getattr(self, key)
            if col in used:
                raise SpecError(f"{key}: column {col!r} is also used as a feature or label")
            used.add(col)
        towers = {f.tower for f in self.features}
        for tower in ("target", "context"):
            if tower not in towers:
                raise SpecError(f"features: the spec needs at least one {tower} feature "
                                f"(roles {[r for r in FEATURE_ROLES if _tower(r) == tower]})")

    # -- views ---------------------------------------------------------------

    @property
    def label_columns(self) -> tuple[str, ...]:
        """Spec keys (not column names) of the label/metadata columns in use."""
        keys = ("clicks", "impressions", "clicked", "cpc", "timestamp")
        return tuple(k for k in keys if getattr(self, k))

    @property
    def raw_columns(self) -> tuple[str, ...]:
        """Every raw column the preprocessing reads: features, then labels."""
        return tuple(f.name for f in self.features) + tuple(
            getattr(self, k) for k in self.label_columns)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature {name!r} in spec; features: {list(self.feature_names)}")

    def by_role(self, *roles: str) -> tuple[Feature, ...]:
        for role in roles:
            if role not in FEATURE_ROLES:
                raise ValueError(f"unknown role {role!r}; roles: {list(FEATURE_ROLES)}")
        return tuple(f for f in self.features if f.role in roles)

    def tower(self, tower: str) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.tower == tower)

    @property
    def vocabulary_features(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.has_vocabulary)

    @property
    def numeric_features(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.is_numeric)

    # -- (de)serialisation ---------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FeatureSpec":
        if not isinstance(raw, Mapping):
            raise SpecError(f"a spec must be a mapping. Received: {type(raw).__name__}")
        unknown = sorted(set(raw) - _SPEC_KEYS)
        if unknown:
            raise SpecError(f"{unknown[0]}: unknown spec key; known keys: {sorted(_SPEC_KEYS)}")
        features_raw = raw.get("features")
        if not isinstance(features_raw, Mapping) or not features_raw:
            raise SpecError("features: must be a non-empty mapping of column name -> "
                            f"{{role, ...}}. Received: {features_raw!r}")
        features = []
        for name, body in features_raw.items():
            if not isinstance(body, Mapping):
                raise SpecError(f"features.{name}: must be a mapping with at least 'role'. "
                                f"Received: {body!r}")
            bad = sorted(set(body) - _FEATURE_KEYS)
            if bad:
                raise SpecError(f"features.{name}.{bad[0]}: unknown key; known keys: "
                                f"{sorted(_FEATURE_KEYS)}")
            if "role" not in body:
                raise SpecError(f"features.{name}.role: missing")
            features.append(Feature(name=str(name), **body))
        rest = {k: v for k, v in raw.items() if k != "features"}
        for key in ("clicks", "impressions", "clicked", "cpc", "timestamp", "name"):
            if rest.get(key) is not None and not isinstance(rest[key], str):
                raise SpecError(f"{key}: must be a column name (string). "
                                f"Received: {rest[key]!r}")
        return cls(features=tuple(features), **rest)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "log_format": self.log_format}
        for key in self.label_columns:
            out[key] = getattr(self, key)
        if self.timestamp:
            out["time_bucket_seconds"] = self.time_bucket_seconds
        out["features"] = {f.name: f.to_dict() for f in self.features}
        return out

    def save(self, path: str) -> None:
        with open(path, "w") as fh:
            if path.endswith((".yaml", ".yml")):
                import yaml
                yaml.safe_dump(self.to_dict(), fh, sort_keys=False)
            else:
                json.dump(self.to_dict(), fh, indent=2)
                fh.write("\n")


def _is_int(value) -> bool:
    """An int that is not a bool (`min_count: true` is a mistake, not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _tower(role: str) -> str:
    return "target" if role.startswith("target_") else "context"


def load_spec(path: str | os.PathLike) -> FeatureSpec:
    """Reads and validates a JSON or YAML feature spec.

    Raises:
        SpecError: the file is not a valid spec; the message names the field.
        FileNotFoundError: no file at `path`.
    """
    path = os.fspath(path)
    with open(path) as fh:
        text = fh.read()
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml
            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as err:  # json.JSONDecodeError, yaml.YAMLError
        raise SpecError(f"{path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: {err}") from err
    try:
        return FeatureSpec.from_dict(raw)
    except TypeError as err:  # a wrong argument type reaching a dataclass
        raise SpecError(f"{path}: {err}") from err
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from err
