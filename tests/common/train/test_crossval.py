import csv
import hashlib
import json
import logging
import pathlib

import numpy as np
import pytest

from common.ct import shards
from common.ct import synthetic as synthetic_ct
from common.train import convergence, crossval
from common.train import segmentation as training
from tests import helpers

TINY = dict(base_filters=2, epochs=1, batch_size=4, crop_size=32, learning_rate=1e-3)


@pytest.fixture(scope="module")
def five_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    synthetic_ct.write_cohort(root / "cohort", num_cases=5, seed=2, size=(32, 32, 4), spacing=(10.8, 10.8, 20.0))
    shards.prepare(root / "cohort", root / "prepared")
    return root / "prepared"


def test_kfold_partitions_the_cases():
    ids = [f"c{i}" for i in range(12)]
    folds = crossval.kfold(ids, 5, seed=3)
    assert sorted(sum(folds, [])) == sorted(ids)
    assert sorted(len(f) for f in folds) == [2, 2, 2, 3, 3]
    assert folds == crossval.kfold(ids, 5, seed=3) != crossval.kfold(ids, 5, seed=4)
    with pytest.raises(ValueError, match="folds"):
        crossval.kfold(ids, 13)


def test_interrupted_cv_resumes_with_the_same_folds(five_cases, tmp_path, monkeypatch):
    config = training.TrainConfig(data=str(five_cases), out="", **TINY)
    trained = []
    real_train = training.train

    # Three folds of the five cases (2, 2, 1 held out) test what five would, in 3/5 of the training.
    def train_until_fold_2(unit_config, **kwargs):
        if len(trained) == 1:
            raise KeyboardInterrupt("stopped during fold 2")
        trained.append(unit_config.out)
        return real_train(unit_config, **kwargs)

    monkeypatch.setattr(training, "train", train_until_fold_2)
    with pytest.raises(KeyboardInterrupt):
        crossval.run_cv(config, tmp_path, folds=3)
    plan_before = json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))
    assert [p.endswith(f"fold_{i}") for i, p in enumerate(trained, 1)] == [True]
    assert not (tmp_path / "postprocessing.json").exists()  # decided from every fold, not one

    trained.clear()
    monkeypatch.setattr(training, "train", lambda c, **kw: (trained.append(c.out), real_train(c, **kw))[1])
    summary = crossval.run_cv(config, tmp_path, folds=3)
    assert [p.rsplit("/", 1)[1] for p in trained] == ["fold_2", "fold_3"]
    assert json.loads((tmp_path / "plan.json").read_text(encoding="utf-8")) == plan_before

    held_out = [json.loads((tmp_path / f"fold_{i}" / "metrics.json").read_text(encoding="utf-8"))["test_cases"]
                for i in range(1, 4)]
    assert sorted(sum(held_out, [])) == [f"case_{i:03d}" for i in range(5)]  # a partition by case
    cohort = shards.cohort_sha256(shards.load_manifest(five_cases))
    for i, cases in enumerate(held_out, 1):
        record = json.loads((tmp_path / f"fold_{i}" / "config.json").read_text(encoding="utf-8"))
        split = record["split"]
        assert split["test"] == cases and not set(split["train"]) & set(cases)
        assert record["data_sha256"] == cohort  # what `zoo compare` checks unit by unit
    assert summary["units"] == [f"fold_{i}" for i in range(1, 4)]
    dice = summary["per_class"]["1"]["dice"]
    assert len(dice["values"]) == 3 and dice["mean"] == pytest.approx(np.nanmean(dice["values"]))
    assert "| liver |" in (tmp_path / "summary.md").read_text(encoding="utf-8")
    _check_postprocessing_decision(tmp_path)
    _check_evaluate_reproduces_the_scores(tmp_path)

    # A fold scored before the rule was measured (an older zoo) gets scored, not trained, on a rerun.
    older = json.loads((tmp_path / "fold_2" / "metrics.json").read_text(encoding="utf-8"))
    (tmp_path / "fold_2" / "metrics.json").write_text(json.dumps({k: v for k, v in older.items() if k != "lcc_dice"}))
    (tmp_path / "postprocessing.json").unlink()
    trained.clear()
    crossval.run_cv(config, tmp_path, folds=3)
    rescored = json.loads((tmp_path / "fold_2" / "metrics.json").read_text(encoding="utf-8"))
    assert trained == [] and rescored["lcc_dice"] == older["lcc_dice"] and rescored.keys() == older.keys()
    _check_postprocessing_decision(tmp_path)

    with pytest.raises(ValueError, match="different split"):
        crossval.run_cv(config, tmp_path, folds=4)  # another number of folds is another split


