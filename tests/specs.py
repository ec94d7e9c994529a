"""The small feature specs the tests share (import them: `from specs import mini_spec`).

`mini_spec()` is the model-level spec of the builder, layer, data, explain and export
tests: one feature per kind of input tower, a categorical id (`ad`), a short token list
(`words`, 3 tokens), a numeric column (`age`, standardised by `MINI_STATS`) and an int64
context id (`site`); label columns `c` and `n`. A test that needs a history adds one with
`history=`, and states any other difference as an argument, so that what it changes is
visible where it is used.

`CSV_SPEC` is the smallest spec a raw CSV can be preprocessed with (`CSV_HEADER`): one
target and one context column, the training-data edge cases are written in it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

from tfddn.spec import FeatureSpec

MINI_FEATURES = {
    "ad": {"role": "target_categorical"},
    "words": {"role": "target_tokens", "max_length": 3},
    "age": {"role": "target_numeric"},
    "site": {"role": "context_categorical", "dtype": "int64"},
}
MINI_LABELS = {"log_format": "aggregated", "clicks": "c", "impressions": "n"}
MINI_STATS = {"age": {"mean": 2.0, "std": 4.0}}

CSV_HEADER = "target_id,publisher,clicks,impressions"
CSV_SPEC = {"log_format": "aggregated", "clicks": "clicks", "impressions": "impressions",
            "features": {"target_id": {"role": "target_categorical"},
                         "publisher": {"role": "context_categorical"}}}


def mini_spec_dict(history: Mapping | None = None, *, drop: Iterable[str] = (),
                   rename: Mapping[str, str] | None = None, **columns) -> dict:
    """The mini spec as a dict (what a spec file holds).

    Args:
        history: options of a `history` feature to add last (`{"max_length": 4}`,
            `{"dtype": "int64", ...}`); none without it.
        drop: features to leave out.
        rename: {feature: new name}, in place (same position).
        **columns: top-level fields to set, e.g. `cpc="price"`, `clicks="clicks_col"`.
    """
    features = {name: dict(options) for name, options in MINI_FEATURES.items()
                if name not in set(drop)}
    if history is not None:
        features["history"] = {"role": "history", **history}
    rename = rename or {}
    unknown = set(rename) - set(features)
    if unknown:
        raise KeyError(f"rename names no feature of the mini spec. Received: {sorted(unknown)}")
    features = {rename.get(name, name): options for name, options in features.items()}
    return copy.deepcopy({**MINI_LABELS, **columns, "features": features})


def mini_spec(history: Mapping | None = None, *, drop: Iterable[str] = (),
              rename: Mapping[str, str] | None = None, **columns) -> FeatureSpec:
    """The mini spec as a `FeatureSpec`; arguments as for `mini_spec_dict`."""
    return FeatureSpec.from_dict(mini_spec_dict(history, drop=drop, rename=rename, **columns))
