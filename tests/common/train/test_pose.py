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
    with pytest.raises(ValueError, match=r"^input_size must be a positive multiple of 64 \(acnn's stride\), got 100$"):
        pose_training.train_pose(pose_training.PoseTrainConfig(str(pose_data), str(tmp_path), input_size=100))
    with pytest.raises(ValueError, match=r"^base_filters must be an integer >= 1, got 0$"):
        pose_training.train_pose(pose_training.PoseTrainConfig(str(pose_data), str(tmp_path), base_filters=0))
    with pytest.raises(ValueError, match=r"^model must be one of \('acnn', 'hourglass'\), got 'unet'$"):
        pose_training.PoseTrainConfig(str(pose_data), str(tmp_path), model="unet")
    with pytest.raises(ValueError, match=r"^lr_scale must be > 0, got 0$"):
        pose_training.train_pose(pose_training.PoseTrainConfig(str(pose_data), str(tmp_path), lr_scale=0))
    assert not (tmp_path / "config.json").exists()


def test_lr_scale_multiplies_every_stages_rate_and_keeps_its_drops():
    import acnn_pose

    config = pose_training.PoseTrainConfig("data", "run", model="acnn", stage_factor=0.05, lr_scale=3.0)
    assert [(s.name, s.learning_rate, s.epochs, s.drops) for s in config.stages()] == [
        (s.name, pytest.approx(3 * s.learning_rate), s.epochs, s.drops) for s in acnn_pose.scaled_stages(0.05)]


def test_options_left_out_are_the_models_recipe():
    """The recipe is the model's (``registry.get(model).recipe``, declared in its package); given options win."""
    from common import registry

    for model in registry.names("pose"):
        recipe = registry.get(model).recipe
        config = pose_training.PoseTrainConfig("data", "run", model=model, batch_size=3)
        assert [getattr(config, field) for field in pose_training.RECIPE_FIELDS] == \
            [recipe.num_stacks, recipe.base_filters, recipe.input_size, 3]
    assert pose_training.PoseTrainConfig("data", "run").model == registry.names("pose")[0]


# A run folder of the pose study (docs/results.md), written before issue 37: "attention" and "features", no
# "base_filters"; its command was `--stacks 2 --features 32 --input-size 128 --batch-size 8 --no-attention
# --stage-factor 0.05 --seed 0`.
OLD_RUN = helpers.ROOT / "docs" / "studies" / "acnn" / "hourglass" / "seed_0" / "config.json"


@pytest.mark.parametrize("change, refused", [
    ({}, None),
    ({"base_filters": 24}, "features 32 -> 24"),
    ({"model": "acnn"}, "model hourglass -> acnn, stages differs"),
    ({"input_size": 64}, "input_size 128 -> 64"),
])
def test_a_run_folder_of_before_the_rename_is_compared_under_its_old_keys(tmp_path, change, refused):
    from common import registry

    previous = json.loads(OLD_RUN.read_text(encoding="utf-8"))
    assert "features" in previous and "base_filters" not in previous  # what this test is about
    (tmp_path / "config.json").write_text(OLD_RUN.read_text(encoding="utf-8"), encoding="utf-8")
    options = dict(model="hourglass", num_stacks=2, base_filters=32, input_size=128, batch_size=8, stage_factor=0.05)
    config = pose_training.PoseTrainConfig(previous["data"], str(tmp_path), **{**options, **change})
    record = pose_training.run_record(config, previous["train_images"], registry.get(config.model).stages(0.05))
    if refused is None:
        assert pose_training.claim_run(tmp_path, record, overwrite=False) == previous  # resumes
        return
    with pytest.raises(pose_training.callbacks.OtherOptions) as refusal:
        pose_training.claim_run(tmp_path, record, overwrite=False)
    assert str(refusal.value) == f"{tmp_path}: holds a run with other options ({refused}); give a new folder or " \
                                 "--overwrite"


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
                                           **{**helpers.TINY_POSE, "base_filters": 24})
    with pytest.raises(pose_training.DataError, match=r"model\.keras: --init holds shape"):
        pose_training.train_pose(config)


def test_a_run_of_before_the_rename_resumes_with_its_old_command(pose_data, pose_run, tmp_path, zoo_here):
    """Its config.json holds "attention" and "features" (no "base_filters"): `--features 16 --attention` resume it.

    (The new spelling gives the same config, tests/common/cli/test_pose_flags.py, which the old keys accept:
    ``test_a_run_folder_of_before_the_rename_is_compared_under_its_old_keys``.)
    """
    import shutil

    from common import registry

    run = tmp_path / "run"
    shutil.copytree(pose_run[0], run)
    record = json.loads((run / "config.json").read_text(encoding="utf-8"))
    old = {("features" if key == "base_filters" else key): value for key, value in record.items()}
    (run / "config.json").write_text(json.dumps({**old, "attention": True}), encoding="utf-8")
    kept = {name: (run / name).read_bytes() for name in ("config.json", "history_A.csv", "history_B.csv")}
    done = zoo_here("train-pose", pose_data, run, "--stacks", "2", "--features", "16", "--input-size", "64",
                    "--batch-size", "4", "--stage-factor", "0.001", "--attention")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "zoo train-pose: --features is deprecated and goes in the next release; use --base-filters",
        "zoo train-pose: --attention is deprecated and goes in the next release; use --model "
        f"{registry.names('pose')[0]}"]
    assert [line.split(",")[0] for line in done.stdout.splitlines() if "already" in line] == \
        [f"stage {stage}: already trained" for stage in "ABC"]
    assert {name: (run / name).read_bytes() for name in kept} == kept  # the run keeps its config and history
