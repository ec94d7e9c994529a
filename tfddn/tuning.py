"""`tfddn tune`: keras-tuner random search over the production model builder.

The search space covers what Zeldes et al. (2018, Sec. 4) tuned per model: embedding
size, tower and fusion layers and units, dropout (kept >= 0.1 so that MC dropout
measures model uncertainty), mixture components (MDN/DDN) and the learning rate. Each
model kind is tuned separately, as in the paper, with the loss of that kind on the
validation subset of the train split as the objective (for REG that is the MSE; for
MDN/DDN the NLL). `search_attention` (off by default) also searches the attention
options of Naor et al.: history attention (when the spec has a history feature) and
feature-interaction attention. The search is resumable: rerunning the same command
continues in `RUN/tuner/`. The best configuration is then retrained with early stopping
by `tfddn.training.train` and saved as a normal run in `RUN/`.

Past one machine the same command runs keras-tuner's distributed mode, one process per
machine, told apart by `KERASTUNER_TUNER_ID` (`chief`, `tuner0`, `tuner1`, ...) and
pointed at the chief by `KERASTUNER_ORACLE_IP` / `KERASTUNER_ORACLE_PORT`: the chief
serves the oracle (gRPC) and, when every trial is done, writes `tuning.json` and retrains
the best configuration into `RUN/` as above; each worker asks it for trials, trains them
(checkpoints in `RUN/tuner/<kind>/trial_*/`, its state in `<tuner id>.json`) and returns
the ids of the trials it ran, writing nothing else. docs/DISTRIBUTED.md has the commands.
"""

from __future__ import annotations

import json
import os

import keras
import keras_tuner

from tfddn import training
from tfddn.configs import TuneConfig
from tfddn.models.config import ModelConfig
from tfddn.spec import FeatureSpec

__all__ = ["DensityHyperModel", "TuneConfig", "config_from_hyperparameters", "tune",
           "tuner_role"]


