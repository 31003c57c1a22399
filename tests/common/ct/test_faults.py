"""Issue 39, the CT wing: every fault of `zoo prepare`, `predict` and `evaluate` is one line, and loses nothing.

Each row of FAULTS makes one fault, runs the command in this process (under a
file-size limit for a full disk), and checks the exact stderr line, a non-zero exit, and that
the outputs a user already had (a prepared folder, a previous prediction, a run) are unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import pathlib
import shutil
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from common import atomic
from common.ct import shards
from tests import helpers

CASES = ("case_000", "case_001")  # two of the tiny cohort's cases: every row reads a cohort once


@dataclasses.dataclass
class Scene:
    """What the rows share, made once: a cohort, its prepared folder, a run and models of other tasks."""

    root: pathlib.Path
    cohort: pathlib.Path
    prepared: pathlib.Path
    run: pathlib.Path
    segmentation: pathlib.Path
    pose: pathlib.Path
    tiles: pathlib.Path


@dataclasses.dataclass
class Fault:
    """A command that must fail with ``expected`` (tmp paths in), leaving every folder of ``kept`` as it was."""

    argv: list
    expected: str
    kept: list
    file_limit: int | None = None  # files may not grow past this many bytes while it runs (a full disk)
    during: contextlib.AbstractContextManager = dataclasses.field(default_factory=contextlib.nullcontext)


@pytest.fixture(scope="module")
def scene(tiny_cohort, keras_file, tmp_path_factory) -> Scene:
    from common import registry

    root = tmp_path_factory.mktemp("faults")
    cohort = root / "cohort"
    for sub in ("images", "labels"):
        (cohort / sub).mkdir(parents=True)
        for case in CASES:
            shutil.copy(tiny_cohort / sub / f"{case}.nii.gz", cohort / sub)
    shutil.copy(tiny_cohort / "dataset.json", cohort)
    manifest = shards.prepare(cohort, root / "prepared")
    run = root / "run"
    run.mkdir()
    shutil.copy(keras_file, run / "model.keras")
    (run / "config.json").write_text(json.dumps({
        "model": "unet", "num_classes": 8, "hu_window": manifest["hu_window"], "class_names": manifest["class_names"],
        "source": str(cohort), "split": {"train": ["case_000"], "test": ["case_001"]}}), encoding="utf-8")
    pose = registry.build("hourglass", input_shape=(64, 64, 3), num_stacks=1, num_joints=2, base_filters=8)
    pose.save(root / "pose.keras")
    registry.build("tri_cnn", tile_size=32, base_filters=2, head_units=4).save(root / "tiles.keras")
    return Scene(root, cohort, root / "prepared", run, keras_file, root / "pose.keras", root / "tiles.keras")


def _cohort(scene: Scene, tmp: pathlib.Path) -> pathlib.Path:
    """A copy of the scene's cohort to damage."""
    shutil.copytree(scene.cohort, tmp / "cohort")
    return tmp / "cohort"


