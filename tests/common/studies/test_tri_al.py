import json

import cv2
import keras
import numpy as np
import pytest

import tri_al
from common import errors
from common.slides import synthetic as synthetic_slides
from common.slides import triplets
from common.studies import tri_al as tri_al_study
from common.studies import tri_al_report
from tests import helpers

RUN = ["--runs", "2", "--iterations", "2", "--budget", "6", "--candidates", "9", "--initial-per-class", "2",
       "--epochs", "1", "--source-epochs", "1", "--learning-rate", "1e-3", "--batch-size", "16"]
TINY = ["--base-filters", "4", "--head-units", "16", *RUN]  # CPU-sized deviations: narrow VGG16s, small head


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two labs of three slides, their triplets, and the folder a `zoo tri-al` run writes into."""
    root = tmp_path_factory.mktemp("tri_al_study")
    synthetic_slides.write_cohort(root / "slides", slides_per_lab=3, seed=2, size=(512, 512))
    triplets.prepare_triplets(root / "slides", root / "triplets", tile_size=32, max_per_slide=15)
    return root


def test_study_runs_resumes_and_reports_table_ii_and_figures(zoo, zoo_here, study):
    args = ["tri-al", study / "triplets", study / "out", "--strategy", "supervised", "ITER", "--fractions",
            "0.5,1", "--stain-augment", *TINY]  # HED jitter on: every training stage runs it, resumes the same
    done = zoo(*args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| Total (macro) |" in done.stdout and "TRI-AL_ITER" in done.stdout and "TRI-SL(50%)" in done.stdout
    plan = json.loads((study / "out" / "study.json").read_text(encoding="utf-8"))
    target = sum(plan["target"].values(), [])
    assert all(s.startswith("labB") for s in target) and all(s.startswith("labA") for s in plan["source"]["train"])
    assert plan["settings"]["head_units"] == 16 and plan["settings"]["train"]["nesterov"] is True
    assert plan["settings"]["train"]["stain_augment"] == 0.05  # --stain-augment without a value: sigma 0.05
    assert keras.models.load_model(study / "out" / "source" / "model.keras").count_params() > 0  # to adapt again
    assert not set(plan["target"]["train"]) & set(plan["target"]["test"])
    for run in (0, 1):
        assert (study / "out" / "ITER" / f"run_{run}" / "iteration_1.json").exists()
    # Every training logs its epoch as zoo train does (common.train.callbacks.logging_callbacks).
    for logs in ("source/logs", "SL_50/run_1/logs", "ITER/run_0/logs/iteration_0", "ITER/run_1/logs/iteration_1"):
        _assert_logged(study / "out" / logs)
    stamp = (study / "out" / "ITER" / "run_0" / "iteration_1.json").stat().st_mtime_ns
    _as_before_base_filters(study / "out" / "study.json", width=0.0625)
    # Everything is finished: the rerun only reads the states, of a study and with a flag from before base_filters
    # (in this process: the first run was the fresh one).
    flag = args.index("--base-filters")
    again = zoo_here(*args[:flag], "--width", "0.0625", *args[flag + 2:])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "zoo tri-al: --width is deprecated and goes in the next release; use --base-filters 4" in \
        again.stderr.splitlines()
    assert (study / "out" / "ITER" / "run_0" / "iteration_1.json").stat().st_mtime_ns == stamp
    assert again.stdout.splitlines()[-12:] == done.stdout.splitlines()[-12:]

    report = zoo_here("tri-al-report", study / "out")
    assert report.returncode == 0, report.stderr[-3000:]
    table = (study / "out" / "table_ii.md").read_text(encoding="utf-8")
    lines = [line for line in table.splitlines() if line.startswith("|")]
    rows = [line.split(" | ")[0].strip("| ") for line in lines[2:]]
    assert rows == ["Blood", "Damaged", "Muscle", "Stroma", "Urothelium", "Total (micro)", "Total (macro)", "Runs",
                    "Training triplets"]
    assert lines[0].split(" | ")[1:] == ["TRI-CNN", "TRI-SL(50%)", "TRI-SL(100%)", "TRI-AL_ITER |"]
    # the paired tests under the table, micro then macro F1: the positive control first, then ITER against its
    # nearest SL and SL(100%); then TOST against SL(100%), micro and macro
    t_tests = ["- TRI-SL(100%) - TRI-SL(50%)", "- TRI-AL_ITER - TRI-SL(50%)", "- TRI-AL_ITER - TRI-SL(100%)"]
    assert [line.split(" (%)")[0] for line in table.splitlines() if line.startswith("- ")] == [
        *(f"{test}, micro_f1" for test in t_tests), *(f"{test}, macro_f1" for test in t_tests),
        "- TRI-AL_ITER - TRI-SL(100%), micro_f1", "- TRI-AL_ITER - TRI-SL(100%), macro_f1"]
    assert sum(line.startswith("- ") and "TOST" in line for line in table.splitlines()) == 2, table
    fig2 = cv2.imread(str(study / "out" / "fig2_class_shares.png"))
    fig3 = cv2.imread(str(study / "out" / "fig3_slide_map.png"))
    assert fig2 is not None and fig2.shape[2] == 3 and fig3 is not None and fig3.shape[1] > fig3.shape[0]


def _assert_logged(folder):
    """``history.csv``'s one row (one epoch) and TensorBoard's events of training and validation."""
    header, *rows = (folder / "history.csv").read_text(encoding="utf-8").splitlines()
    assert header.startswith("epoch,") and "val_loss" in header and [row.split(",")[0] for row in rows] == ["0"]
    for run in ("train", "validation"):
        assert list((folder / run).glob("events.out.tfevents.*")), folder / run


def _as_before_base_filters(path, width):
    """Rewrites a study.json's settings as the zoo wrote them before base_filters: VGG16's width multiplier."""
    plan = json.loads(path.read_text(encoding="utf-8"))
    del plan["settings"]["base_filters"]
    plan["settings"]["width"] = width
    path.write_text(json.dumps(plan), encoding="utf-8")


def test_a_study_from_before_base_filters_resumes_with_the_same_widths_only(study, tmp_path):
    def config(base_filters):
        return tri_al_study.StudyConfig(data=str(study / "triplets"), out=str(tmp_path), base_filters=base_filters)

    manifest = json.loads((study / "triplets" / triplets.MANIFEST).read_text(encoding="utf-8"))
    plan = tri_al_study._plan(config(8), manifest)
    _as_before_base_filters(tmp_path / "study.json", width=0.125)
    before = helpers.checksums(tmp_path)
    assert tri_al_study._plan(config(8), manifest) == plan  # 64 x 0.125: the same VGG16 widths
    with pytest.raises(ValueError, match="other settings"):
        tri_al_study._plan(config(4), manifest)
    assert helpers.checksums(tmp_path) == before  # study.json stays as it was written


def test_rerun_with_other_settings_is_refused(study, tmp_path):
    config = tri_al_study.StudyConfig(data=str(study / "triplets"), out=str(tmp_path), base_filters=4, runs=1)
    tri_al_study._plan(config, json.loads((study / "triplets" / triplets.MANIFEST).read_text(encoding="utf-8")))
    other = tri_al_study.StudyConfig(data=str(study / "triplets"), out=str(tmp_path), base_filters=8, runs=1)
    with pytest.raises(ValueError, match="other settings"):
        tri_al_study.run_study(other)


def test_a_study_from_before_stain_augment_resumes(study, tmp_path):
    config = tri_al_study.StudyConfig(data=str(study / "triplets"), out=str(tmp_path), base_filters=4, runs=1)
    manifest = json.loads((study / "triplets" / triplets.MANIFEST).read_text(encoding="utf-8"))
    plan = tri_al_study._plan(config, manifest)
    del plan["settings"]["train"]["stain_augment"]  # study.json as written before the option existed
    (tmp_path / "study.json").write_text(json.dumps(plan))
    assert tri_al_study._plan(config, manifest)["target"] == plan["target"]
    jittered = tri_al_study.StudyConfig(data=str(study / "triplets"), out=str(tmp_path), base_filters=4, runs=1,
                                        train=tri_al_study.TrainConfig(stain_augment=0.05))
    with pytest.raises(ValueError, match="other settings"):
        tri_al_study._plan(jittered, manifest)


def test_a_study_from_before_the_preprocessing_option_resumes_with_imagenet_only(study, tmp_path):
    """Such a study fed ImageNet's preprocessing; today's default (raw, the original's) would change it."""
    def config(**kwargs):
        return tri_al_study.StudyConfig(data=str(study / "triplets"), out=str(tmp_path), base_filters=4, runs=1,
                                        **kwargs)

    manifest = json.loads((study / "triplets" / triplets.MANIFEST).read_text(encoding="utf-8"))
    plan = tri_al_study._plan(config(preprocessing="imagenet"), manifest)
    del plan["settings"]["preprocessing"]  # study.json as written before the option existed
    (tmp_path / "study.json").write_text(json.dumps(plan))
    assert tri_al_study._plan(config(preprocessing="imagenet"), manifest)["target"] == plan["target"]
    with pytest.raises(ValueError, match="other settings"):
        tri_al_study._plan(config(), manifest)


@pytest.mark.parametrize("value", ["-0.1", "1", "much"])
def test_a_bad_stain_augment_is_named(zoo_here, study, tmp_path, value):
    done = zoo_here("tri-al", study / "triplets", tmp_path / "out", "--stain-augment", value, *TINY)
    assert done.returncode == 2 and "--stain-augment" in done.stderr and "[0, 1)" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, argument", [
    (dict(strategies=("BALD",)), "strategy"), (dict(runs=0), "runs"), (dict(fractions=(0.0,)), "fractions"),
    (dict(source_model="tri.keras", base_filters=32), "base_filters"),
    (dict(source_model="tri.keras", head_units=8), "head_units"), (dict(base_filters=0), "base_filters"),
    (dict(source_model="tri.keras", preprocessing="raw"), "preprocessing"),
])
def test_bad_study_configuration(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        tri_al_study.StudyConfig(data="d", out="o", **kwargs)


def test_a_lab_with_too_few_slides_is_named(study, tmp_path):
    config = tri_al_study.StudyConfig(data=str(study / "triplets"), out=str(tmp_path), target_lab="C")
    with pytest.raises(ValueError, match="lab 'C' has 0 slides"):
        tri_al_study.run_study(config)
    manifest = json.loads((study / "triplets" / triplets.MANIFEST).read_text(encoding="utf-8"))
    assert np.isin(["labA_000"], list(manifest["slides"])).all()


def test_defaults_are_the_original_model():
    config = tri_al_study.StudyConfig(data="d", out="o")
    assert (config.base_filters, config.head_units, config.train.batch_size, config.train.momentum) == \
        (64, 4096, 128, 0.9)
    assert config.train.nesterov is True and config.train.learning_rate == 1.5e-4


@pytest.fixture(scope="module")
def trained_tri_cnn(tmp_path_factory):
    """An already trained TRI-CNN of the study's classes and tiles (its weights: whatever it was built with)."""
    path = tmp_path_factory.mktemp("source_model") / "TRI_CNN.keras"
    tri_al.build_model(tile_size=32, base_filters=8, head_units=12).save(path)
    return path


def test_a_trained_tri_cnn_is_adapted_without_a_source_stage(zoo_here, study, trained_tri_cnn, tmp_path):
    # A rate of 1e-30 leaves the weights as they start: the runs must start from the given model's.
    done = zoo_here("tri-al", study / "triplets", tmp_path, "--strategy", "supervised", "ITER", "--fractions", "0.5",
                    "--source-model", trained_tri_cnn, "--source-lab", "none", *RUN, "--runs", "1",
                    "--learning-rate", "1e-30")
    assert done.returncode == 0, done.stderr
    assert f"source model: {trained_tri_cnn}" in done.stdout and "TRI-AL_ITER" in done.stdout
    plan = json.loads((tmp_path / "study.json").read_text(encoding="utf-8"))
    assert plan["source"] == {"model": str(trained_tri_cnn)}  # no source-lab slides, nothing trained on them
    metrics = json.loads((tmp_path / "source" / "metrics.json").read_text(encoding="utf-8"))
    assert "source_val" not in metrics and not (tmp_path / "source" / "model.keras").exists()
    given = keras.models.load_model(trained_tri_cnn)
    for weights in (tmp_path / "source" / "model.weights.h5", tmp_path / "ITER" / "run_0" / "iteration_1.weights.h5",
                    tmp_path / "SL_50" / "run_0" / "supervised.weights.h5"):
        adapted = keras.models.load_model(trained_tri_cnn)
        adapted.load_weights(weights)
        for a, b in zip(adapted.get_weights(), given.get_weights()):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-20)  # the biases moved from 0 by ~1e-30
    final = keras.models.load_model(tmp_path / "ITER" / "run_0" / "model.keras")
    assert final.count_params() == given.count_params()  # the given architecture, not --base-filters/--head-units'
    for state, strategy, message in (
            ("SL_50/run_0/supervised.json", "supervised", "not the state of a TRI-SL run (Expecting value: line 1 "
                                                          "column 1 (char 0)); move it away to train it again"),
            ("ITER/run_0/iteration_1.json", "ITER", "not the state of a TRI-AL iteration (Expecting value: line 1 "
                                                    "column 1 (char 0)); move it away to redo the iteration")):
        finished = (tmp_path / state).read_bytes()
        (tmp_path / state).write_bytes(b"")
        before = helpers.checksums(tmp_path)
        done = zoo_here("tri-al", study / "triplets", tmp_path, "--strategy", strategy, "--fractions", "0.5",
                        "--source-model", trained_tri_cnn, "--source-lab", "none", *RUN, "--runs", "1",
                        "--learning-rate", "1e-30")  # the study's settings: only the state file is wrong
        assert done.returncode == 2 and done.stderr.splitlines() == [
            f"zoo tri-al: error: {tmp_path / state}: {message}"], done.stderr  # before anything trains
        assert helpers.checksums(tmp_path) == before
        (tmp_path / state).write_bytes(finished)


