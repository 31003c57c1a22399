"""``zoo train-pose``: ACNN staged training on a tiny synthetic set (conftest: pose_run)."""

import csv
import json
import logging

import pytest

from common.train import pose as pose_training
from tests import helpers


def test_train_pose_runs_the_three_stages_and_saves(pose_run):
    out, lines = pose_run
    assert lines[0].startswith("training acnn (") and "stages A:1, B:1, C:1" in lines[0]
    assert [line.split(":")[0] for line in lines[1::2]] == ["stage A", "stage B", "stage C"]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["train_images"] == 8 and [s["name"] for s in config["stages"]] == ["A", "B", "C"]
    assert isinstance(config["command"], str) and config["command"]  # the model card's training command
    assert (out / "model.keras").is_file()


def _scalar_tags(folder) -> set[str]:
    import tensorflow as tf

    return {value.tag for events in sorted(folder.glob("events.out.tfevents.*"))
            for event in tf.compat.v1.train.summary_iterator(str(events)) for value in event.summary.value}


def test_each_stage_logs_as_zoo_train_does_csv_and_tensorboard(pose_run):
    out, _ = pose_run
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["stage_A", "stage_B", "stage_C"]
    for stage in "ABC":
        with open(out / f"history_{stage}.csv", encoding="utf-8") as file:
            assert [row["epoch"] for row in csv.DictReader(file)] == ["0"]  # one epoch, one row
        assert "epoch_loss" in _scalar_tags(out / "logs" / f"stage_{stage}" / "train")
        assert "epoch_loss" in _scalar_tags(out / "logs" / f"stage_{stage}" / "validation")


def test_each_stage_reports_the_validation_loss_it_starts_from_and_per_epoch(pose_run):
    out, lines = pose_run
    starts = [line for line in lines if "before training" in line]
    assert [line.split(":")[0] for line in starts] == ["stage A", "stage B", "stage C"]
    for stage, line in zip("ABC", starts):
        start = float(line.split("validation loss ")[1].split()[0])
        with open(out / f"history_{stage}.csv", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        assert 0 < start < 1 and len(rows) == 1 and 0 < float(rows[0]["val_loss"]) < 1


def test_rerun_resumes_without_training(pose_data, pose_run, caplog):
    out, _ = pose_run
    recorded = (out / "config.json").read_bytes()
    histories = {stage: (out / f"history_{stage}.csv").read_bytes() for stage in "ABC"}
    config = pose_training.PoseTrainConfig(str(pose_data), str(out), **helpers.TINY_POSE)
    caplog.set_level(logging.INFO, logger="common")
    caplog.set_level(logging.INFO, logger="acnn_pose")
    pose_training.train_pose(config)
    lines = caplog.messages
    assert [line.split(",")[0] for line in lines[1:]] == [f"stage {s}: already trained" for s in "ABC"]
    assert {stage: (out / f"history_{stage}.csv").read_bytes() for stage in "ABC"} == histories  # no row twice
    assert (out / "config.json").read_bytes() == recorded  # the run keeps the options it was started with
    assert json.loads(recorded)["data"] == str(pose_data.resolve())  # absolute: the same from any directory


def test_bad_training_configuration(pose_data, tmp_path):
    with pytest.raises(ValueError, match="input_size"):
        pose_training.train_pose(pose_training.PoseTrainConfig(str(pose_data), str(tmp_path), input_size=100))


def test_init_starts_from_a_models_weights_and_skips_stage_a(pose_data, pose_run, tmp_path, monkeypatch):
    """``--init`` (e.g. Newell's hourglass from `zoo convert hourglass --attention`) stands for stage A.

    The staged training itself is ``train_staged``'s (tests/acnn_pose/test_staged.py); here, what it is given:
    the stages after A, and a model holding the init file's weights, every one of them.
    """
    import dataclasses

    import keras
    import numpy as np

    from common import registry

    trained, _ = pose_run
    given = {}

    def fit(model, dataset, out, stages, **kwargs):
        given.update(weights=[np.asarray(w) for w in model.weights], stages=[stage.name for stage in stages])
        return model

    entry = registry.get("acnn")
    monkeypatch.setattr(pose_training.registry, "get", lambda name: dataclasses.replace(entry, fit=fit))
    config = pose_training.PoseTrainConfig(str(pose_data), str(tmp_path / "run"), init=str(trained / "model.keras"),
                                           **helpers.TINY_POSE)
    pose_training.train_pose(config)
    assert given["stages"] == ["B", "C"]
    init = keras.models.load_model(trained / "model.keras")
    assert len(given["weights"]) == len(init.weights)
    for got, want in zip(given["weights"], init.weights):
        np.testing.assert_array_equal(got, np.asarray(want))
    assert json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))["init"] == \
        str((trained / "model.keras").resolve())


def test_init_of_another_architecture_names_the_file(pose_data, pose_run, tmp_path):
    trained, _ = pose_run
    config = pose_training.PoseTrainConfig(str(pose_data), str(tmp_path / "run"), init=str(trained / "model.keras"),
                                           **{**helpers.TINY_POSE, "features": 24})
    with pytest.raises(pose_training.DataError, match=r"model\.keras: --init holds shape"):
        pose_training.train_pose(config)
