"""What a training run writes as it goes: checkpoints, logs, resume state, the final model.

Only the chief writes checkpoints and logs; every worker reads the chief's
resume state, so a rerun of the same command resumes where it stopped.

All of them work once per epoch, and they say so (``async_safe``): a callback
that overrides a per-batch hook without it makes Keras turn each step's logs
into Python floats before dispatching the next step, so on JAX the host
waits for the GPU every execution (the GPU then idles while Python prepares
the next step). With it, Keras hands the logs to the callbacks from a worker
thread and the training loop runs ahead.
"""

from __future__ import annotations

import pathlib

import keras

from common import atomic


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' resume callback, written atomically by the chief and read by every worker.

    Every worker restores from the chief's ``RUN/backup`` (``RUN`` must be a
    folder all workers see, as TensorFlow's multi-worker guide asks of
    checkpoints), so all resume at the same epoch with the same weights; only
    the chief writes it, each file under a temporary name renamed into place,
    so a worker killed while saving leaves the last complete backup.
    """

    def __init__(self, backup_dir, chief: bool = True):
        super().__init__(str(backup_dir))
        self.chief = chief

    def _save_model(self):
        if not self.chief:
            return
        atomic.save_weights(self.model, self._weights_path)  # weights first: a kill before the metadata redoes an epoch
        atomic.write_json(self._training_metadata_path, {"epoch": self._current_epoch,
                                                         "batch": self._last_batch_seen})

    def on_train_end(self, logs=None):
        if self.chief:
            super().on_train_end(logs)


def make_callbacks(run_dir: pathlib.Path, chief: bool = True) -> list[keras.callbacks.Callback]:
    """Checkpoints and logs on the chief; resume state (``RUN/backup``) for every worker."""
    callbacks = []
    if chief:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        callbacks += [
            keras.callbacks.ModelCheckpoint(str(run_dir / "checkpoints" / "last.keras")),
            keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
            keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
        ]
    # Last, so an epoch's log line is written before its backup: a kill in between redoes the epoch.
    callbacks.append(BackupAndRestore(run_dir / "backup", chief))
    for callback in callbacks:  # per-epoch saves and logs: their batch hooks write nothing (module docstring)
        callback.async_safe = True
    return callbacks


def save_model_atomic(model: keras.Model, path) -> pathlib.Path:
    """Saves a ``.keras`` file atomically."""
    with atomic.atomic_path(path) as tmp:
        model.save(tmp)
    return pathlib.Path(path)