@pytest.mark.parametrize("build, message", [
    (dict(tile_size=64), "a TRI-CNN of 64-pixel tiles; the triplets are 32-pixel"),
    (dict(tile_size=32, num_classes=3), "a TRI-CNN of 3 classes; the triplets have 5"),
    (None, "not a TRI-CNN"),
    ("garbage", "not a Keras model file (it is text; a .keras file is a zip archive)"),
    ("missing", "no such model file"),
])
def test_a_source_model_that_does_not_fit_is_named(zoo_here, study, tmp_path, build, message):
    path = tmp_path / "TRI_CNN.keras"
    if build is None:
        inputs = keras.Input((32, 32, 3))
        keras.Model(inputs, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(inputs))).save(path)
    elif build == "garbage":
        path.write_bytes(b"not a zip")
    elif build != "missing":
        tri_al.build_model(base_filters=4, head_units=8, **build).save(path)
    done = zoo_here("tri-al", study / "triplets", tmp_path / "out", "--source-model", path, *RUN)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(path) in done.stderr and message in done.stderr, done.stderr
    assert not (tmp_path / "out" / "study.json").exists()  # a corrected rerun is not refused as "other settings"


# `zoo tri-al`'s width flags against a study folder an earlier zoo wrote (study.json recording VGG16's width
# multiplier, as before base_filters): (case, that multiplier, the flags after DATA OUT and RUN, the whole stderr).
# Every row fails before anything is trained or written; `{out}` is the study folder.
WIDTH_FAULTS = [
    ("--width of no whole channel count", 0.0625, ["--width", "0.3"], [
        "zoo tri-al: error: --width: width must be a multiple of 1/64 in (0, 1] (base_filters = 64 x width, a whole "
        "number of channels), got 0.3"]),
    ("--width not a number", 0.0625, ["--width", "wide"], [
        "zoo tri-al: error: --width: width must be a multiple of 1/64 in (0, 1] (base_filters = 64 x width, a whole "
        "number of channels), got 'wide'"]),
    ("--width wider than VGG16", 0.0625, ["--width", "2"], [
        "zoo tri-al: error: --width: width must be a multiple of 1/64 in (0, 1] (base_filters = 64 x width, a whole "
        "number of channels), got 2.0"]),
    ("--base-filters 0", 0.0625, ["--base-filters", "0"], [
        "zoo tri-al: error: base_filters must be an integer in [1, 64] (VGG16's first block at most), got 0"]),
    ("--base-filters wider than VGG16", 0.0625, ["--base-filters", "128"], [
        "zoo tri-al: error: base_filters must be an integer in [1, 64] (VGG16's first block at most), got 128"]),
    ("--width with --source-model", 0.0625, ["--width", "0.125", "--source-model", "TRI.keras"], [
        "zoo tri-al: --width is deprecated and goes in the next release; use --base-filters 8",
        "zoo tri-al: error: base_filters: the model comes from source_model TRI.keras; leave them out"]),
    ("old study, other widths", 0.0625, ["--base-filters", "8", "--head-units", "16"], [
        "zoo tri-al: error: {out}/study.json: this folder holds a study with other settings; use a new OUT"]),
    ("old study, widths no model has now", 0.1, ["--base-filters", "8", "--head-units", "16"], [
        "zoo tri-al: error: {out}/study.json: settings: width must be a multiple of 1/64 in (0, 1] (base_filters = "
        "64 x width, a whole number of channels), got 0.1; the study cannot resume, use a new OUT"]),
]


