"""``zoo train-pose`` / ``eval-pose`` / ``pose-pictures`` on a tiny synthetic set and a tiny model."""

import json

import cv2
import numpy as np
import pytest

from common import cli
from common.pose import synthetic as synthetic_pose
from common.train import pose as pose_training

TINY = dict(num_stacks=2, features=16, input_size=64, batch_size=4, stage_factor=0.001, run_eagerly=True, verbose=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose_data")
    synthetic_pose.write_dataset(root, num_images=10, seed=0, size=96)
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    lines = []
    pose_training.train_pose(pose_training.PoseTrainConfig(str(data), str(out), **TINY), log=lines.append)
    return out, lines


def test_train_pose_runs_the_three_stages_and_saves(run):
    out, lines = run
    assert lines[0].startswith("training acnn (") and "stages A:1, B:1, C:1" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == ["stage A", "stage B", "stage C"]
    config = json.loads((out / "config.json").read_text())
    assert config["train_images"] == 8 and [s["name"] for s in config["stages"]] == ["A", "B", "C"]
    assert (out / "model.keras").is_file() and (out / "history_C.csv").is_file()


def test_rerun_resumes_without_training(data, run):
    out, _ = run
    lines = []
    pose_training.train_pose(pose_training.PoseTrainConfig(str(data), str(out), **TINY), log=lines.append)
    assert [line.split(",")[0] for line in lines[1:]] == [f"stage {s}: already trained" for s in "ABC"]


def test_bad_training_configuration(data, tmp_path):
    with pytest.raises(ValueError, match="input_size"):
        pose_training.train_pose(pose_training.PoseTrainConfig(str(data), str(tmp_path), input_size=100))


def test_eval_pose_prints_the_table_1_columns(zoo, data, run):
    out, _ = run
    done = zoo("eval-pose", out, data, "--name", "tiny")
    assert done.returncode == 0, done.stderr[-2000:]
    header, rule, row = done.stdout.strip().splitlines()
    assert header == "| Method | Head | Sho. | Elb. | Wri. | Hip | Kne. | Ank. | Total |"
    assert row.startswith("| tiny | ") and len(row.split("|")) == 11
    saved = json.loads((out / "pckh_valid.json").read_text())
    assert 0.0 <= saved["Total"] <= 100.0 and len(saved) == 16 + 8


def test_eval_pose_scores_the_weights_of_a_stage(data, run, capsys):
    from common import cli

    out, _ = run
    assert cli.main(["eval-pose", str(out), str(data), "--stage", "A"]) == 0
    stage_a = json.loads((out / "pckh_valid_stage_A.json").read_text())
    assert cli.main(["eval-pose", str(out), str(data), "--stage", "C"]) == 0
    stage_c = json.loads((out / "pckh_valid_stage_C.json").read_text())
    assert cli.main(["eval-pose", str(out), str(data)]) == 0
    assert json.loads((out / "pckh_valid.json").read_text()) == stage_c  # the final model is stage C's
    assert set(stage_a) == set(stage_c)
    (out / "stage_B.weights.h5").rename(out / "moved.h5")
    try:
        capsys.readouterr()
        assert cli.main(["eval-pose", str(out), str(data), "--stage", "B"]) == 2
        assert "stage_B.weights.h5: no such file" in capsys.readouterr().err
    finally:
        (out / "moved.h5").rename(out / "stage_B.weights.h5")


def test_pose_pictures(data, run, tmp_path, capsys):
    out, _ = run
    assert cli.main(["pose-pictures", str(out), str(data), str(tmp_path)]) == 0
    skeleton, heatmaps, masks = (cv2.imread(str(tmp_path / f"{n}.png")) for n in ("skeleton", "heatmaps", "masks"))
    assert skeleton.shape == (96, 96, 3)
    assert heatmaps.shape == (128, 4 * 32 + 64, 3)  # a 4 x 4 grid of half-size tiles, the crop on the right
    assert masks.shape == (64, 2 * 64, 3)  # the crop, then stage 1's mask over it
    assert np.all(masks[:, 64:].astype(int) <= masks[:, :64].astype(int) + 1)  # masks only darken


@pytest.mark.parametrize("break_data, message", [
    (lambda root: (root / "annot" / "valid.json").write_text(json.dumps([{"image": "00000.jpg"}])), "missing"),
    (lambda root: (root / "annot" / "valid.json").write_text(json.dumps(
        [{"image": "00000.jpg", "center": [1, 1], "scale": 1, "joints": [[0, 0]] * 14, "joints_vis": [1] * 14}])),
     "14 joints, expected 16"),
    (lambda root: (root / "images" / "00008.jpg").unlink(), "00008.jpg does not exist"),
])
def test_bad_data_is_one_line_and_exit_2(data, run, tmp_path, capsys, break_data, message):
    import shutil

    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    break_data(broken)
    assert cli.main(["eval-pose", str(run[0]), str(broken)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("zoo eval-pose: error: ") and message in error and "valid.json" in error
    assert len(error.splitlines()) == 1
