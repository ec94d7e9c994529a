"""Feature spec: loading, validation errors that name the field, round trips."""

import json

import pytest

from tfddn.spec import FeatureSpec, SpecError, load_spec

BASE = {
    "name": "ads",
    "log_format": "aggregated",
    "clicks": "clk",
    "impressions": "imps",
    "cpc": "price",
    "timestamp": "ts",
    "features": {
        "ad": {"role": "target_categorical", "min_count": 3},
        "ad_words": {"role": "target_tokens", "separator": ",", "max_length": 4},
        "ad_age": {"role": "target_numeric"},
        "site": {"role": "context_categorical", "dtype": "int64"},
        "pages": {"role": "history", "separator": "|", "max_length": 5},
    },
}


def _with(**changes):
    raw = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        node = raw
        *path, last = dotted.split("__")
        for key in path:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return raw


_DELETE = object()


def test_roles_and_views():
    spec = FeatureSpec.from_dict(BASE)
    assert spec.feature_names == ("ad", "ad_words", "ad_age", "site", "pages")
    assert [f.name for f in spec.tower("target")] == ["ad", "ad_words", "ad_age"]
    assert [f.name for f in spec.tower("context")] == ["site", "pages"]
    assert [f.name for f in spec.vocabulary_features] == ["ad", "ad_words", "site", "pages"]
    assert [f.name for f in spec.numeric_features] == ["ad_age"]
    assert spec.feature("site").dtype == "int64"
    assert spec.feature("ad").min_count == 3
    assert spec.feature("ad_age").dtype == "float32"
    assert spec.raw_columns == ("ad", "ad_words", "ad_age", "site", "pages",
                                "clk", "imps", "price", "ts")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_save_load_round_trip(tmp_path, suffix):
    spec = FeatureSpec.from_dict(BASE)
    path = str(tmp_path / f"spec{suffix}")
    spec.save(path)
    assert load_spec(path) == spec
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


def test_impression_level_spec():
    raw = _with(clicks=_DELETE, impressions=_DELETE)
    raw["log_format"] = "impressions"
    raw["clicked"] = "click"
    spec = FeatureSpec.from_dict(raw)
    assert spec.label_columns == ("clicked", "cpc", "timestamp")


@pytest.mark.parametrize("raw, field", [
    (_with(features__ad__role="target_categorcal"), "features.ad.role"),
    (_with(features__ad__seperator=","), "features.ad.seperator"),
    (_with(features__ad__min_count=0), "features.ad.min_count"),
    (_with(features__site__dtype="float"), "features.site.dtype"),
    (_with(features__pages__max_length=0), "features.pages.max_length"),
    (_with(features__ad__role=_DELETE), "features.ad.role"),
    (_with(log_format="daily"), "log_format"),
    (_with(clicks=_DELETE), "clicks"),
    (_with(clicked="c"), "clicked"),
    (_with(impresions="x"), "impresions"),
    (_with(cpc="ad"), "cpc"),
    (_with(features={}), "features"),
    (_with(features={"ad": {"role": "target_categorical"}}), "context feature"),
    (_with(features__clicks={"role": "context_numeric"}), "features.clicks"),
    (_with(time_bucket_seconds=0), "time_bucket_seconds"),
    # Wrong types that Python would otherwise take: a bool is an int, a list is no str.
    (_with(features__ad__min_count=True), "features.ad.min_count"),
    (_with(features__pages__max_length=2.0), "features.pages.max_length"),
    (_with(features__site__dtype=["int64"]), "features.site.dtype"),
    (_with(time_bucket_seconds=True), "time_bucket_seconds"),
])
def test_invalid_spec_names_the_field(raw, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        FeatureSpec.from_dict(raw)


def test_load_errors_name_the_file(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(SpecError, match="bad.json: not valid JSON"):
        load_spec(bad_json)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("log_format: aggregated\nclicks: c\nimpressions: i\n"
                     "features: {a: {role: target_categorical, min_count: many}, "
                     "b: {role: context_categorical}}\n")
    with pytest.raises(SpecError, match=r"wrong.yaml: features\.a\.min_count"):
        load_spec(wrong)


def test_the_value_codec_of_a_feature():
    spec = FeatureSpec.from_dict({
        "log_format": "aggregated", "clicks": "c", "impressions": "n",
        "features": {"ad": {"role": "target_categorical"},
                     "words": {"role": "target_tokens", "max_length": 3},
                     "pages": {"role": "history", "separator": "|", "dtype": "int64"}}})
    words, pages, ad = spec.feature("words"), spec.feature("pages"), spec.feature("ad")
    assert (words.pad, pages.pad) == ("", -1)
    assert words.items("cheap  red car") == ["cheap", "red", "car"]  # empty items dropped
    assert words.items(["a", "", "b"]) == ["a", "b"] and words.items(None) == []
    assert pages.items("3|17||4") == [3, 17, 4] and pages.items([3, -1, -1]) == [3]
    assert words.raw(["a", "", "b"]) == "a b" and pages.raw([3, 17, -1]) == "3|17"
    assert words.raw(words.raw(["a", "b"])) == "a b"  # raw is idempotent
    assert ad.raw("x") == "x"  # other features unchanged