@pytest.mark.parametrize("case, width, flags, lines", WIDTH_FAULTS, ids=[row[0] for row in WIDTH_FAULTS])
def test_a_width_fault_is_one_line_and_the_study_stays(zoo_here, study, tmp_path, case, width, flags, lines):
    out = tmp_path / "out"
    # The study `zoo tri-al DATA OUT --base-filters 4 --head-units 16 RUN` began, written as an earlier zoo did.
    earlier = tri_al_study.StudyConfig(
        data=str(study / "triplets"), out=str(out), base_filters=4, head_units=16, iterations=2, budget=6,
        candidates=9, initial_per_class=2, source_epochs=1,
        train=tri_al_study.TrainConfig(epochs=1, learning_rate=1e-3, batch_size=16))
    tri_al_study._plan(earlier, json.loads((study / "triplets" / triplets.MANIFEST).read_text(encoding="utf-8")))
    _as_before_base_filters(out / "study.json", width=width)
    before = helpers.checksums(out)
    done = zoo_here("tri-al", study / "triplets", out, *RUN, *flags)
    assert done.returncode == 2 and done.stderr.splitlines() == [line.format(out=out) for line in lines], done.stderr
    assert helpers.checksums(out) == before


def _arm(folder, column, target, runs=(0, 1), source=("labB_009",)):
    """A finished study folder holding one TRI-SL column (``SL_<percent>``), as `zoo tri-al` leaves it."""
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({"source": {"model": "source.keras"}, "target": target,
                                                   "settings": {"data": "triplets"}}))
    (folder / "source").mkdir()
    (folder / "source" / "metrics.json").write_text(json.dumps({"test": {"micro_f1": 0.4, "test_on": list(source)}}))
    for run in runs:
        (folder / column / f"run_{run}").mkdir(parents=True)
        state = {"fraction": 1.0, "train_ids": [1, 2, 3], "delta": [], "val": {}, "test": {"micro_f1": 0.5 + run},
                 "done": True}
        (folder / column / f"run_{run}" / "supervised.json").write_text(json.dumps(state))


