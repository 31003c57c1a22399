"""``zoo eval-pose --stage`` and the pose commands bad-data errors."""

import json

import pytest

from common import cli
from common.train import convergence


def test_eval_pose_scores_the_weights_of_a_stage(pose_data, pose_run, capsys):
    from common import cli

    out, _ = pose_run
    assert cli.main(["eval-pose", str(out), str(pose_data), "--stage", "A"]) == 0
    stage_a = json.loads((out / "pckh_valid_stage_A.json").read_text(encoding="utf-8"))
    assert cli.main(["eval-pose", str(out), str(pose_data), "--stage", "C"]) == 0
    stage_c = json.loads((out / "pckh_valid_stage_C.json").read_text(encoding="utf-8"))
    assert cli.main(["eval-pose", str(out), str(pose_data)]) == 0
    assert json.loads((out / "pckh_valid.json").read_text(encoding="utf-8")) == stage_c  # the final model is stage C's
    assert set(stage_a) == set(stage_c)
    (out / "stage_B.weights.h5").rename(out / "moved.h5")
    try:
        capsys.readouterr()
        assert cli.main(["eval-pose", str(out), str(pose_data), "--stage", "B"]) == 2
        assert "stage_B.weights.h5: no such file" in capsys.readouterr().err
    finally:
        (out / "moved.h5").rename(out / "stage_B.weights.h5")


@pytest.mark.parametrize("break_data, message", [
    (lambda root: (root / "annot" / "valid.json").write_text(json.dumps([{"image": "00000.jpg"}])), "missing"),
    (lambda root: (root / "annot" / "valid.json").write_text(json.dumps(
        [{"image": "00000.jpg", "center": [1, 1], "scale": 1, "joints": [[0, 0]] * 14, "joints_vis": [1] * 14}])),
     "14 joints, expected 16"),
    (lambda root: (root / "images" / "00008.jpg").unlink(), "00008.jpg does not exist"),
])
def test_bad_data_is_one_line_and_exit_2(pose_data, pose_run, tmp_path, capsys, break_data, message):
    import shutil

    broken = tmp_path / "data"
    shutil.copytree(pose_data, broken)
    break_data(broken)
    assert cli.main(["eval-pose", str(pose_run[0]), str(broken)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("zoo eval-pose: error: ") and message in error and "valid.json" in error
    assert len(error.splitlines()) == 1


def test_train_pose_takes_overwrite():
    parser = cli.build_parser()
    assert parser.parse_args(["train-pose", "data", "run", "--overwrite"]).overwrite
    assert not parser.parse_args(["train-pose", "data", "run"]).overwrite


def _files(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_pose_clutter_defaults_to_none_and_is_recorded(tmp_path, capsys):
    from common.pose import synthetic

    base = ["synthetic-pose", "--images", "3", "--image-size", "64", "--seed", "4"]
    assert cli.main(base + [str(tmp_path / "default")]) == 0
    assert cli.main(base + [str(tmp_path / "none"), "--clutter", "none"]) == 0
    assert cli.main(base + [str(tmp_path / "figures"), "--clutter", "figures"]) == 0
    assert "clutter figures" in capsys.readouterr().out
    default, figures = _files(tmp_path / "default"), _files(tmp_path / "figures")
    assert default == _files(tmp_path / "none")
    assert json.loads(default["dataset.json"])["clutter"] == "none"
    assert json.loads(figures["dataset.json"])["clutter"] == "figures"
    assert figures["annot/train.json"] == default["annot/train.json"] and figures["images/00000.jpg"] != default[
        "images/00000.jpg"]
    for clutter in synthetic.CLUTTER:  # the parser accepts every setting of the generator
        assert cli.build_parser().parse_args(["synthetic-pose", "x", "--clutter", clutter]).clutter == clutter
    with pytest.raises(SystemExit) as exit_info:
        cli.main(base + [str(tmp_path / "bad"), "--clutter", "crowd"])
    assert exit_info.value.code == 2 and "invalid choice: 'crowd'" in capsys.readouterr().err


def _write_group(folder, totals):
    for name, total in totals.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "pckh_valid.json").write_text(json.dumps({"Total": total, "Head": 90.0}))


def test_compare_pose_pairs_runs_by_name(tmp_path, capsys):
    _write_group(tmp_path / "hourglass", {"seed_0": 40.0, "seed_1": 42.0, "seed_2": 41.0})
    _write_group(tmp_path / "acnn", {"seed_0": 43.0, "seed_1": 44.5, "seed_2": 44.0})
    flat, falling = [1.0, 0.8, 0.7, 0.7, 0.7], [1.0, 0.8, 0.6, 0.4, 0.2]
    for run, losses in {"hourglass/seed_0": flat, "hourglass/seed_1": flat, "hourglass/seed_2": flat,
                        "acnn/seed_0": flat, "acnn/seed_1": falling}.items():  # acnn/seed_2: no history
        (tmp_path / run / "history_C.csv").write_text("epoch,loss,val_loss\n" + "".join(
            f"{e},{v},{v}\n" for e, v in enumerate(losses)))
    (tmp_path / "acnn/seed_0/config.json").write_text(json.dumps({"stages": [{"name": "A"}, {"name": "B"}]}))
    (tmp_path / "acnn/seed_0/history_B.csv").write_text("epoch,loss,val_loss\n0,1,1\n1,1,1\n2,1,1\n")
    assert cli.main(["compare-pose", str(tmp_path / "hourglass"), str(tmp_path / "acnn")]) == 0
    out = capsys.readouterr().out
    assert "| seed_1 | 42.00 | 44.50 | +2.50 |" in out
    assert "difference +2.83 (95% CI" in out and "n = 3" in out
    assert "41.00 ± 1.00 [" in out  # hourglass: mean ± std [95% CI]
    assert out.splitlines()[-3:] == [  # the last stage's history: the one its config.json names last, else C
        f"{tmp_path / 'hourglass'}: 3 of 3 units converged (its last stage)",
        f"{tmp_path / 'acnn'}: 1 of 3 units converged; NOT converged: seed_1 (-100.0%); "
        "unchecked (no val_loss, or under 3 epochs): seed_2 (its last stage)", convergence.RULE]
    assert f"{tmp_path / 'acnn'}: stage B: 1 of 1 units converged" in out  # every stage, each run's own
    assert f"{tmp_path / 'acnn'}: stage C: 0 of 2 units converged; NOT converged: seed_1" in out


def test_tables_print_under_an_ascii_locale(zoo, tmp_path):
    _write_group(tmp_path / "hourglass", {"seed_0": 40.0, "seed_1": 42.0})
    _write_group(tmp_path / "acnn", {"seed_0": 43.0, "seed_1": 44.5})
    ascii_locale = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    done = zoo("compare-pose", tmp_path / "hourglass", tmp_path / "acnn", env=ascii_locale)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "41.00 ± 1.41 [" in done.stdout  # UTF-8, as Python's UTF-8 mode would write it


def test_compare_pose_refuses_unpaired_groups(tmp_path, capsys):
    _write_group(tmp_path / "a", {"seed_0": 40.0, "seed_1": 42.0})
    _write_group(tmp_path / "b", {"seed_0": 43.0, "seed_2": 44.0})
    (tmp_path / "empty").mkdir()
    assert cli.main(["compare-pose", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "same names" in capsys.readouterr().err
    assert cli.main(["compare-pose", str(tmp_path / "a"), str(tmp_path / "empty")]) == 2
    assert "no run with pckh_valid.json" in capsys.readouterr().err
