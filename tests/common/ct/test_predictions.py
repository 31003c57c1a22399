"""`zoo predict MODEL IN_DIR OUT_DIR`: every volume of a folder, named as nnU-Net names them, resumable.

The run is "killed" after its first case (the writer raises KeyboardInterrupt once the first file is
written, and a SIGKILL's temporary file is left beside it), then run again: the finished case is
skipped, the temporary removed and counted, the other two written with their inputs' geometry.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import shutil

import pytest
import SimpleITK as sitk

from common import atomic
from common.ct import predictions
from tests import helpers

CASES = ("case_001", "case_002", "case_003")  # case_001 and case_003 are stored RAS-like, case_002 LPS


@pytest.fixture(scope="module")
def images_ts(tiny_cohort, tmp_path_factory) -> pathlib.Path:
    """nnU-Net's imagesTs as a user gives it: <case>_0000.nii.gz."""
    folder = tmp_path_factory.mktemp("predictions") / "imagesTs"
    folder.mkdir()
    for case in CASES:
        shutil.copyfile(tiny_cohort / "images" / f"{case}.nii.gz", folder / f"{case}_0000.nii.gz")
    return folder


def _geometry(path: pathlib.Path):
    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _killed_after_first_case(monkeypatch):
    """The writer raises KeyboardInterrupt (a Ctrl-C) once the first case's file is written."""
    write = predictions.write_volumes

    def then_interrupted(pairs):
        write(pairs)
        raise KeyboardInterrupt

    monkeypatch.setattr(predictions, "write_volumes", then_interrupted)


def test_a_killed_folder_run_is_finished_by_running_it_again(zoo_here, keras_file, images_ts, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _killed_after_first_case(patch)
        done = zoo_here("predict", keras_file, images_ts, out)
    assert done.returncode == 130 and done.stderr.splitlines()[-1] == "zoo predict: interrupted"
    assert sorted(p.name for p in out.iterdir()) == ["case_001.nii.gz"]
    (out / ".case_002.0123abcd.tmp.nii.gz").write_bytes(b"half a volume")  # what a SIGKILL mid-write leaves
    first = helpers.checksums(out)

    done = zoo_here("predict", keras_file, images_ts, out)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [
        "input layout: a folder of volumes with nnU-Net's channel suffix _0000",
        f"predicting 3 volumes of {images_ts} with 1 model(s): whole slices, tta none, own spacing",
        f"removed 1 temporary files of an interrupted run from {out}",
        f"[1/3] case_001: skipped, {out}/case_001.nii.gz exists (--overwrite predicts it again)"]
    for line, case in zip(lines[4:6], CASES[1:]):
        assert re.fullmatch(rf"\[\d/3\] {case}: wrote {out}/{case}.nii.gz \(64x64x12\) in \d+\.\d s", line), line
    assert lines[6:] == [f"predicted 2 of 3 cases into {out}; 1 skipped, their outputs exist (--overwrite predicts "
                         "them again)"]
    assert sorted(p.name for p in out.iterdir()) == [f"{case}.nii.gz" for case in CASES]
    assert helpers.checksums(out)["case_001.nii.gz"] == first["case_001.nii.gz"]  # skipped, not rewritten
    for case in CASES:
        assert _geometry(out / f"{case}.nii.gz") == _geometry(images_ts / f"{case}_0000.nii.gz")
        assert sitk.ReadImage(str(out / f"{case}.nii.gz")).GetPixelID() == sitk.sitkUInt8

    done = zoo_here("predict", keras_file, images_ts, out, "--overwrite", "--save-probabilities")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"predicted 3 of 3 cases into {out} (3 replaced)"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{case}.nii.gz" for case in CASES] + [f"{case}_probabilities.nii.gz" for case in CASES])


@contextlib.contextmanager
def _short_second_case(monkeypatch):
    """SimpleITK leaving case_002's file short and reporting success, as on a full disk."""
    write = sitk.WriteImage

    def short(image, name, *args, **kwargs):
        write(image, name, *args, **kwargs)
        if pathlib.Path(name).name.startswith(".case_002."):
            pathlib.Path(name).write_bytes(pathlib.Path(name).read_bytes()[:200])

    with monkeypatch.context() as patch:
        patch.setattr(sitk, "WriteImage", short)
        yield


def test_folder_faults_are_one_line_and_keep_what_was_written(zoo_here, keras_file, images_ts, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file beside the outputs")
    rows = [
        (["predict", keras_file, images_ts, images_ts], contextlib.nullcontext(),
         f"zoo predict: error: output: {images_ts} is the folder the images are read from; choose another folder"),
        (["predict", keras_file, images_ts, out], atomic.locked_folder(out, "a test"),
         f"zoo predict: error: {out}: another `zoo predict` is writing this folder; wait for it to end"),
        (["predict", keras_file, images_ts / "case_001_0000.nii.gz", out], contextlib.nullcontext(),
         f"zoo predict: error: output: {out} needs one of the suffixes .nii.gz, .nii, .mha, .nrrd (a folder of "
         "outputs takes a folder of inputs)"),
        (["predict", keras_file, images_ts, out], _short_second_case(monkeypatch),
         f"zoo predict: error: {out}/case_002.nii.gz: not written: the file is incomplete (Compressed file ended "
         "before the end-of-stream marker was reached); nothing was written"),
    ]
    inputs = helpers.checksums(images_ts)
    for argv, during, expected in rows:
        before = helpers.checksums(out)
        with during:
            done = zoo_here(*argv)
        assert done.returncode == 2, done.stdout + done.stderr
        assert [line for line in done.stderr.splitlines() if line.startswith("zoo ")] == [expected], done.stderr
        assert helpers.checksums(images_ts) == inputs
        if "not written" not in expected:
            assert helpers.checksums(out) == before
    # The full disk hit case_002: case_001 was finished before it and stays; nothing half-written is left.
    assert sorted(p.name for p in out.iterdir()) == ["case_001.nii.gz", "notes.txt"]
