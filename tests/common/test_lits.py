"""The EAS U-Net paper's data recipe: LiTS file layout, tumour merged into liver, the 1.5 % slice filter."""

import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf

from common import cli, errors
from common.ct import shards, volumes
from common.ct import synthetic as synthetic_ct


def _pair(folder, number, label: np.ndarray, spacing=(1.0, 1.0, 2.0), label_spacing=None):
    """Writes volume-N.nii (HU ramp) and segmentation-N.nii (``label``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ct = sitk.GetImageFromArray(np.linspace(-300, 300, label.size, dtype=np.float32).reshape(label.shape))
    seg = sitk.GetImageFromArray(label.astype(np.uint8))
    ct.SetSpacing(spacing)
    seg.SetSpacing(label_spacing or spacing)
    sitk.WriteImage(ct, str(folder / f"volume-{number}.nii"))
    sitk.WriteImage(seg, str(folder / f"segmentation-{number}.nii"))


def _slices_of(shard) -> list[int]:
    return [int(tf.train.Example.FromString(record.numpy()).features.feature["slice"].int64_list.value[0])
            for record in tf.data.TFRecordDataset(str(shard))]


def test_lits_names_are_paired_and_sorted_by_number(tmp_path):
    label = np.zeros((2, 8, 8), np.uint8)
    _pair(tmp_path / "Training Batch 2", 10, label)
    _pair(tmp_path / "Training Batch 1", 2, label)
    _pair(tmp_path / "Training Batch 1", 0, label)
    cases = volumes.find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["volume-0", "volume-2", "volume-10"]
    for case in cases:
        number = case.case_id.split("-")[1]
        assert case.image.name == f"volume-{number}.nii" and case.label.name == f"segmentation-{number}.nii"
        assert case.label.parent == case.image.parent


def test_a_volume_without_its_segmentation_is_named(tmp_path):
    _pair(tmp_path, 0, np.zeros((2, 8, 8)))
    sitk.WriteImage(sitk.Image(8, 8, 2, sitk.sitkFloat32), str(tmp_path / "volume-7.nii"))
    with pytest.raises(errors.DataError, match=r"volume-7.nii: no segmentation-7.nii beside it"):
        volumes.find_cases(tmp_path)


def test_a_folder_that_is_neither_layout_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(errors.DataError, match="no 'images' folder .* and no LiTS volume-N.nii"):
        volumes.find_cases(tmp_path)


def test_a_segmentation_of_other_geometry_names_the_file(tmp_path):
    _pair(tmp_path, 3, np.zeros((2, 8, 8)), label_spacing=(1.0, 1.0, 3.0))
    with pytest.raises(errors.DataError, match=r"segmentation-3.nii: label spacing .* differs from image "
                                                 r".*volume-3.nii spacing"):
        shards.prepare(tmp_path, tmp_path / "prepared", **shards.PRESETS["lits"], log=lambda _: None)


def test_lits_preset_keeps_exactly_the_slices_with_enough_liver(tmp_path):
    # 100 x 100 slices: 1.5 % is 150 pixels. Tumour (2) counts as liver.
    liver_pixels = [0, 149, 150, 151, 100, 3000]
    label = np.zeros((len(liver_pixels), 100, 100), np.uint8)
    for z, count in enumerate(liver_pixels):
        label[z].flat[:count] = 1
    label[4].flat[100:150] = 2  # 100 liver + 50 tumour = 150
    label[5].flat[:40] = 2
    _pair(tmp_path / "lits", 0, label)
    manifest = shards.prepare(tmp_path / "lits", tmp_path / "prepared", **shards.PRESETS["lits"], log=lambda _: None)
    assert _slices_of(tmp_path / "prepared" / manifest["cases"][0]["shard"]) == [2, 3, 4, 5]
    assert manifest["class_names"] == ["background", "liver"] and manifest["label_map"] == {"2": 1}
    assert manifest["hu_window"] == [-200.0, 250.0] and manifest["min_label_fraction"] == 0.015
    arrays = volumes.load_case(volumes.find_cases(tmp_path / "lits")[0], 2, label_map={2: 1})
    assert set(np.unique(arrays.label)) == {0, 1}
    assert arrays.image.min() == 0.0 and arrays.image.max() == 1.0  # -300..300 HU clipped to [-200, 250]


def test_tumour_preset_keeps_three_classes(tmp_path):
    label = np.zeros((1, 20, 20), np.uint8)
    label[0, :5] = 1
    label[0, 5:7] = 2
    _pair(tmp_path / "lits", 4, label)
    manifest = shards.prepare(tmp_path / "lits", tmp_path / "prepared", **shards.PRESETS["lits_tumour"],
                              log=lambda _: None)
    assert manifest["num_classes"] == 3 and manifest["label_map"] is None
    arrays = volumes.load_case(volumes.find_cases(tmp_path / "lits")[0], 3)
    assert np.bincount(arrays.label.ravel()).tolist() == [260, 100, 40]


def test_synthetic_lits_cohort_through_the_cli(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    assert cli.main(["synthetic-ct", str(cohort), "--layout", "lits", "--cases", "3", "--size", "48,48,6",
                     "--spacing", "7,7,10"]) == 0
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


def test_synthetic_tumours_lie_inside_the_liver():
    image, organs = synthetic_ct.make_phantom(5, size=(48, 48, 8), spacing=(7.0, 7.0, 10.0))
    liver = sitk.GetArrayFromImage(organs) == 1
    hu, label = synthetic_ct._paint_tumours(image, liver, np.random.default_rng(0), count=2)
    assert (label == 2).any() and not ((label > 0) & ~liver).any()
    assert hu[label == 2].mean() < sitk.GetArrayFromImage(image)[label == 1].mean()
