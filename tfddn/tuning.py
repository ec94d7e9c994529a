"""`tfddn tune`: keras-tuner random search over the production model builder.

The search space covers what Zeldes et al. (2018, Sec. 4) tuned per model: embedding
size, tower and fusion layers and units, dropout (kept >= 0.1 so that MC dropout
measures model uncertainty), mixture components (MDN/DDN) and the learning rate. Each model kind is tuned separately, as in the paper, with the loss of
that kind on the validation subset of the train split as the objective (for REG that
is the MSE; for MDN/DDN the NLL). The search is resumable: rerunning the same command
continues in `RUN/tuner/`. The best configuration is then retrained with early
stopping by `tfddn.training.train` and saved as a normal run in `RUN/`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import keras_tuner

from tfddn import training
from tfddn.models.config import ModelConfig

__all__ = ["DensityHyperModel", "TuneConfig", "config_from_hyperparameters", "tune"]


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """How to search (the data and run directories come from a `TrainConfig`)."""

    kind: str = dataclasses.field(default="ddn", metadata={
        "help": "model kind to tune", "choices": ("reg", "mdn", "ddn")})
    max_trials: int = dataclasses.field(default=6, metadata={"help": "random-search trials"})
    trial_epochs: int = dataclasses.field(default=4, metadata={
        "help": "epochs per trial (early stopping may cut it shorter)"})

    def __post_init__(self):
        if self.max_trials < 1 or self.trial_epochs < 1:
            raise ValueError(f"max_trials and trial_epochs must be >= 1. Received: "
                             f"max_trials={self.max_trials}, trial_epochs={self.trial_epochs}")


def config_from_hyperparameters(hp: keras_tuner.HyperParameters, kind: str) -> ModelConfig:
    """The search space, as a `ModelConfig` (registers the hyperparameters on `hp`)."""
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
    )


class DensityHyperModel(keras_tuner.HyperModel):
    """Builds REG / MDN / DDN models with `tfddn.models.build_model` for keras-tuner."""

    def __init__(self, training_data: training.TrainingData, kind: str, seed: int = 0):
        super().__init__(name=f"tfddn_{kind}")
        self.training_data = training_data
        self.kind = kind
        self.seed = seed

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        return training.new_model(self.training_data, config_from_hyperparameters(hp, self.kind),
                                  self.seed)


def tune(train_config: training.TrainConfig, config: TuneConfig) -> dict:
    """Random search, then retrains the best configuration as a run in `run_dir`."""
    keras.utils.set_random_seed(train_config.seed)
    training_data = training.load_training_data(train_config.data_dir)
    fit_ds, val_ds = training.fit_and_validation_datasets(train_config, training_data.spec)
    tuner = keras_tuner.RandomSearch(
        DensityHyperModel(training_data, config.kind, train_config.seed),
        objective="val_loss", max_trials=config.max_trials, seed=train_config.seed,
        directory=os.path.join(train_config.run_dir, "tuner"), project_name=config.kind,
        overwrite=False)
    tuner.search(fit_ds, validation_data=val_ds, epochs=config.trial_epochs,
                 callbacks=[keras.callbacks.TerminateOnNaN(),
                            keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)],
                 verbose=train_config.verbose)
    best_hp = tuner.get_best_hyperparameters(1)[0]
    best = config_from_hyperparameters(best_hp, config.kind)
    trials = [{"trial": t.trial_id, "score": t.score, "hyperparameters": t.hyperparameters.values}
              for t in tuner.oracle.get_best_trials(config.max_trials)]
    with open(os.path.join(train_config.run_dir, "tuning.json"), "w") as fh:
        json.dump({"best": best.to_dict(), "trials": trials}, fh, indent=2)
    summary = training.train(train_config, best)
    summary["tuning"] = {"max_trials": config.max_trials, "best_trials": trials[:3]}
    return summary
