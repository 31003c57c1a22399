"""The CT commands of `zoo`: outputs, and one-line errors on bad input."""

import pathlib
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from common import cli
from common.ct import shards, volumes


def _assert_one_line_error(done, *fragments):
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("zoo ")]
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_predict_writes_labels_with_the_input_geometry(zoo, tiny_cohort, keras_file, tmp_path):
    source = tiny_cohort / "images" / "case_001.nii.gz"  # stored RAS-like
    out = tmp_path / "pred" / "case_001_labels.nii.gz"
    done = zoo("predict", keras_file, source, out, "--batch-size", "5")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "oneDNN" not in done.stderr and "InitializeLog" not in done.stderr  # TensorFlow's start-up lines
    image, labels = sitk.ReadImage(str(source)), sitk.ReadImage(str(out))
    assert labels.GetSize() == image.GetSize()
    assert labels.GetSpacing() == image.GetSpacing()
    assert labels.GetOrigin() == image.GetOrigin()
    assert labels.GetDirection() == image.GetDirection()
    assert sitk.GetArrayFromImage(labels).max() < 8
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left behind


def test_geometry_mismatch(zoo_here, tiny_cohort, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort)
    label_path = cohort / "labels" / "case_002.nii.gz"
    label = sitk.ReadImage(str(label_path))
    label.SetSpacing((5.0, 5.4, 8.0))
    sitk.WriteImage(label, str(label_path))
    _assert_one_line_error(zoo_here("prepare", cohort, tmp_path / "prepared"),
                           "case_002.nii.gz: label spacing", "differs from image")


def test_label_values_outside_the_classes(zoo_here, tiny_cohort, tmp_path):
    _assert_one_line_error(zoo_here("prepare", tiny_cohort, tmp_path / "p", "--num-classes", "4"),
                           "case_000.nii.gz: label values", "outside the 4 classes")


def test_unreadable_and_2d_inputs(zoo_here, keras_file, tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x00" * 100)
    _assert_one_line_error(zoo_here("predict", keras_file, broken, tmp_path / "o.nii.gz"),
                           "broken.nii.gz: cannot be read")
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16), str(flat))
    _assert_one_line_error(zoo_here("predict", keras_file, flat, tmp_path / "o.nii.gz"),
                           "flat.nii.gz: expected a 3D volume, got a 2D image")
    _assert_one_line_error(zoo_here("predict", tmp_path / "nothing.keras", flat, tmp_path / "o.nii.gz"),
                           "nothing.keras: no such model")


def test_input_size_the_model_cannot_take(zoo_here, tiny_cohort, tiny_prepared, fixed_keras_file, tmp_path):
    _assert_one_line_error(zoo_here("predict", fixed_keras_file, tiny_cohort / "images" / "case_000.nii.gz",
                               tmp_path / "o.nii.gz"), "slices are 64x64 but the model takes 32x32")
    _assert_one_line_error(zoo_here("train", tiny_prepared, tmp_path / "run", "--crop-size", "40"),
                           "crop_size must be a positive multiple of 16, got 40")
    assert not (tmp_path / "run").exists()


def test_synthetic_ct_command_writes_a_cohort(tmp_path, capsys):
    from common import cli
    from common.ct import volumes

    assert cli.main(["synthetic-ct", str(tmp_path), "--num-cases", "2", "--shape", "32,32,4",
                     "--voxel-size", "10.8,10.8,20"]) == 0
    cases = volumes.find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["case_000", "case_001"]
    assert sitk.ReadImage(str(cases[1].image)).GetSpacing() == pytest.approx((10.8, 10.8, 20.0))  # NIfTI: float32
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["synthetic-ct", str(tmp_path), "--shape", "32,32"])
    assert exit_info.value.code == 2 and "expected X,Y,Z" in capsys.readouterr().err


def test_the_old_spellings_still_work_for_one_release_and_name_the_new_ones(tmp_path, capsys):
    """--cases, --size and --spacing meant other things in other subcommands; they stay one release."""
    from common import cli

    args = cli.parse_args(["synthetic-ct", str(tmp_path), "--cases", "3", "--size", "32,32,4", "--spacing", "1,1,2"])
    assert (args.num_cases, args.shape, args.voxel_size) == (3, (32, 32, 4), (1.0, 1.0, 2.0))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"zoo synthetic-ct: {old} is deprecated and goes in the next release; use {new}"
                     for old, new in (("--cases", "--num-cases"), ("--size", "--shape"), ("--spacing", "--voxel-size"))]
    assert cli.parse_args(["synthetic-slides", str(tmp_path), "--size", "512,512"]).slide_size == (512, 512)
    assert cli.parse_args(["demo", "--cases", "4"]).num_cases == 4
    assert "--num-cases" in capsys.readouterr().err


@pytest.mark.parametrize("layout, image", [("msd", "images/case_000.nii.gz"), ("lits", "volume-0.nii"),
                                           ("context", "images/case_000.nii.gz")])