def _rewrite(path: pathlib.Path, change, dtype=None) -> pathlib.Path:
    """Rewrites a volume with ``change(array)`` applied (cast to ``dtype`` first), geometry kept."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(dtype or sitk.GetArrayViewFromImage(image).dtype)
    change(array)
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    sitk.WriteImage(result, str(path), True)
    return path


def _with_nan(path: pathlib.Path) -> pathlib.Path:
    def block(array):
        array[3:5, 10:14, 20:26] = np.nan  # 2 x 4 x 6 = 48 voxels

    return _rewrite(path, block, np.float32)


def _previous_prediction(tmp: pathlib.Path) -> pathlib.Path:
    """A previous `zoo predict` output the failing run must leave byte for byte."""
    out = tmp / "pred" / "labels.nii.gz"
    out.parent.mkdir()
    sitk.WriteImage(sitk.Image(64, 64, 12, sitk.sitkUInt8), str(out), True)
    return out


# --- item 1: a write failure on a full disk --------------------------------------------------------------

def predict_disk_full(scene, tmp):
    out = _previous_prediction(tmp)
    return Fault(["predict", scene.segmentation, scene.cohort / "images" / "case_001.nii.gz", out],
                 f"zoo predict: error: {out}: not written: the file is incomplete (Compressed file ended before the "
                 "end-of-stream marker was reached); the previous file is untouched", [out.parent], file_limit=2048)


# --- item 2: prepare is all or nothing ----------------------------------------------------------------------

def prepare_disk_full(scene, tmp):
    return Fault(["prepare", scene.cohort, scene.prepared],
                 f"zoo prepare: error: {scene.prepared}: not written: the shard of case_000: file too large; the "
                 "previous prepared folder is untouched", [scene.prepared], file_limit=64 * 1024)


def _other_geometry(scene, tmp):
    cohort = _cohort(scene, tmp)
    label = sitk.ReadImage(str(cohort / "labels" / "case_001.nii.gz"))
    label.SetSpacing((5.0, 5.4, 8.0))
    sitk.WriteImage(label, str(cohort / "labels" / "case_001.nii.gz"), True)
    return cohort, (f"{cohort}/labels/case_001.nii.gz: label spacing (5, 5.4, 8) differs from image "
                    f"{cohort}/images/case_001.nii.gz spacing (5.4, 5.4, 8)")


def bad_last_case_other_window(scene, tmp):
    cohort, message = _other_geometry(scene, tmp)
    return Fault(["prepare", cohort, scene.prepared, "--window=-200,250"], f"zoo prepare: error: {message}",
                 [scene.prepared])


def bad_last_case_fresh_folder(scene, tmp):
    cohort, message = _other_geometry(scene, tmp)
    (tmp / "fresh").mkdir()
    return Fault(["prepare", cohort, tmp / "fresh" / "prepared"], f"zoo prepare: error: {message}", [tmp / "fresh"])


def inverted_window(scene, tmp):
    return Fault(["prepare", scene.cohort, scene.prepared, "--window=240,-160"],
                 "zoo prepare: error: hu_window must be (low, high) with low < high, got (240.0, -160.0)",
                 [scene.prepared])


def into_a_cohorts_dataset_json(scene, tmp):
    cohort = _cohort(scene, tmp)
    return Fault(["prepare", cohort, cohort],
                 f"zoo prepare: error: {cohort}/dataset.json: not a zoo manifest, and `zoo prepare` would replace it; "
                 "choose another folder", [cohort])


def while_another_prepare_runs(scene, tmp):
    return Fault(["prepare", scene.cohort, scene.prepared],
                 f"zoo prepare: error: {scene.prepared}: another `zoo prepare` is writing this folder; wait for it to "
                 "end", [scene.prepared], during=atomic.locked_folder(scene.prepared, "a test"))


# --- item 3: non-finite voxels, two files of one case ---------------------------------------------------

def prepare_nan(scene, tmp):
    image = _with_nan(_cohort(scene, tmp) / "images" / "case_001.nii.gz")
    return Fault(["prepare", image.parent.parent, scene.prepared],
                 f"zoo prepare: error: {image}: 48 of 49152 voxels are not finite (NaN or Inf)", [scene.prepared])


def predict_inf(scene, tmp):
    def first_slice(array):
        array[0] = np.inf  # 64 x 64 = 4096 voxels

    image = tmp / "ct.nii.gz"
    shutil.copy(scene.cohort / "images" / "case_001.nii.gz", image)
    out = _previous_prediction(tmp)
    return Fault(["predict", scene.segmentation, _rewrite(image, first_slice, np.float32), out],
                 f"zoo predict: error: {image}: 4096 of 49152 voxels are not finite (NaN or Inf)", [out.parent])


def evaluate_nan(scene, tmp):
    image = _with_nan(_cohort(scene, tmp) / "images" / "case_001.nii.gz")
    return Fault(["evaluate", scene.run, "--cohort", image.parent.parent],
                 f"zoo evaluate: error: {image}: 48 of 49152 voxels are not finite (NaN or Inf)", [scene.run])


def two_files_of_one_case(scene, tmp):
    images = _cohort(scene, tmp) / "images"
    sitk.WriteImage(sitk.ReadImage(str(images / "case_000.nii.gz")), str(images / "case_000.nii"))
    return Fault(["prepare", images.parent, scene.prepared],
                 f"zoo prepare: error: {images}/case_000.nii and {images}/case_000.nii.gz: two volumes of case "
                 "'case_000'; keep one", [scene.prepared])


# --- item 4: wrong values --------------------------------------------------------------------------------

def label_256(scene, tmp):
    def one_voxel(array):
        array[6, 30, 30] = 256

    label = _rewrite(_cohort(scene, tmp) / "labels" / "case_001.nii.gz", one_voxel, np.uint16)
    return Fault(["prepare", label.parent.parent, scene.prepared],
                 f"zoo prepare: error: {label}: label value 256 does not fit the shards' 8-bit labels (0-255)",
                 [scene.prepared])


def num_classes_past_uint8(scene, tmp):
    return Fault(["prepare", scene.cohort, scene.prepared, "--num-classes", "300"],
                 "zoo prepare: error: num_classes must lie in [2, 256] (background included; the shards store uint8 "
                 "labels), got 300", [scene.prepared])


def pixdim_0(scene, tmp):
    image = _cohort(scene, tmp) / "images" / "case_001.nii.gz"
    header = bytearray(gzip.decompress(image.read_bytes()))
    header[88:92] = struct.pack("<f", 0.0)  # pixdim[3], the slice spacing (NIfTI-1 header, offset 76 + 3 * 4)
    image.write_bytes(gzip.compress(bytes(header)))
    return Fault(["prepare", image.parent.parent, scene.prepared],
                 f"zoo prepare: error: {image}: pixdim[3] (the voxel spacing along z) is 0 in its header; the "
                 "volume's geometry is unknown", [scene.prepared])


def label_without_image(scene, tmp):
    cohort = _cohort(scene, tmp)
    shutil.copy(cohort / "labels" / "case_001.nii.gz", cohort / "labels" / "case_009.nii.gz")
    return Fault(["prepare", cohort, scene.prepared],
                 f"zoo prepare: error: {cohort}/labels/case_009.nii.gz: a label volume without its image (no case "
                 f"'case_009' in {cohort}/images)", [scene.prepared])


def lits_segmentation_without_volume(scene, tmp):
    helpers.lits_pair(tmp / "lits", 0, np.zeros((2, 8, 8)))
    shutil.copy(tmp / "lits" / "segmentation-0.nii", tmp / "lits" / "segmentation-5.nii")
    return Fault(["prepare", tmp / "lits", scene.prepared, "--preset", "lits"],
                 f"zoo prepare: error: {tmp}/lits/segmentation-5.nii: a label volume without its image (no "
                 "volume-5.nii beside it)", [scene.prepared, tmp / "lits"])


# --- item 5: messages --------------------------------------------------------------------------------------

def empty_cohort(scene, tmp):
    (tmp / "empty").mkdir()
    return Fault(["prepare", tmp / "empty", tmp / "out"],
                 f"zoo prepare: error: {tmp}/empty: no cohort found (neither imagesTr/ with a dataset.json "
                 "(Decathlon, nnU-Net v2 raw), nor images/ and labels/, nor LiTS volume-N.nii files)", [tmp])


def pose_model_to_predict(scene, tmp):
    out = _previous_prediction(tmp)
    return Fault(["predict", scene.pose, scene.cohort / "images" / "case_000.nii.gz", out],
                 f"zoo predict: error: {scene.pose}: a pose model; zoo predict takes a segmentation model",
                 [out.parent])


def tile_model_to_predict(scene, tmp):
    out = _previous_prediction(tmp)
    return Fault(["predict", scene.tiles, scene.cohort / "images" / "case_000.nii.gz", out],
                 f"zoo predict: error: {scene.tiles}: a tiles model; zoo predict takes a segmentation model",
                 [out.parent])


FAULTS = [predict_disk_full, prepare_disk_full, bad_last_case_other_window, bad_last_case_fresh_folder,
          inverted_window, into_a_cohorts_dataset_json, while_another_prepare_runs, prepare_nan, predict_inf,
          evaluate_nan, two_files_of_one_case, label_256, num_classes_past_uint8, pixdim_0, label_without_image,
          lits_segmentation_without_volume, empty_cohort, pose_model_to_predict, tile_model_to_predict]


def _state(folder: pathlib.Path):
    """Every file's checksum and every folder's name: an empty folder left behind counts too."""
    return helpers.checksums(folder), sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_dir())


@pytest.mark.parametrize("make", FAULTS, ids=[f.__name__ for f in FAULTS])
def test_a_fault_is_one_line_and_changes_nothing(make, scene, zoo_here, tmp_path):
    fault = make(scene, tmp_path)
    before = [_state(folder) for folder in fault.kept]
    with fault.during:
        if fault.file_limit is None:
            done = zoo_here(*fault.argv)
        else:
            with helpers.file_limit(fault.file_limit):
                done = zoo_here(*fault.argv)
    assert done.returncode == 2, done.stdout + done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("zoo ")] == [fault.expected], done.stderr
    assert "Traceback" not in done.stderr
    assert [_state(folder) for folder in fault.kept] == before


def test_a_rerun_after_a_kill_starts_clean_and_never_mixes(scene, zoo_here, tmp_path):
    """What a killed prepare leaves (a generation half written, or whole but not yet in the manifest) goes."""
    prepared = tmp_path / "prepared"
    shutil.copytree(scene.prepared, prepared)
    for leftover in (".partial-0123abcd", "89abcdef"):
        (prepared / "shards" / leftover).mkdir()
        (prepared / "shards" / leftover / "case_000.tfrecord").write_bytes(b"half a shard")
    done = zoo_here("prepare", scene.cohort, prepared, "--window=-200,250")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "removed 2 shards of the replaced manifest and 2 folders of interrupted runs"
    manifest = shards.load_manifest(prepared)
    assert manifest["hu_window"] == [-200.0, 250.0]
    listed = sorted(case["shard"] for case in manifest["cases"])
    assert sorted(str(p) for p in (prepared / "shards").rglob("*") if p.is_file()) == listed
