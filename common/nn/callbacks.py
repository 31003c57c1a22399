"""Training callbacks every trainer of the zoo shares: a non-finite loss stops it, files are written whole.

``zoo train``, ``zoo cv``, ACNN's stages and TRI-AL's rounds all train with
``fit``; these make each of them end at the first NaN or infinite loss with
one line naming the run (``NonFiniteLoss``, a ValueError the CLI prints),
keep a history that never repeats an epoch, and back up their resume state
under temporary names renamed into place. Keras-only (this package imports
``keras`` and ``numpy``, nothing else of ``common``), so the writers take the
``atomic_path`` they write through (``common.atomic.atomic_path``) from the
caller.

Example:

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
>>> model.compile("sgd", "mse")
>>> x = np.array([[1.0], [np.nan], [2.0]], "float32")
>>> try:
...     model.fit(x, np.ones((3, 1)), batch_size=1, shuffle=False, verbose=0,
...               callbacks=[StopOnNonFiniteLoss("RUN")])
... except NonFiniteLoss as error:
...     print(error)
RUN: the loss became NaN at epoch 1, step 2; nothing of this epoch was saved
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
import shutil

import keras


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite; the message names the run, the epoch and the step."""


def _spelled(value: float) -> str:
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises ``NonFiniteLoss`` at the first training step whose loss is NaN or infinite.

    Not Keras' ``TerminateOnNaN``: by default it only sets ``stop_training``,
    so ``fit`` returns as if training had finished and the caller saves the
    NaN model and exits 0; with ``raise_error`` it raises a RuntimeError that
    names neither the run nor the epoch. Raised here, the error leaves ``fit``
    before the epoch ends, so no epoch-end callback (checkpoint, history,
    backup) saves anything of that epoch.

    The loss Keras logs is the epoch's running mean, non-finite from the
    first bad step on; with several steps per execution the step named is
    the last of the execution that held it. ``async_safe``: on JAX the check
    then runs on Keras' callback thread instead of making the host wait for
    each step, and its error surfaces at a later step or at the epoch's end,
    still before any epoch-end callback runs.

    Args:
        run: what the message names first (a run folder, "RUN: stage A").
    """

    async_safe = True

    def __init__(self, run):
        super().__init__()
        self.run = str(run)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(f"{self.run}: the loss became {_spelled(float(loss))} at epoch {self._epoch + 1}, "
                                f"step {batch + 1}; nothing of this epoch was saved")


class EpochHistory(keras.callbacks.Callback):
    """One CSV row per epoch (``CSVLogger``'s columns), the file rewritten whole through ``atomic_path`` each epoch.

    Not ``CSVLogger(append=True)``: a resumed run redoes the epochs after its
    last backup, and CSVLogger appended their rows to those already there
    (an epoch twice), writing in place (a full disk left half a row). Here
    epoch E's row replaces every row from E on.

    Args:
        path: the CSV file.
        atomic_path: ``common.atomic.atomic_path`` (a context manager giving a temporary path, renamed onto
            ``path`` once it is whole).
    """

    async_safe = True

    def __init__(self, path, atomic_path):
        super().__init__()
        self.path = pathlib.Path(path)
        self.atomic_path = atomic_path

    def _earlier_rows(self, epoch: int) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        try:
            return [row for row in rows if int(row["epoch"]) < epoch]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{self.path}: not a history of epochs (a row without an epoch number); "
                             "move it away to train on") from None

    def on_epoch_end(self, epoch, logs=None):
        rows = [*self._earlier_rows(epoch), {"epoch": epoch, **(logs or {})}]
        columns = ["epoch", *sorted({key for row in rows for key in row} - {"epoch"})]
        with self.atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as file:
                writer = csv.DictWriter(file, columns, restval="")
                writer.writeheader()
                writer.writerows(rows)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' resume state, each file written through ``atomic_path`` and kept until the caller ``discard``s it.

    Keras writes ``latest.weights.h5`` in place, so a kill or a full disk
    mid-save leaves a backup that no longer loads, and it deletes the backup
    when ``fit`` returns, before the caller has saved what training made; a
    failure then restarted the run from epoch 1. Here the last complete
    backup survives any failed save, and goes only once the result is safe.

    Args:
        backup_dir: the folder of the resume state (``RUN/backup``).
        atomic_path: ``common.atomic.atomic_path``.
    """

    def __init__(self, backup_dir, atomic_path):
        super().__init__(str(backup_dir), delete_checkpoint=False)
        self.atomic_path = atomic_path

    def _save_model(self):
        # Weights first: a kill before the metadata redoes the epoch from the previous state's epoch count.
        with self.atomic_path(self._weights_path) as tmp:  # h5py's failed close is a WriteError there too
            self.model.save_weights(str(tmp))
        with self.atomic_path(self._training_metadata_path) as tmp:
            tmp.write_text(json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}),
                           encoding="utf-8")

    def saved_epochs(self) -> int:
        """How many epochs the last complete backup holds (0 without one): a rerun resumes after them."""
        try:
            return int(json.loads(pathlib.Path(self._training_metadata_path).read_text(encoding="utf-8"))["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def discard(self) -> None:
        """Removes the resume state: call it once what training made is saved."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)