def test_synthetic_ct_noise_hu_sets_every_layouts_noise(tmp_path, layout, image):
    """--noise-hu is the noise's standard deviation: the same case differs from its noise-free twin by it."""
    common = ["--layout", layout, "--num-cases", "1", "--shape", "48,48,8", "--voxel-size", "7,7,10"]
    for noise in ("0", "60"):
        assert cli.main(["synthetic-ct", str(tmp_path / noise), *common, "--noise-hu", noise]) == 0
    clean, noisy = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / n / image))) for n in ("0", "60"))
    assert np.std(noisy - clean) == pytest.approx(60.0, rel=0.05)


def test_synthetic_lits_cohort_through_the_cli(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    assert cli.main(["synthetic-ct", str(cohort), "--layout", "lits", "--num-cases", "3", "--shape", "48,48,6",
                     "--voxel-size", "7,7,10"]) == 0
    assert sorted(p.name for p in cohort.iterdir()) == [
        "segmentation-0.nii", "segmentation-1.nii", "segmentation-2.nii", "volume-0.nii", "volume-1.nii",
        "volume-2.nii"]
    values = set()
    for case in volumes.find_cases(cohort):
        image = volumes.read_volume(case.image)
        label = volumes.read_label(case, image, 3)
        values |= set(np.unique(sitk.GetArrayFromImage(label)).tolist())
    assert values <= {0, 1, 2} and 1 in values
    assert cli.main(["prepare", str(cohort), str(tmp_path / "prepared"), "--preset", "lits"]) == 0
    manifest = shards.load_manifest(tmp_path / "prepared")
    assert [c["id"] for c in manifest["cases"]] == ["volume-0", "volume-1", "volume-2"]
    (cohort / "segmentation-1.nii").unlink()
    capsys.readouterr()
    assert cli.main(["prepare", str(cohort), str(tmp_path / "again"), "--preset", "lits"]) == 2
    assert "volume-1.nii: no segmentation-1.nii beside it" in capsys.readouterr().err


def test_a_truncated_volume_is_one_line_naming_it(zoo_here, keras_file, tmp_path):
    cut = tmp_path / "cut.nii.gz"
    array = np.random.default_rng(0).integers(-1000, 1000, (4, 32, 32)).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(cut), True)
    cut.write_bytes(cut.read_bytes()[:-2000])  # an interrupted download
    _assert_one_line_error(zoo_here("predict", keras_file, cut, tmp_path / "o.nii.gz"),
                           "cut.nii.gz: truncated, its gzip stream ends before")
    assert not (tmp_path / "o.nii.gz").exists()


def _island_volume(path):
    """Bright (class 2 of the threshold model) in a block and in a 2x2x1 island, dark elsewhere; RAS-stored."""
    array = np.full((4, 32, 48), -500, np.int16)
    array[1:3, 4:20, 4:20] = 500
    array[3, 28:30, 40:42] = 500
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.2, 1.1, 3.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(path))
    return image


@pytest.fixture(scope="module")
def threshold_cv(tmp_path_factory, tiny_cohort):
    """A two-fold `zoo cv` folder of threshold models (trained with flips) on the tiny cohort."""
    from tests import helpers

    folds = [helpers.conv_model(helpers.THRESHOLD_KERNEL, helpers.THRESHOLD_BIAS + shift)
             for shift in (np.zeros(3), np.array([0.0, 1.0, 0.0]))]
    split = {"train": ["case_000", "case_001"], "test": ["case_002"]}
    organs = {str(organ): 1 + organ % 2 for organ in range(1, 8)}  # the phantom's 7 organs as 2 classes
    return helpers.fake_cv_folder(tmp_path_factory.mktemp("cli") / "cv", folds, augment="flip", split=split,
                                  source=str(tiny_cohort), class_names=["background", "dark", "bright"],
                                  label_map=organs)