def _check_postprocessing_decision(cv):
    """postprocessing.json keeps a class's largest component only where it raised the folds' mean held-out Dice."""
    units = [json.loads((cv / f"fold_{i}" / "metrics.json").read_text(encoding="utf-8")) for i in range(1, 4)]
    decision = json.loads((cv / "postprocessing.json").read_text(encoding="utf-8"))
    assert sorted(decision["classes"], key=int) == [str(k) for k in range(1, 8)]
    for label, entry in decision["classes"].items():
        plain = [u["per_case"][case][label]["dice"] for u in units for case in u["test_cases"]]
        reduced = [u["lcc_dice"][case][label] for u in units for case in u["test_cases"]]
        assert entry["cases"] == 5 and all(0 <= d <= 1 for d in reduced)
        assert entry["dice"] == pytest.approx(np.mean(plain)) and entry["dice_lcc"] == pytest.approx(np.mean(reduced))
        assert entry["apply"] == (np.mean(reduced) > np.mean(plain))


def _check_evaluate_reproduces_the_scores(cv):
    """`zoo evaluate` of a fold, plain, gives the Dice `zoo cv` scored; the ensemble evaluates too."""
    from common import cli

    assert cli.main(["evaluate", str(cv / "fold_1"), "--tta", "none", "--tile", "whole"]) == 0
    scored = json.loads((cv / "fold_1" / "metrics.json").read_text(encoding="utf-8"))["per_case"]
    evaluated = json.loads((cv / "fold_1" / "evaluation.json").read_text(encoding="utf-8"))
    assert {c: {k: m["dice"] for k, m in v.items()} for c, v in evaluated.items()} == \
        {c: {k: m["dice"] for k, m in v.items()} for c, v in scored.items()}
    assert cli.main(["evaluate", str(cv), "--cases", "case_000", "--postprocess"]) == 0  # 3 folds, mirrored
    assert list(json.loads((cv / "evaluation.json").read_text(encoding="utf-8"))) == ["case_000"]


def test_compare_gives_the_paired_t_test(tmp_path):
    from scipy import stats

    a = helpers.fake_cv_run(tmp_path, "a", [0.80, 0.82, 0.79, 0.85, 0.81])
    b = helpers.fake_cv_run(tmp_path, "b", [0.83, 0.84, 0.80, 0.88, 0.82])
    result = crossval.compare(a, b)
    np.testing.assert_allclose(result["difference"], [0.03, 0.02, 0.01, 0.03, 0.01], atol=1e-12)
    assert result["p_value"] == pytest.approx(stats.ttest_rel([0.78, 0.79, 0.75, 0.83, 0.77],
                                                              [0.75, 0.77, 0.74, 0.80, 0.76]).pvalue)
    c = helpers.fake_cv_run(tmp_path, "c", [0.8, 0.8])
    with pytest.raises(ValueError, match="same finished folds"):
        crossval.compare(a, c)