def config_from_hyperparameters(hp: keras_tuner.HyperParameters, kind: str, *,
                                spec: FeatureSpec | None = None,
                                search_attention: bool = False) -> ModelConfig:
    """The search space, as a `ModelConfig` (registers the hyperparameters on `hp`).

    Args:
        hp: the hyperparameters of a trial (or the best ones, to rebuild its config).
        kind: the model kind.
        spec: the feature spec; needed with `search_attention`.
        search_attention: also search `interaction_attention` and, when `spec` has a
            history feature, `history_attention` (both `hp.Boolean`).
    """
    attention = {}
    if search_attention:
        if spec is None:
            raise ValueError("search_attention needs the feature spec. Received: spec=None")
        if spec.by_role("history"):  # history attention pools history features only
            attention["history_attention"] = hp.Boolean("history_attention")
        attention["interaction_attention"] = hp.Boolean("interaction_attention")
    # BBDDN: the concentration floor bounds the component stddev (`BetaMixtureHead`).
    family_params = ({"min_concentration": hp.Choice("min_concentration", [0.5, 1.0, 2.0, 5.0])}
                     if kind == "bbddn" else {})
    tower_layers = hp.Int("tower_layers", 1, 2)
    tower_units = hp.Choice("tower_units", [32, 64, 128])
    fusion_layers = hp.Int("fusion_layers", 1, 3)
    fusion_units = hp.Choice("fusion_units", [32, 64, 128])
    return ModelConfig(
        kind=kind,
        embedding_dim=hp.Choice("embedding_dim", [8, 16, 32]),
        tower_units=(tower_units,) * tower_layers,
        fusion_units=tuple(max(fusion_units // 2 ** i, 8) for i in range(fusion_layers)),
        # Dropout > 0 always: MC dropout (the model uncertainty of `mc_dropout`, UCB and
        # the saliency of Naor et al.) is zero without it.
        dropout=hp.Float("dropout", 0.1, 0.3, step=0.1),
        num_components=hp.Int("num_components", 1, 5) if kind != "reg" else 1,
        learning_rate=hp.Float("learning_rate", 3e-4, 3e-3, sampling="log"),
        **attention, **family_params,
    )


class DensityHyperModel(keras_tuner.HyperModel):
    """Builds REG / MDN / DDN / BBDDN models with `tfddn.models.build_model` for keras-tuner."""

    def __init__(self, training_data: training.TrainingData, kind: str, seed: int = 0,
                 search_attention: bool = False):
        super().__init__(name=f"tfddn_{kind}")
        self.training_data = training_data
        self.kind = kind
        self.seed = seed
        self.search_attention = search_attention

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        config = config_from_hyperparameters(hp, self.kind, spec=self.training_data.spec,
                                             search_attention=self.search_attention)
        return training.new_model(self.training_data, config, self.seed)


def tuner_role(environ=None) -> str | None:
    """This process's part in keras-tuner's distributed mode: `"chief"` (serves the
    oracle), `"worker"` (runs trials) or None (a single-process search). The rule is
    keras-tuner's (`keras_tuner/src/distribute/utils.py`): distributed when
    `KERASTUNER_ORACLE_IP` is set, the chief when `KERASTUNER_TUNER_ID` contains "chief".
    """
    environ = os.environ if environ is None else environ
    if "KERASTUNER_ORACLE_IP" not in environ:
        return None
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not environ.get(v)]
    if missing:
        raise ValueError(f"KERASTUNER_ORACLE_IP is set, so distributed tuning also needs "
                         f"{' and '.join(missing)} (docs/DISTRIBUTED.md)")
    return "chief" if "chief" in environ["KERASTUNER_TUNER_ID"] else "worker"


class _RandomSearch(keras_tuner.RandomSearch):
    """`RandomSearch` that remembers the trials this process ran (a worker's share)."""

    def __init__(self, *args, **kwargs):
        self.trials_run: list[str] = []
        super().__init__(*args, **kwargs)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self.trials_run.append(trial.trial_id)


def tune(train_config: training.TrainConfig, config: TuneConfig) -> dict:
    """Random search, then retrains the best configuration as a run in `run_dir`.

    In keras-tuner's distributed mode (`tuner_role`) the chief does both (its search
    waits until the workers have run every trial) and a worker only runs trials: it
    returns `{"tuner_id", "trials_run"}` and writes no `tuning.json` or run.
    """
    role = tuner_role()
    keras.utils.set_random_seed(train_config.seed)
    training_data = training.load_training_data(train_config.data_dir)
    epoch = training.fit_and_validation_datasets(train_config, training_data.spec,
                                                 training_data.metadata)
    if epoch.validation is None:
        raise ValueError(f"--data_dir {train_config.data_dir!r} has an empty validation "
                         "split: keras-tuner needs validation data for its objective. "
                         "Preprocess with a larger --validation_fraction")
    tuner = _RandomSearch(
        DensityHyperModel(training_data, config.kind, train_config.seed,
                          config.search_attention),
        objective="val_loss", max_trials=config.max_trials, seed=train_config.seed,
        directory=os.path.join(train_config.run_dir, "tuner"),
        project_name=config.project_name, overwrite=False)
    tuner.search(epoch.fit, validation_data=epoch.validation, epochs=config.trial_epochs,
                 steps_per_epoch=epoch.steps_per_epoch,
                 callbacks=[keras.callbacks.TerminateOnNaN(),
                            keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)],
                 verbose=train_config.verbose)
    if role == "worker":  # the chief's oracle holds the results and writes the run
        return {"tuner_id": tuner.tuner_id, "trials_run": tuner.trials_run}
    best_hp = tuner.get_best_hyperparameters(1)[0]
    best = config_from_hyperparameters(best_hp, config.kind, spec=training_data.spec,
                                       search_attention=config.search_attention)
    trials = [{"trial": t.trial_id, "score": t.score, "hyperparameters": t.hyperparameters.values}
              for t in tuner.oracle.get_best_trials(config.max_trials)]
    with open(os.path.join(train_config.run_dir, "tuning.json"), "w") as fh:
        json.dump({"best": best.to_dict(), "trials": trials}, fh, indent=2)
    summary = training.train(train_config, best)
    summary["tuning"] = {"max_trials": config.max_trials, "best_trials": trials[:3]}
    return summary
