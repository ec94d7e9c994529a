"""Resuming a killed `tfddn train` as if it had never stopped.

Keras' `BackupAndRestore` (in `RUN/backup/`) restores the weights, the optimizer and
the epoch counter, but not what the run learned about itself: `History` and
`EarlyStopping` start from scratch, so a resumed run's history.json and epoch count
would hold only the epochs after the resume, and early stopping would forget the best
epoch before it. `ResumableEarlyStopping` keeps them in the same folder:

    RUN/backup/run_config.json   the settings the backup was made with
    RUN/backup/history.json      every finished epoch's logs
    RUN/backup/best.weights.h5   the best epoch's weights so far

`check_backup` refuses to resume a backup made with other settings (restoring it
would fail, or silently mix two configurations) and says how to choose.
"""

from __future__ import annotations

import json
import os
import shutil

import keras
import numpy as np

from tfddn.errors import UserError

__all__ = ["ResumableEarlyStopping", "check_backup", "write_json_atomic"]

_CONFIG, _HISTORY, _BEST = "run_config.json", "history.json", "best.weights.h5"
_KERAS_WEIGHTS = "latest.weights.h5"  # written by BackupAndRestore after an epoch


def write_json_atomic(path: str, obj) -> None:
    """Writes `obj` as JSON via a temporary file and a rename (a kill leaves no half file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2)
    os.replace(tmp, path)


def check_backup(backup_dir: str, settings: dict, restart: bool = False) -> bool:
    """Prepares `backup_dir` for a run with `settings`; True when it will resume.

    Args:
        settings: JSON-able settings that must match to resume (model and data).
        restart: discard an existing backup instead of resuming it.

    Raises:
        UserError: the backup was made with different settings and not `restart`.
    """
    settings = json.loads(json.dumps(settings))
    resuming = os.path.exists(os.path.join(backup_dir, _KERAS_WEIGHTS))
    if restart or not resuming:  # nothing to resume: a clean start
        shutil.rmtree(backup_dir, ignore_errors=True)
        resuming = False
    if resuming:
        try:
            with open(os.path.join(backup_dir, _CONFIG)) as fh:
                previous = json.load(fh)
        except (OSError, ValueError):
            previous = None
        if previous is not None and previous != settings:
            changed = sorted(_differences(previous, settings))
            raise UserError(
                f"{backup_dir} holds an interrupted run with other settings ({', '.join(changed)}"
                "); rerun with the same flags to resume it, or add --restart to discard it")
    os.makedirs(backup_dir, exist_ok=True)
    write_json_atomic(os.path.join(backup_dir, _CONFIG), settings)
    return resuming


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` on `val_loss` whose history, best epoch and best weights survive
    a kill and resume (files in `backup_dir`, deleted by `BackupAndRestore` at the end).

    Place it after `BackupAndRestore` in the callback list, so the weights are restored
    when it reads its state. `history` holds every epoch's logs, resumed ones included.
    Without a validation loss it only records the history (a warning per run, not per
    epoch).
    """

    def __init__(self, backup_dir: str, patience: int):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self.backup_dir = backup_dir
        self.history: dict[str, list[float]] = {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.history = {}
        path = os.path.join(self.backup_dir, _HISTORY)
        if os.path.exists(path):
            with open(path) as fh:
                self.history = json.load(fh)
        losses = self.history.get("val_loss", [])
        if losses:
            self.best_epoch = int(np.argmin(losses))
            self.best = float(losses[self.best_epoch])
            self.wait = len(losses) - 1 - self.best_epoch
            best = os.path.join(self.backup_dir, _BEST)
            if os.path.exists(best):
                current = self.model.get_weights()
                self.model.load_weights(best)
                self.best_weights = self.model.get_weights()
                self.model.set_weights(current)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor in logs:
            super().on_epoch_end(epoch, logs)
            if self.best_epoch == epoch:
                self.model.save_weights(os.path.join(self.backup_dir, _BEST))
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        if os.path.isdir(self.backup_dir):
            write_json_atomic(os.path.join(self.backup_dir, _HISTORY), self.history)
