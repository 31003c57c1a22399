"""Tests of the synthetic abdominal CT cohort: determinism, anatomy, HU, geometry, orientation, bad arguments."""

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from common.ct import synthetic as synthetic_ct
from common.ct.synthetic import CLASS_NAMES, make_phantom, write_cohort

# Intended mean HU per label (blur and noise included), from the module's contrast-phase table.
HU_RANGES = {
    "liver": (80, 120),
    "spleen": (100, 140),
    "kidney_right": (135, 185),
    "kidney_left": (135, 185),
    "stomach": (-350, 60),  # wall + fluid + gas pocket
    "gallbladder": (-10, 35),
    "pancreas": (60, 100),
}


def arrays(image, label):
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label)


def centroid_x(label_array, name):
    return np.argwhere(label_array == CLASS_NAMES.index(name))[:, 2].mean()


@pytest.fixture(scope="module")
def case0():
    return arrays(*make_phantom(0))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    return out, write_cohort(out, num_cases=2, seed=5)


def test_make_phantom_is_deterministic_and_seed_dependent(case0):
    image, label = case0
    again_image, again_label = arrays(*make_phantom(0))
    other_image, other_label = arrays(*make_phantom(1))
    assert np.array_equal(image, again_image) and np.array_equal(label, again_label)
    assert not np.array_equal(image, other_image)
    assert not np.array_equal(label, other_label)


def test_types_geometry_and_all_classes(case0):
    image, label = make_phantom(0)
    assert image.GetPixelID() == sitk.sitkFloat32 and label.GetPixelID() == sitk.sitkUInt8
    assert image.GetSize() == (128, 128, 32) and image.GetSpacing() == (2.7, 2.7, 5.0)
    assert label.GetOrigin() == image.GetOrigin() and label.GetDirection() == image.GetDirection()
    assert set(np.unique(case0[1])) == set(range(len(CLASS_NAMES)))
    # Some slices at the slab's ends hold no organ at all.
    assert not (case0[1] > 0).any(axis=(1, 2)).all()


@pytest.mark.parametrize("name", sorted(HU_RANGES))
def test_organ_mean_hu_in_intended_range(case0, name):
    image, label = case0
    low, high = HU_RANGES[name]
    assert low <= image[label == CLASS_NAMES.index(name)].mean() <= high


def test_background_tissues(case0):
    image, label = case0
    assert np.median(image[0, :4, :4]) < -900  # air in the corner
    assert image.max() > 400  # vertebra
    stomach = image[label == CLASS_NAMES.index("stomach")]
    assert (stomach < -400).sum() > 20  # a gas pocket


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_small_organs_are_not_tiny(seed):
    label = sitk.GetArrayFromImage(make_phantom(seed, noise_hu=0.0)[1])
    counts = np.bincount(label.ravel(), minlength=len(CLASS_NAMES))
    assert counts[CLASS_NAMES.index("pancreas")] >= 150
    assert counts[CLASS_NAMES.index("gallbladder")] >= 150
    assert counts[1:].min() >= 150


def test_cohort_layout_and_geometry(cohort):
    out, ids = cohort
    assert ids == ["case_000", "case_001"]
    assert sorted(os.listdir(out / "images")) == sorted(os.listdir(out / "labels")) == [
        "case_000.nii.gz", "case_001.nii.gz"]  # no temporary files left behind
    for case_id in ids:
        image = sitk.ReadImage(str(out / "images" / f"{case_id}.nii.gz"))
        label = sitk.ReadImage(str(out / "labels" / f"{case_id}.nii.gz"))
        assert image.GetSize() == label.GetSize() == (128, 128, 32)
        assert image.GetSpacing() == label.GetSpacing()
        assert image.GetOrigin() == label.GetOrigin() and image.GetDirection() == label.GetDirection()
        spacing = image.GetSpacing()
        assert spacing[0] == spacing[1] and 2.5 <= spacing[0] <= 3.0 and spacing[2] in (3.0, 4.0, 5.0)
        assert spacing[2] != spacing[0]  # anisotropic
    labels = json.loads((out / "dataset.json").read_text(encoding="utf-8"))["labels"]
    assert [labels[str(i)] for i in range(len(CLASS_NAMES))] == list(CLASS_NAMES)
    odd = sitk.ReadImage(str(out / "images" / "case_001.nii.gz"))
    assert np.allclose(odd.GetDirection(), (-1, 0, 0, 0, -1, 0, 0, 0, 1))


@pytest.mark.parametrize("index", [0, 1])
def test_reoriented_cohort_case_matches_phantom_and_anatomy(cohort, index):
    out, ids = cohort
    image = sitk.DICOMOrient(sitk.ReadImage(str(out / "images" / f"{ids[index]}.nii.gz")), "LPS")
    label = sitk.DICOMOrient(sitk.ReadImage(str(out / "labels" / f"{ids[index]}.nii.gz")), "LPS")
    case_seed, spacing = synthetic_ct._case_plan(5, index, None)
    expected_image, expected_label = make_phantom(case_seed, spacing=spacing)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected_image))
    assert np.array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(expected_label))
    assert np.allclose(image.GetOrigin(), expected_image.GetOrigin(), atol=1e-3)
    label_array = sitk.GetArrayFromImage(label)
    midline = (label_array.shape[2] - 1) / 2
    # Canonical LPS array: the patient's right is at small x.
    assert centroid_x(label_array, "liver") < midline < centroid_x(label_array, "spleen")
    assert centroid_x(label_array, "kidney_right") < midline < centroid_x(label_array, "kidney_left")


def test_write_cohort_is_deterministic(tmp_path):
    kwargs = dict(num_cases=2, seed=3, size=(48, 48, 8), spacing=(3.0, 3.0, 5.0))
    write_cohort(tmp_path / "a", **kwargs)
    write_cohort(tmp_path / "b", **kwargs)
    for sub in ("images", "labels"):
        for name in ("case_000.nii.gz", "case_001.nii.gz"):
            first = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / sub / name)))
            second = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / sub / name)))
            assert np.array_equal(first, second)


@pytest.mark.parametrize("call, kwargs, argument", [
    (write_cohort, dict(num_cases=0), "num_cases"),
    (write_cohort, dict(num_cases=-3), "num_cases"),
    (write_cohort, dict(size=(128, 0, 32)), "size"),
    (write_cohort, dict(size=(128, 128)), "size"),
    (write_cohort, dict(spacing=(2.7, -1.0, 5.0)), "spacing"),
    (make_phantom, dict(seed=0, size=(-1, 128, 32)), "size"),
    (make_phantom, dict(seed=0, spacing=(2.7, 2.7, 0.0)), "spacing"),
    (make_phantom, dict(seed=0, noise_hu=-1.0), "noise_hu"),
])
def test_bad_arguments_raise_value_error_naming_them(tmp_path, call, kwargs, argument):
    if call is write_cohort:
        kwargs = dict(out_dir=tmp_path, **kwargs)
    with pytest.raises(ValueError, match=argument):
        call(**kwargs)
    assert not (tmp_path / "images").exists()  # validated before anything is written