def test_compare_over_chosen_classes_with_ci(tmp_path, capsys):
    from common import cli

    a = helpers.fake_cv_run(tmp_path, "a", [0.80, 0.82, 0.79, 0.85, 0.81])
    b = helpers.fake_cv_run(tmp_path, "b", [0.83, 0.84, 0.80, 0.88, 0.82])
    (a / "fold_1" / "config.json").write_text(json.dumps({"class_names": ["background", "liver", "spleen"]}))
    result = crossval.compare(a, b, classes=crossval.class_labels(a, ["spleen"]))
    assert result["a"] == pytest.approx([0.70, 0.72, 0.69, 0.75, 0.71])  # class 2 alone: dice - 0.1
    assert result["paired"]["mean_difference"] == pytest.approx(0.02)
    low, high = result["paired"]["ci95"]
    assert low < 0.02 < high and result["summary_b"]["n"] == 5
    assert crossval.class_labels(a, ["1", "spleen"]) == ["1", "2"]
    with pytest.raises(ValueError, match="kidney"):
        crossval.class_labels(a, ["kidney"])
    for fold in range(1, 6):  # histories with val_loss: b's fold 5 still falls when training stopped
        for arm, falling in ((a, False), (b, fold == 5)):
            losses = [1.0 - 0.05 * e if falling else max(0.5, 1.0 - 0.1 * e) for e in range(10)]
            (arm / f"fold_{fold}" / "history.csv").write_text(
                "epoch,loss,val_loss\n" + "".join(f"{e},{v},{v}\n" for e, v in enumerate(losses)))
    (a / "fold_2" / "history.csv").unlink()  # a unit without a history cannot be checked
    assert cli.main(["compare", str(a), str(b), "--classes", "liver"]) == 0
    out = capsys.readouterr().out
    assert "over classes liver" in out and "difference +2.00 (95% CI" in out
    lines = out.splitlines()
    assert lines[-3:] == [f"{a}: 4 of 5 units converged; unchecked (no val_loss, or under 3 epochs): fold_2",
                          f"{b}: 4 of 5 units converged; NOT converged: fold_5 (-16.7%)",
                          convergence.RULE]
    assert any(line.startswith(f"  {b}: ") and line.endswith("  [1 unit(s) not converged]") for line in lines)
    assert cli.main(["compare", str(a), str(b), "--classes", "7"]) == 2  # a label no fold scored
    assert "no class ['7']" in capsys.readouterr().err


CLASS_NAMES = ["background", "liver", "gallbladder", "stomach"]
COHORT, OTHER = (hashlib.sha256(text).hexdigest() for text in (b"the cohort", b"a regenerated cohort"))
OLDER = "scored by an older zoo"  # its config.json has no data_sha256
# Per-class Dice of five units: arm b loses the gallbladder in folds 1 and 4 and the stomach in fold 4; a's
# undefined stomach Dice in fold 5 is no miss.
DICE_A = {"1": [0.95, 0.94, 0.96, 0.93, 0.95], "2": [0.81, 0.78, 0.80, 0.83, 0.79],
          "3": [0.88, 0.86, 0.87, 0.85, float("nan")]}
DICE_B = {"1": [0.95, 0.95, 0.96, 0.94, 0.95], "2": [0.0, 0.8, 0.79, 0.08, 0.82], "3": [0.87, 0.88, 0.86, 0.31, 0.89]}


def _hand_built_cv(root, name, dice: dict, digests: list) -> pathlib.Path:
    """A cv folder of five finished units, each a metrics.json (``dice``: label -> Dice per unit) and a config.json
    of ``CLASS_NAMES`` recording its digest (``OLDER``: none)."""
    out = root / name
    units = [{"name": f"fold_{k}", "test_cases": [f"case_{k:03d}"], "seed": k} for k in range(1, 6)]
    crossval._plan_units(out, units)
    for k, (unit, digest) in enumerate(zip(units, digests)):
        recorded = {} if digest == OLDER else {"data_sha256": digest}
        (out / unit["name"]).mkdir()
        (out / unit["name"] / "metrics.json").write_text(json.dumps(
            {**unit, "per_class": {label: {"dice": values[k]} for label, values in dice.items()}}))
        (out / unit["name"] / "config.json").write_text(json.dumps({"class_names": CLASS_NAMES, **recorded}))
    return out


def _missed(a, b, below="0.50") -> list[str]:
    """The two miss lines of ``zoo compare a b`` for arms of ``DICE_A`` and ``DICE_B``."""
    return [f"{a}: no whole-organ miss (class Dice < {below})",
            f"{b}: whole-organ misses (class Dice < {below}): gallbladder 2 (fold_1 0.00, fold_4 0.08), "
            "stomach 1 (fold_4 0.31)"]


