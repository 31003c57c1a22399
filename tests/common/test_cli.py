"""The `zoo` command line, in fresh processes: outputs, and one-line errors on bad input."""

import shutil

import pytest
import SimpleITK as sitk

import unet_transformer


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    unet_transformer.build_model("unet", num_classes=8, base_filters=2).save(path)
    return path


@pytest.fixture(scope="module")
def fixed_keras_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "fixed.keras"
    unet_transformer.build_model("unet", input_shape=(32, 32, 1), num_classes=8, base_filters=2).save(path)
    return path


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
    image, labels = sitk.ReadImage(str(source)), sitk.ReadImage(str(out))
    assert labels.GetSize() == image.GetSize()
    assert labels.GetSpacing() == image.GetSpacing()
    assert labels.GetOrigin() == image.GetOrigin()
    assert labels.GetDirection() == image.GetDirection()
    assert sitk.GetArrayFromImage(labels).max() < 8
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left behind


def test_geometry_mismatch(zoo, tiny_cohort, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort)
    label_path = cohort / "labels" / "case_002.nii.gz"
    label = sitk.ReadImage(str(label_path))
    label.SetSpacing((5.0, 5.4, 8.0))
    sitk.WriteImage(label, str(label_path))
    _assert_one_line_error(zoo("prepare", cohort, tmp_path / "prepared"),
                           "case_002.nii.gz: label spacing", "differs from image")


def test_label_values_outside_the_classes(zoo, tiny_cohort, tmp_path):
    _assert_one_line_error(zoo("prepare", tiny_cohort, tmp_path / "p", "--num-classes", "4"),
                           "case_000.nii.gz: label values", "outside the 4 classes")


def test_unreadable_and_2d_inputs(zoo, keras_file, tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x00" * 100)
    _assert_one_line_error(zoo("predict", keras_file, broken, tmp_path / "o.nii.gz"),
                           "broken.nii.gz: cannot be read")
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16), str(flat))
    _assert_one_line_error(zoo("predict", keras_file, flat, tmp_path / "o.nii.gz"),
                           "flat.nii.gz: expected a 3D volume, got a 2D image")
    _assert_one_line_error(zoo("predict", tmp_path / "nothing.keras", flat, tmp_path / "o.nii.gz"),
                           "nothing.keras: no such model")


def test_input_size_the_model_cannot_take(zoo, tiny_cohort, tiny_prepared, fixed_keras_file, tmp_path):
    _assert_one_line_error(zoo("predict", fixed_keras_file, tiny_cohort / "images" / "case_000.nii.gz",
                               tmp_path / "o.nii.gz"), "slices are 64x64 but the model takes 32x32")
    _assert_one_line_error(zoo("train", tiny_prepared, tmp_path / "run", "--crop-size", "40"),
                           "crop_size must be a positive multiple of 16, got 40")
    assert not (tmp_path / "run").exists()


def test_errors_in_process_are_one_line_on_stderr(capsys, tmp_path):
    from common import cli

    assert cli.main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zoo evaluate: error:") and str(tmp_path) in err[0]


def test_export_command_writes_a_version_and_the_server_config(zoo, keras_file, tmp_path):
    done = zoo("export", keras_file, tmp_path / "serving", "--server-base-path", "/models/tiny")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "serving" / "tiny" / "1" / "saved_model.pb").exists()
    assert 'base_path: "/models/tiny"' in (tmp_path / "serving" / "models.config").read_text()


def test_load_run_reads_the_run_config(tmp_path, keras_file):
    from common import registry

    model, config = registry.load_run(keras_file)
    assert model.output_shape[-1] == 8 and config == {}
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.keras: cannot be loaded as a Keras model"):
        registry.load_run(broken)


def test_synthetic_ct_command_writes_a_cohort(tmp_path, capsys):
    from common import cli
    from common.ct import volumes

    assert cli.main(["synthetic-ct", str(tmp_path), "--cases", "2", "--size", "32,32,4",
                     "--spacing", "10.8,10.8,20"]) == 0
    cases = volumes.find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["case_000", "case_001"]
    assert sitk.ReadImage(str(cases[1].image)).GetSpacing() == pytest.approx((10.8, 10.8, 20.0))  # NIfTI: float32
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["synthetic-ct", str(tmp_path), "--size", "32,32"])
    assert exit_info.value.code == 2 and "expected X,Y,Z" in capsys.readouterr().err


def test_training_options_override_the_preset():
    from common import cli
    from common.cli.train import train_config

    args = cli.build_parser().parse_args(["cv", "prep", "run", "--preset", "eas_unet", "--epoch-scale", "0.2",
                                          "--batch-size", "8", "--model", "unet", "--metrics", "dice,voe,hd"])
    config = train_config(args)
    assert (config.model, config.optimizer, config.epochs, config.batch_size, config.learning_rate) == (
        "unet", "sgd", 10, 8, 0.01)
    assert args.metrics == ("dice", "voe", "hd")
    plain = train_config(cli.build_parser().parse_args(["train", "prep", "run"]))
    assert (plain.model, plain.optimizer, plain.epochs, plain.learning_rate) == ("unet", "adam", 50, 1e-4)


def test_unknown_metric_is_refused(capsys):
    from common import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["cv", "prep", "run", "--metrics", "dice,jaccard"])
    assert exit_info.value.code == 2 and "metrics must be among" in capsys.readouterr().err
