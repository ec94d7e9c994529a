"""The keras-tuner search space: the attention options are opt-in (no training here)."""

import keras_tuner
import pytest

from tfddn.cli import build_parser, dataclass_from_args, main
from tfddn.tuning import TuneConfig, config_from_hyperparameters

from specs import mini_spec

WITH_HISTORY = mini_spec(history={"max_length": 4})
NO_HISTORY = mini_spec()
# The search space before the attention options: default searches must not change.
BASE_SPACE = ["dropout", "embedding_dim", "fusion_layers", "fusion_units", "learning_rate",
              "num_components", "tower_layers", "tower_units"]


@pytest.mark.parametrize("spec", [None, WITH_HISTORY])
def test_attention_is_not_searched_by_default(spec):
    hp = keras_tuner.HyperParameters()
    config = config_from_hyperparameters(hp, "ddn", spec=spec)
    assert sorted(hp.values) == BASE_SPACE
    assert not config.has_attention


def test_search_attention_adds_both_booleans_and_sets_the_config():
    hp = keras_tuner.HyperParameters()
    config = config_from_hyperparameters(hp, "mdn", spec=WITH_HISTORY, search_attention=True)
    assert sorted(hp.values) == sorted(BASE_SPACE + ["history_attention",
                                                     "interaction_attention"])
    assert (config.history_attention, config.interaction_attention) == (False, False)
    hp.values.update(history_attention=True, interaction_attention=True)  # a trial's values
    config = config_from_hyperparameters(hp, "mdn", spec=WITH_HISTORY, search_attention=True)
    assert (config.history_attention, config.interaction_attention) == (True, True)
    assert config.attention_heads == 2  # not searched: the ModelConfig default


def test_history_attention_is_searched_only_with_a_history_feature():
    hp = keras_tuner.HyperParameters()
    config_from_hyperparameters(hp, "ddn", spec=NO_HISTORY, search_attention=True)
    assert sorted(hp.values) == sorted(BASE_SPACE + ["interaction_attention"])


def test_search_attention_needs_the_spec():
    with pytest.raises(ValueError, match="spec=None"):
        config_from_hyperparameters(keras_tuner.HyperParameters(), "ddn",
                                    search_attention=True)
    with pytest.raises(TypeError, match="search_attention='yes'"):
        TuneConfig(search_attention="yes")


def test_project_name_keeps_default_searches_resumable():
    assert TuneConfig(kind="mdn").project_name == "mdn"
    assert TuneConfig(kind="mdn", search_attention=True).project_name == "mdn_attention"


def test_tune_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--help"])
    assert exit_info.value.code == 0
    assert "--search_attention" in capsys.readouterr().out
    base = ["tune", "--data_dir", "d", "--run_dir", "r"]
    for flags, expected in (([], False), (["--search_attention"], True),
                            (["--search_attention", "false"], False)):
        args = build_parser().parse_args(base + flags)
        assert dataclass_from_args(TuneConfig, args).search_attention is expected


def test_bbddn_also_searches_the_concentration_floor():
    hp = keras_tuner.HyperParameters()
    config = config_from_hyperparameters(hp, "bbddn")
    assert sorted(hp.values) == sorted(BASE_SPACE + ["min_concentration"])
    assert config.kind == "bbddn" and config.family == "beta"
    assert config.min_concentration == hp.values["min_concentration"]