def test_compare_says_the_arms_trained_on_the_same_voxels_and_counts_whole_organ_misses(tmp_path, zoo_here):
    a = _hand_built_cv(tmp_path, "a", DICE_A, [COHORT] * 5)
    b = _hand_built_cv(tmp_path, "b", DICE_B, [COHORT] * 5)
    done = zoo_here("compare", a, b)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == [f"cohort: every unit of both arms on the same voxels (data_sha256 {COHORT[:12]})",
                         f"| unit | {a} | {b} | difference |"]
    assert lines[-5:-3] == _missed(a, b) and lines[-1] == convergence.RULE
    lines = zoo_here("compare", a, b, "--miss-below", "0.1").stdout.splitlines()
    assert lines[-5:-3] == [f"{a}: no whole-organ miss (class Dice < 0.10)",
                            f"{b}: whole-organ misses (class Dice < 0.10): gallbladder 2 (fold_1 0.00, fold_4 0.08)"]
    assert zoo_here("compare", a, b, "--miss-below", "0.125").stdout.splitlines()[-4].startswith(
        f"{b}: whole-organ misses (class Dice < 0.125): gallbladder 2")
    # Each pair on one cohort, fold 5 of both arms on another: equal pair by pair, two cohorts over the units.
    for arm in (a, b):
        (arm / "fold_5" / "config.json").write_text(json.dumps({"class_names": CLASS_NAMES, "data_sha256": OTHER}))
    assert zoo_here("compare", a, b).stdout.splitlines()[0] == (
        f"cohort: every unit of both arms on the same voxels (pair by pair, 2 cohorts: data_sha256 {COHORT[:12]}, "
        f"{OTHER[:12]})")


def test_compare_warns_of_a_unit_on_other_voxels_and_still_compares(tmp_path, zoo_here):
    a = _hand_built_cv(tmp_path, "a", DICE_A, [COHORT] * 4 + [None])  # fold 5 from a folder prepared before digests
    b = _hand_built_cv(tmp_path, "b", DICE_B, [COHORT, OTHER, COHORT, COHORT, COHORT])
    (b / "fold_3" / "config.json").unlink()  # a unit without its config.json: unchecked, its names from the others
    done = zoo_here("compare", a, b)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [f"WARNING cohort: fold_2 trained on other voxels in {b} than in {a} (data_sha256 differ)",
                         f"cohort: 2 of 5 units of both arms on the same voxels (data_sha256 {COHORT[:12]})",
                         "cohort: 2 unit(s) without data_sha256 (prepared before digests): not checked",
                         f"| unit | {a} | {b} | difference |"]
    assert any(line.startswith(f"{b} - {a}: difference ") for line in lines) and lines[-5:-3] == _missed(a, b)


def test_compare_of_folders_from_before_digests_says_once_they_are_not_checked(tmp_path, zoo_here):
    a = _hand_built_cv(tmp_path, "a", DICE_A, [OLDER] * 5)
    b = _hand_built_cv(tmp_path, "b", DICE_B, [None] * 5)
    for unit in range(1, 6):  # b's units scored by hand, without any config.json: classes named by label
        (b / f"fold_{unit}" / "config.json").unlink()
    done = zoo_here("compare", a, b)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if "data_sha256" in line] == [
        "cohort: 5 unit(s) without data_sha256 (prepared before digests): not checked"] == lines[:1]
    assert lines[-5:-3] == [_missed(a, b)[0], f"{b}: whole-organ misses (class Dice < 0.50): class 2 2 (fold_1 0.00, "
                                              "fold_4 0.08), class 3 1 (fold_4 0.31)"]
    (a / "fold_3" / "config.json").write_text("{")  # cut short: named, not taken for a unit without a digest
    done = zoo_here("compare", a, b)
    assert done.returncode == 2 and done.stderr.startswith(
        f"zoo compare: error: {a / 'fold_3' / 'config.json'}: not a run's configuration (")


def test_organ_misses_and_the_cohort_check_as_data():
    units = [{"name": "fold_1", "per_class": {"1": {"dice": 0.9}, "2": {"dice": 0.2}}},
             {"name": "fold_2", "per_class": {"1": {"dice": 0.49}, "2": {"dice": float("nan")}}},
             {"name": "fold_3", "per_class": {"1": {"dice": 0.5}}}]  # scored before class 2 was: no miss either
    assert crossval.organ_misses(units, 0.5, ["background", "liver"]) == {
        "liver": [("fold_2", 0.49)], "class 2": [("fold_1", 0.2)]}
    assert crossval.organ_misses(units, 0.1, ["background", "liver", "spleen"]) == {"liver": [], "spleen": []}
    for threshold in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match=r"miss_below: a Dice fraction in \(0, 1\), got"):
            crossval.organ_misses(units, threshold)
    configs_a = {"fold_1": {"data_sha256": COHORT}, "fold_2": {"data_sha256": COHORT}, "fold_3": {}}
    configs_b = {"fold_1": {"data_sha256": COHORT}, "fold_2": {"data_sha256": OTHER}, "fold_3": {"data_sha256": None}}
    assert crossval.cohort_check(configs_a, configs_b) == {"same": {"fold_1": COHORT}, "differ": ["fold_2"],
                                                           "unchecked": ["fold_3"]}


