"""What a training run writes as it goes (checkpoints, logs, resume state, the final model) and its claim on its folder.

Only the chief writes checkpoints and logs; every worker reads the chief's
resume state, so a rerun of the same command resumes where it stopped.

A run folder keeps its options: ``claim_run`` refuses, before anything is
written, a rerun whose options differ from those its ``config.json`` records
(``OtherOptions`` lists them); ``--overwrite`` starts it afresh instead. The
paths it records are absolute, so they mean the same from any working
directory.

Every file goes through ``common.atomic.atomic_path``: a failed write (a full
disk) is one ``WriteError`` line naming the file, the previous file is left
whole, and the last complete backup stays, so a rerun resumes from it. A NaN
or infinite loss stops training before its epoch saves anything
(``common.nn.callbacks.StopOnNonFiniteLoss``).

All of them work once per epoch, and they say so (``async_safe``): a callback
that overrides a per-batch hook without it makes Keras turn each step's logs
into Python floats before dispatching the next step, so on JAX the host
waits for the GPU every execution (the GPU then idles while Python prepares
the next step). With it, Keras hands the logs to the callbacks from a worker
thread and the training loop runs ahead.
"""

from __future__ import annotations

import json
import pathlib
import re

import keras

from common import atomic, errors
from common.nn import callbacks as nn_callbacks


class BackupAndRestore(nn_callbacks.BackupAndRestore):
    """Keras' resume callback, written atomically by the chief and read by every worker.

    Every worker restores from the chief's ``RUN/backup`` (``RUN`` must be a
    folder all workers see, as TensorFlow's multi-worker guide asks of
    checkpoints), so all resume at the same epoch with the same weights; only
    the chief writes it, each file under a temporary name renamed into place,
    so a worker killed while saving leaves the last complete backup. It stays
    after ``fit`` until ``discard``: ``train`` discards it once ``model.keras``
    is written.
    """

    def __init__(self, backup_dir, chief: bool = True):
        super().__init__(backup_dir, atomic.atomic_path)
        self.chief = chief

    def _save_model(self):
        if self.chief:
            super()._save_model()

    def discard(self) -> None:
        if self.chief:
            super().discard()


class Checkpoint(keras.callbacks.Callback):
    """``last.keras`` after every epoch, written atomically.

    Not Keras' ``ModelCheckpoint``, which writes in place: on a full disk it
    left a truncated file over the last good one, then an h5py traceback.
    """

    def __init__(self, path):
        super().__init__()
        self.path = pathlib.Path(path)

    def on_epoch_end(self, epoch, logs=None):
        save_model_atomic(self.model, self.path)


