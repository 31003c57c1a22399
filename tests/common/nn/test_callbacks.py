"""common.nn.callbacks: the non-finite loss stop, the history that never repeats an epoch, the atomic backup."""

import contextlib
import csv
import pathlib

import keras
import numpy as np
import pytest

from common.atomic import atomic_path
from common.nn import callbacks
from tests import helpers


def _identity_model(steps_per_execution: int = 1):
    """y = x, untouched by training (rate 0): the loss of each step is (x - 1)^2, known in advance."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="ones")])
    model.compile(keras.optimizers.SGD(0.0), "mse", steps_per_execution=steps_per_execution)
    return model


class _EpochEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(epoch)


class _PerStep(keras.callbacks.Callback):  # a batch hook without async_safe: Keras then dispatches synchronously
    def on_train_batch_end(self, batch, logs=None):
        pass


NAN, INF = float("nan"), float("inf")
# inputs (one per step), fit arguments, extra callbacks -> the message's tail after "RUN: the loss became "
STOP_CASES = [
    ([1.0, NAN, 2.0], {}, [], "NaN at epoch 1, step 2"),
    ([1.0, 2.0, 1e30], {}, [], "inf at epoch 1, step 3"),  # (1e30 - 1)^2 overflows float32
    ([1.0, NAN, 2.0], {}, [_PerStep()], "NaN at epoch 1, step 2"),  # checked synchronously
    ([1.0, NAN, 2.0], {"initial_epoch": 3, "epochs": 5}, [], "NaN at epoch 4, step 2"),
    ([NAN, 1.0, 2.0, 3.0], {"steps_per_execution": 2}, [], "NaN at epoch 1, step 2"),  # the execution's last step
]


@pytest.mark.parametrize("inputs, fit, extra, message", STOP_CASES)
def test_training_stops_at_the_first_non_finite_loss_before_the_epoch_ends(inputs, fit, extra, message, request):
    helpers.free_stopped_training(request)
    fit = dict(fit)
    model = _identity_model(fit.pop("steps_per_execution", 1))
    ends = _EpochEnds()
    x = np.array(inputs, "float32")[:, None]
    with pytest.raises(callbacks.NonFiniteLoss) as raised:
        model.fit(x, np.ones_like(x), batch_size=1, shuffle=False, verbose=0,
                  callbacks=[callbacks.StopOnNonFiniteLoss("RUN"), *extra, ends], **fit)
    assert str(raised.value) == f"RUN: the loss became {message}; nothing of this epoch was saved"
    assert isinstance(raised.value, ValueError) and ends.ends == []  # no epoch-end callback ran


def test_finite_losses_train_on():
    x = np.array([[1.0], [2.0]], "float32")
    history = _identity_model().fit(x, x, batch_size=1, epochs=2, verbose=0,
                                    callbacks=[callbacks.StopOnNonFiniteLoss("RUN")])
    assert history.history["loss"] == [0.0, 0.0]


def _rows(path):
    with open(path, newline="", encoding="utf-8") as file:
        return [(row["epoch"], row["loss"]) for row in csv.DictReader(file)]


def test_history_replaces_the_rows_of_redone_epochs(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss\n0,0.5,NA\n1,0.4,NA\n2,0.3,NA\n", encoding="utf-8")  # CSVLogger's own
    history = callbacks.EpochHistory(path, atomic_path)
    history.on_epoch_end(1, {"loss": 0.25})  # a resumed run redoes epoch 2 (index 1)
    assert _rows(path) == [("0", "0.5"), ("1", "0.25")]
    history.on_epoch_end(2, {"loss": 0.125, "mean_iou": 0.5})
    assert _rows(path) == [("0", "0.5"), ("1", "0.25"), ("2", "0.125")]
    assert path.read_text(encoding="utf-8").splitlines()[0] == "epoch,loss,mean_iou,val_loss"


def test_history_that_is_not_one_names_the_file(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("step,loss\n0,0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"history\.csv: not a history of epochs"):
        callbacks.EpochHistory(path, atomic_path).on_epoch_end(1, {"loss": 0.1})
    assert path.read_text(encoding="utf-8") == "step,loss\n0,0.5\n"


def test_backup_is_written_whole_and_kept_until_discarded(tmp_path):
    written = []

    @contextlib.contextmanager
    def recording_atomic_path(path):
        with atomic_path(path) as tmp:
            yield tmp
        written.append(pathlib.Path(path).name)

    backup = callbacks.BackupAndRestore(tmp_path / "backup", recording_atomic_path)
    x = np.ones((2, 1), "float32")
    _identity_model().fit(x, x, batch_size=1, epochs=2, verbose=0, callbacks=[backup])
    assert written == ["latest.weights.h5", "training_metadata.json"] * 2
    assert backup.saved_epochs() == 2 and (tmp_path / "backup" / "latest.weights.h5").is_file()  # kept after fit
    backup.discard()
    assert not (tmp_path / "backup").exists() and backup.saved_epochs() == 0