def test_runs_as_rows_of_the_papers_table(tmp_path):
    a = helpers.fake_cv_run(tmp_path, "a", [0.80, 0.90])
    table = crossval.format_runs({"U-Net": a, "EAS U-Net": helpers.fake_cv_run(tmp_path, "b", [0.70, 0.70])}, ("dice",))
    # fold means over the two classes: (0.75, 0.85) and (0.65, 0.65)
    assert table.splitlines() == ["| method | dice |", "|---|---|", "| U-Net (2 folds) | 80.00 (± 7.07) |",
                                  "| EAS U-Net (2 folds) | 65.00 (± 0.00) |", "",
                                  "mean (± sample std, ddof 1) over each row's units (in brackets)"]
    assert crossval._count_units([{"name": f"fold_{k}_repeat_{r}"} for k in (1, 2) for r in (1, 2, 3)]) == (
        "6 units: 2 folds x 3 seeds")
    going = [{"name": "fold_1_repeat_1"}, {"name": "fold_1_repeat_2"}, {"name": "fold_2_repeat_1"}]
    assert crossval._count_units(going) == "3 units: 2 folds"
    (tmp_path / "empty").mkdir()
    crossval._plan_units(tmp_path / "empty", [{"name": "fold_1", "test_cases": ["c0"], "seed": 0}])
    with pytest.raises(ValueError, match="empty: no finished fold"):
        crossval.format_runs({"x": tmp_path / "empty"})


def test_repeated_runs_share_the_split_and_differ_in_seed(five_cases, tmp_path):
    config = training.TrainConfig(data=str(five_cases), out="", test_fraction=0.4, seed=5, validation_cases=1, **TINY)
    summary = crossval.run_cv(config, tmp_path, folds=1, repeats=2)
    plan = json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))["units"]
    assert [u["name"] for u in plan] == summary["units"] == ["run_1", "run_2"]
    assert plan[0]["test_cases"] == plan[1]["test_cases"] and len(plan[0]["test_cases"]) == 2
    records = [json.loads((tmp_path / u / "config.json").read_text(encoding="utf-8")) for u in ("run_1", "run_2")]
    assert [r["seed"] for r in records] == [5, 6]
    # One validation case for the convergence rule, the same whatever the seed, out of the two trained on.
    assert records[0]["split"]["validation"] == records[1]["split"]["validation"] and len(
        records[0]["split"]["validation"]) == 1 and len(records[0]["split"]["train"]) == 2
    with open(tmp_path / "run_1" / "history.csv", encoding="utf-8") as stream:
        assert float(next(csv.DictReader(stream))["val_loss"]) > 0
    with pytest.raises(ValueError, match="repeats"):
        crossval.run_cv(config, tmp_path / "x", folds=1, repeats=1)


def test_every_fold_and_repeat_trains_from_its_own_seed_on_the_same_split():
    ids = [f"case_{i:03d}" for i in range(6)]
    units = crossval.plan_units(ids, seed=7, folds=3, repeats=2)
    assert [u["name"] for u in units] == [f"fold_{k}_repeat_{r}" for r in (1, 2) for k in (1, 2, 3)]
    assert [u["seed"] for u in units] == [7, 8, 9, 10, 11, 12]
    assert [u["test_cases"] for u in units[:3]] == [u["test_cases"] for u in units[3:]] == crossval.kfold(ids, 3, 7)
    assert [u["seed"] for u in crossval.plan_units(ids, seed=7, folds=3)] == [7, 8, 9]
    assert [u["seed"] for u in crossval.plan_units(ids, folds=3, seeds=[100, 200])] == [100, 101, 102, 200, 201, 202]
    with pytest.raises(ValueError, match="same seed"):
        crossval.plan_units(ids, folds=3, seeds=[0, 1])
    with pytest.raises(ValueError, match="disagree"):
        crossval.plan_units(ids, folds=3, repeats=3, seeds=[0, 10])