def _cause(error) -> str:
    """"file too large" from TensorFlow's "{{function_node ...}} FILE; File too large\\n\\tFailed ... [Op:...]"."""
    first = (str(error).splitlines() or [type(error).__name__])[0]
    first = re.sub(r"\s*\[Op:.*$", "", re.sub(r"\{\{.*?\}\}\s*", "", first))
    cause = re.split(r";\s*", first)[-1].strip() or type(error).__name__
    return cause[:1].lower() + cause[1:]


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard logs, a failed write of them one ``WriteError`` line (TensorFlow raises an op error)."""

    def _guarded(self, hook, *args):
        try:
            hook(*args)
        except Exception as error:  # only TensorFlow's own errors are translated, the rest goes on
            import tensorflow as tf  # loaded already: Keras' TensorBoard writes through it

            if not isinstance(error, tf.errors.OpError):
                raise
            raise atomic.WriteError(f"{self.log_dir}: not written: {_cause(error)}") from None

    def on_train_begin(self, logs=None):
        self._guarded(super().on_train_begin, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._guarded(super().on_epoch_end, epoch, logs)

    def on_test_end(self, logs=None):
        self._guarded(super().on_test_end, logs)

    def on_train_end(self, logs=None):
        self._guarded(super().on_train_end, logs)


def logging_callbacks(log_dir, history=None) -> list[keras.callbacks.Callback]:
    """The logs every trainer of the zoo writes: a CSV row per epoch and TensorBoard's event files.

    ``zoo train`` and ``zoo cv`` (``make_callbacks``), ACNN's stages (``common.train.pose``) and TRI-AL's rounds
    take them from here, each into a folder of its own, so all log alike: the CSV is ``EpochHistory`` (rewritten
    whole, so a resumed run never holds an epoch twice, as Keras' ``CSVLogger(append=True)`` did), TensorBoard's
    failed write is one ``WriteError`` line. Both work once per epoch (``async_safe``). Put them before the resume
    state's callback: an epoch counts as done for a rerun only once its logs are written.

    Args:
        log_dir: TensorBoard's folder (``RUN/logs``; ``RUN/logs/stage_A`` for a stage).
        history: the CSV file (default ``log_dir/history.csv``).
    """
    log_dir = pathlib.Path(log_dir)
    made = [nn_callbacks.EpochHistory(history or log_dir / "history.csv", atomic.atomic_path),
            TensorBoard(str(log_dir), write_graph=False)]
    for callback in made:
        callback.async_safe = True
    return made


def make_callbacks(run_dir: pathlib.Path, chief: bool = True) -> list[keras.callbacks.Callback]:
    """The loss check first; checkpoints and logs on the chief; resume state (``RUN/backup``) for every worker, last."""
    callbacks = [nn_callbacks.StopOnNonFiniteLoss(run_dir)]
    if chief:
        callbacks += [Checkpoint(run_dir / "checkpoints" / "last.keras"),
                      *logging_callbacks(run_dir / "logs", history=run_dir / "history.csv")]
    # Last: an epoch counts as done for a rerun only once everything of it is written.
    callbacks.append(BackupAndRestore(run_dir / "backup", chief))
    for callback in callbacks:  # per-epoch saves and logs: their batch hooks write nothing (module docstring)
        callback.async_safe = True
    return callbacks


def save_model_atomic(model: keras.Model, path) -> pathlib.Path:
    """Saves a ``.keras`` file atomically."""
    with atomic.atomic_path(path) as tmp:
        model.save(tmp)
    return pathlib.Path(path)


CONFIG = "config.json"
# What a rerun may change: where the folder is, how it reports, a speed setting that leaves the arithmetic alone.
IGNORED = ("out", "verbose", "run_eagerly", "command", "steps_per_execution")
PATHS = ("data", "out", "init")  # recorded absolute; an older zoo stored them as given, relative to where it ran
# Recorded as None where the zoo could not tell (data_sha256: a folder prepared before digests): not compared then.
UNKNOWN_WHEN_NONE = ("data_sha256",)


class OtherOptions(ValueError):
    """A run folder holds a run with other options; the message lists each, old -> new."""

    def __init__(self, run_dir, changes: list[str], remedy: str = "give a new folder or --overwrite"):
        self.run_dir, self.changes = run_dir, changes
        super().__init__(f"{run_dir}: holds a run with other options ({', '.join(changes)}); {remedy}")


def absolute(path) -> str | None:
    """``path`` made absolute (symlinks resolved), as a run records it; None stays None."""
    return None if path is None else str(pathlib.Path(path).resolve())


def _shown(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def option_changes(previous: dict, record: dict) -> list[str]:
    """``"base_filters 16 -> 8"`` for each option ``record`` sets otherwise than ``previous`` (a config.json).

    Options one of them lacks (an older zoo's), ``IGNORED`` ones and ``UNKNOWN_WHEN_NONE`` ones ``previous`` holds
    as None are not compared; a long list or mapping (the
    split) is named without its values.
    """
    changes = []
    for key, new in json.loads(json.dumps(record)).items():  # as config.json holds it: tuples are lists
        if key in IGNORED or key not in previous or (key in UNKNOWN_WHEN_NONE and previous[key] is None):
            continue
        old = previous[key]
        if key in PATHS and isinstance(old, str):
            old = absolute(old)
        if old != new:
            shown = (_shown(old), _shown(new))
            long = not isinstance(new, str) and max(map(len, shown)) > 40
            changes.append(f"{key} differs" if long else f"{key} {shown[0]} -> {shown[1]}")
    return changes


def claim_run(run_dir, record: dict, overwrite: bool = False) -> dict | None:
    """Checks that ``run_dir`` may hold the run ``record`` describes; returns the config.json it holds, if any.

    Call it before writing anything: a folder whose config.json records other options raises ``OtherOptions``
    (unless ``overwrite``), so a rerun never mixes two runs' files.
    """
    path = pathlib.Path(run_dir) / CONFIG
    if not path.exists():
        return None
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(previous, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        if overwrite:
            return {}
        raise errors.DataError(f"{path}: not a run's configuration ({error}); give a new folder or --overwrite") \
            from None
    changes = [] if overwrite else option_changes(previous, record)
    if changes:
        raise OtherOptions(run_dir, changes)
    return previous
