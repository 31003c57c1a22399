"""Resume: a killed training reruns from its last completed epoch."""

import csv
import json
import re
import signal

from tests import helpers


def _completed_epochs(history):
    if not history.exists():
        return 0
    return len(list(csv.DictReader(open(history, encoding="utf-8"))))


def _backed_up_epochs(run) -> int:
    metadata = run / "backup" / "training_metadata.json"
    try:
        return json.loads(metadata.read_text(encoding="utf-8"))["epoch"]
    except (OSError, ValueError):
        return 0


def test_killed_training_resumes_from_last_completed_epoch(tiny_prepared, tmp_path, zoo_here):
    run = tmp_path / "run"
    command = ["train", tiny_prepared, run, "--base-filters", "4", "--epochs", "3", "--batch-size", "4",
               "--crop-size", "64", "--test-fraction", "0.25"]
    first = helpers.zoo_train_process(command[1:], kill_after=1)  # the same run, crashing once epoch 1 is backed up
    first.communicate(timeout=300)
    assert first.returncode == -signal.SIGKILL
    backed_up = _backed_up_epochs(run)
    assert 1 <= backed_up < 3, "training was not interrupted mid-run"
    assert not (run / "model.keras").exists()
    logged_before = _completed_epochs(run / "history.csv")

    second = zoo_here(*command)  # the rerun in this process: the same command, no second TensorFlow start-up
    assert second.returncode == 0, second.stderr[-3000:]
    first_epoch = int(re.search(r"Epoch (\d+)/3", second.stdout).group(1))
    assert first_epoch == backed_up + 1  # resumes after the last backed-up epoch
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(run / "history.csv", encoding="utf-8"))]
    assert epochs[logged_before:] == list(range(backed_up, 3)) and sorted(set(epochs)) == list(range(3))
    assert (run / "model.keras").exists() and not (run / "backup").exists()


def test_only_the_chief_checkpoints_and_logs_and_the_backup_runs_last(tmp_path):
    from common.nn import callbacks as nn_callbacks
    from common.train import callbacks

    chief = callbacks.make_callbacks(tmp_path / "chief", chief=True)
    assert [type(c) for c in chief] == [nn_callbacks.StopOnNonFiniteLoss, callbacks.Checkpoint,
                                        nn_callbacks.EpochHistory, callbacks.TensorBoard, callbacks.BackupAndRestore]
    worker = callbacks.make_callbacks(tmp_path / "worker", chief=False)
    assert [type(c) for c in worker] == [nn_callbacks.StopOnNonFiniteLoss, callbacks.BackupAndRestore]
    assert not worker[-1].chief
    assert not (tmp_path / "worker").exists()  # a worker writes nothing


def test_save_model_atomic_leaves_no_partial_file(tmp_path):
    import keras

    from common.train import callbacks

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = callbacks.save_model_atomic(model, tmp_path / "model.keras")
    assert path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    assert keras.models.load_model(path).count_params() == 3


def test_callbacks_are_per_epoch_and_async_safe(tmp_path):
    """Marked async-safe, so on JAX Keras never waits for a step's logs before dispatching the next; true because
    every one of them saves or logs per epoch only."""
    from common.train import callbacks

    made = callbacks.make_callbacks(tmp_path, chief=True)
    assert len(made) == 5 and all(callback.async_safe for callback in made)
    assert all(getattr(callback, "save_freq", "epoch") == "epoch" for callback in made)
    assert all(getattr(callback, "update_freq", "epoch") == "epoch" for callback in made)