def test_cv_on_a_context_cohort_scores_distractor_errors(tmp_path, capsys, caplog):
    """Where the cohort marks organ look-alikes, every unit scores them; a unit scored without them is rescored."""
    import SimpleITK as sitk

    from common import cli
    from common.ct import metrics, synthetic_context

    cohort = tmp_path / "cohort"
    synthetic_context.write_context_cohort(cohort, num_cases=4, seed=1, size=(48, 48, 8), spacing=(7.0, 7.0, 10.0))
    shards.prepare(cohort, tmp_path / "prepared")
    config = training.TrainConfig(data=str(tmp_path / "prepared"), out="", **TINY)
    crossval.run_cv(config, tmp_path / "cv", folds=2)
    unit = tmp_path / "cv" / "fold_1"
    scored = json.loads((unit / "metrics.json").read_text(encoding="utf-8"))
    case = scored["test_cases"][0]
    assert cli.main(["predict", str(unit), str(cohort / "images" / f"{case}.nii.gz"), str(tmp_path / "p.nii.gz"),
                     "--tta", "none", "--tile", "whole"]) == 0
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "p.nii.gz")))
    decoys = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / "distractors" / f"{case}.nii.gz")))
    expected = metrics.distractor_errors(predicted, decoys, range(1, 8))
    got = {int(k): v["distractor_error"] for k, v in scored["per_case"][case].items()}
    assert got == pytest.approx(expected, nan_ok=True) and not np.isnan([got[2], got[4]]).any()

    # Scored by an older zoo: rescored on a rerun (not trained); without its model, kept and said so.
    older = {**scored, "per_class": {k: {n: v for n, v in m.items() if n != "distractor_error"}
                                     for k, m in scored["per_class"].items()}}
    (unit / "metrics.json").write_text(json.dumps(older))
    (tmp_path / "cv" / "fold_2" / "metrics.json").write_text(json.dumps(older | {"name": "fold_2"}))
    (tmp_path / "cv" / "fold_2" / "model.keras").unlink()
    caplog.set_level(logging.INFO, logger="common")
    crossval.run_cv(config, tmp_path / "cv", folds=2)
    lines = caplog.messages
    assert json.loads((unit / "metrics.json").read_text(encoding="utf-8"))["per_class"] == scored["per_class"]
    assert any("fold_1: finished earlier, scoring" in line and "distractor errors" in line for line in lines)
    assert any("fold_2: finished earlier without the distractor errors" in line for line in lines)
    assert cli.main(["compare", str(tmp_path / "cv"), str(tmp_path / "cv"), "--metric", "distractor_error"]) == 2
    assert "fold_2: no 'distractor_error' scored" in capsys.readouterr().err


def test_an_unfinished_unit_of_other_options_is_refused_before_it_trains(five_cases, tmp_path):
    config = training.TrainConfig(data=str(five_cases), out="", **TINY)
    (tmp_path / "fold_1").mkdir()
    (tmp_path / "fold_1" / "config.json").write_text(json.dumps({"base_filters": 4, "epochs": 1}), encoding="utf-8")
    with pytest.raises(ValueError) as raised:  # `zoo cv` has no --overwrite: the way out is a new folder
        crossval.run_cv(config, tmp_path, folds=5)
    assert str(raised.value) == f"{tmp_path / 'fold_1'}: holds a run with other options (base_filters 4 -> 2); " \
        "give a new output folder"
    assert sorted(p.name for p in (tmp_path / "fold_1").iterdir()) == ["config.json"]


def test_a_metric_no_class_scored_is_nan_without_a_warning(recwarn):
    unit = {"name": "fold_1", "per_class": {"1": {"dice": 0.0, "assd": float("nan")},
                                            "2": {"dice": 0.5, "assd": float("nan")}}}
    assert np.isnan(crossval.unit_mean(unit, "assd")) and crossval.unit_mean(unit, "dice") == 0.25
    assert crossval.unit_mean({**unit, "per_class": {**unit["per_class"], "2": {"assd": 2.0}}}, "assd") == 2.0
    assert not recwarn.list  # numpy's "Mean of empty slice" would reach `zoo compare`'s terminal