def test_a_study_whose_arms_ran_in_folders_of_their_own_is_reported_as_one(tmp_path):
    target = {"train": ["labB_000"], "val": ["labB_001"], "test": ["labB_002"]}
    _arm(tmp_path / "sl100", "SL_100", target)
    _arm(tmp_path / "sl20", "SL_20", target)
    results, where = tri_al_study.collect_studies([tmp_path / "sl100", tmp_path / "sl20"])
    assert list(results) == ["TRI-CNN", "TRI-SL(20%)", "TRI-SL(100%)"]  # Table II's order, whatever the folders'
    assert "- TRI-SL(100%) - TRI-SL(20%), micro_f1" in tri_al_report.paired_tests(results)  # more data must win
    assert where == {"TRI-CNN": tmp_path / "sl100", "TRI-SL(100%)": tmp_path / "sl100",
                     "TRI-SL(20%)": tmp_path / "sl20"}
    assert [r["run"] for r in results["TRI-SL(20%)"]] == [0, 1]
    _arm(tmp_path / "again", "SL_20", target)
    with pytest.raises(errors.DataError, match=r"^TRI-SL\(20%\): in both .*sl20 and .*again; give each column once"):
        tri_al_study.collect_studies([tmp_path / "sl100", tmp_path / "sl20", tmp_path / "again"])
    _arm(tmp_path / "other_split", "SL_40", {**target, "test": ["labB_003"]})
    with pytest.raises(errors.DataError, match="other_split: another target split or source model than .*sl100"):
        tri_al_study.collect_studies([tmp_path / "sl100", tmp_path / "other_split"])
    _arm(tmp_path / "other_source", "SL_60", target, source=("labB_004",))  # its TRI-CNN scored otherwise
    with pytest.raises(errors.DataError, match=r"^TRI-CNN: in both"):
        tri_al_study.collect_studies([tmp_path / "sl100", tmp_path / "other_source"])