def test_predict_with_a_cv_folder_every_option(zoo_here, threshold_cv, tmp_path):
    from common.ct import postprocess

    image = _island_volume(tmp_path / "ct.nii.gz")
    out = tmp_path / "pred" / "labels.nii.gz"
    args = ("predict", threshold_cv, tmp_path / "ct.nii.gz", out, "--tile", "32", "--postprocess",
            "--save-probabilities")
    _assert_one_line_error(zoo_here(*args), "cv/postprocessing.json: no post-processing decision")
    postprocess.write_decision(threshold_cv, {"format": 1, "classes": {"1": {"apply": False}, "2": {"apply": True}}})
    done = zoo_here(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == [
        f"predicting {tmp_path / 'ct.nii.gz'} with 2 model(s): tile 32x32 step 0.5, tta mirror, own spacing, "
        "post-processing classes 2", f"{tmp_path / 'ct.nii.gz'}: model 1/2", f"{tmp_path / 'ct.nii.gz'}: model 2/2"]
    labels = sitk.ReadImage(str(out))
    probabilities = sitk.ReadImage(str(tmp_path / "pred" / "labels_probabilities.nii.gz"))
    for result in (labels, probabilities):
        assert result.GetSize() == image.GetSize() and result.GetDirection() == image.GetDirection()
        assert result.GetSpacing() == pytest.approx(image.GetSpacing()) and result.GetOrigin() == image.GetOrigin()
    assert probabilities.GetNumberOfComponentsPerPixel() == 3
    array, vectors = sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(probabilities)
    assert (array[1:3, 4:20, 4:20] == 2).all() and (array[3, 28:30, 40:42] == 0).all()  # the island is gone
    assert (vectors[3, 28:30, 40:42].argmax(-1) == 2).all()  # the probabilities are from before it
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.nii.gz", "labels_probabilities.nii.gz"]


def test_inference_options_that_do_not_fit(zoo_here, threshold_cv, keras_file, tmp_path):
    _island_volume(tmp_path / "ct.nii.gz")
    _assert_one_line_error(zoo_here("predict", threshold_cv, tmp_path / "ct.nii.gz", tmp_path / "o.nii.gz",
                                    "--tile", "40,48"), "tile: 40x48, but the model needs sides that are multiples")
    _assert_one_line_error(zoo_here("predict", keras_file, tmp_path / "ct.nii.gz", tmp_path / "o.nii.gz",
                                    "--postprocess"), "postprocess: tiny.keras is not a `zoo cv` folder")
    done = zoo_here("predict", keras_file, tmp_path / "ct.nii.gz", tmp_path / "o.nii.gz", "--step", "1.5")
    assert done.returncode == 2 and "--step: expected a fraction of the tile in (0, 1]" in done.stderr
    assert not (tmp_path / "o.nii.gz").exists()


def test_evaluate_a_cv_folder_on_the_cases_no_fold_trained_on(zoo_here, threshold_cv):
    import json

    done = zoo_here("evaluate", threshold_cv, "--tta", "none", "--tile", "whole")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["cohort layout: images/ + labels/",
                         "evaluating 2 cases with 2 model(s): whole slices, tta none, own spacing"]
    assert "| class (2 cases) | dice |" in done.stdout and "| bright |" in done.stdout
    saved = json.loads((threshold_cv / "evaluation.json").read_text(encoding="utf-8"))
    assert sorted(saved) == ["case_002", "case_003"] and set(saved["case_002"]) == {"1", "2"}
    recorded = json.loads((threshold_cv / "evaluation_options.json").read_text(encoding="utf-8"))  # for the card
    assert (recorded["inference"], recorded["cohort"]) == ("whole slices, tta none, own spacing", "the run's cohort")
    done = zoo_here("evaluate", threshold_cv, "--cases", "case_001,case_003", "--tta", "none")
    assert done.returncode == 0 and "warning: cases ['case_001'] trained some fold" in done.stdout


def test_labels_and_probabilities_are_replaced_together_or_not_at_all(tmp_path, monkeypatch):
    """SimpleITK leaving the second file short (a full disk) must not leave new labels beside old probabilities."""
    from common.ct import predictions
    from tests import helpers

    labels, probabilities = tmp_path / "labels.nii.gz", tmp_path / "labels_probabilities.nii.gz"
    volume = sitk.GetImageFromArray(np.arange(4 * 16 * 16, dtype=np.float32).reshape(4, 16, 16))
    for path in (labels, probabilities):
        sitk.WriteImage(sitk.Image(16, 16, 4, sitk.sitkUInt8), str(path), True)
    before = helpers.checksums(tmp_path)
    write = sitk.WriteImage

    def short_second_file(image, name, *args, **kwargs):
        write(image, name, *args, **kwargs)
        if "_probabilities" in pathlib.Path(name).name:
            pathlib.Path(name).write_bytes(pathlib.Path(name).read_bytes()[:200])

    monkeypatch.setattr(sitk, "WriteImage", short_second_file)
    with pytest.raises(OSError, match=rf"^{probabilities}: not written: the file is incomplete .*; the previous file "
                                      r"is untouched$"):
        predictions.write_volumes([(labels, volume), (probabilities, volume)])
    assert helpers.checksums(tmp_path) == before


@pytest.mark.parametrize("command, positional", [("predict", ["model", "ct", "out"]), ("evaluate", ["run"]),
                                                 ("export", ["run", "serving", "--pipeline"])])
def test_batch_size_must_be_a_positive_integer(capsys, command, positional):
    parser = cli.build_parser()
    assert parser.parse_args([command, *positional, "--batch-size", "2"]).batch_size == 2
    for value in ("0", "-1", "2.5", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, *positional, "--batch-size", value])
        assert capsys.readouterr().err.splitlines()[-1] == \
            f"zoo {command}: error: argument --batch-size: expected a number > 0, got {value!r}"
