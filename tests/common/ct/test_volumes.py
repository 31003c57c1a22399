import numpy as np
import pytest
import SimpleITK as sitk

from common import errors
from common.ct import shards, volume_checks, volumes
from tests import helpers


def _volume(shape=(6, 10, 12), spacing=(0.8, 0.8, 2.5), seed=0, dtype=np.int16):
    array = np.random.default_rng(seed).integers(-1000, 1000, size=shape).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 20.0, 5.0))
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"])
def test_read_volume_formats(tmp_path, suffix):
    image = _volume()
    path = tmp_path / f"case{suffix}"
    sitk.WriteImage(image, str(path))
    read = volumes.read_volume(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), rtol=1e-6)


def _write_dicom_series(folder, image):
    """One DICOM file per z slice, with the tags a series reader sorts and places slices by."""
    folder.mkdir(exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.GetDepth()):
        slice_ = image[:, :, z]
        slice_.SetMetaData("0020|0013", str(z + 1))  # instance number
        slice_.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, z)))))
        slice_.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")  # image orientation (patient)
        slice_.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")  # one series
        writer.SetFileName(str(folder / f"{z:03d}.dcm"))
        writer.Execute(slice_)


def test_read_dicom_series(tmp_path):
    image = sitk.Cast(_volume(shape=(4, 8, 8)), sitk.sitkInt16)
    _write_dicom_series(tmp_path, image)
    read = volumes.read_volume(tmp_path)
    assert read.GetSize() == image.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    assert read.GetSpacing()[2] == pytest.approx(2.5, abs=1e-3)


def test_dicom_series_with_a_missing_slice_names_the_folder_and_the_gap(tmp_path):
    folder = tmp_path / "series"
    _write_dicom_series(folder, sitk.Cast(_volume(shape=(6, 8, 8)), sitk.sitkInt16))  # z = 5, 7.5, ... 17.5
    (folder / "002.dcm").unlink()  # z = 10
    with pytest.raises(errors.DataError, match=r"series: DICOM series has uneven slice gaps \(usual 2.5 mm; "
                                               r"5 mm between 7.5 and 12.5\); slices missing at 10 mm"):
        volumes.read_volume(folder)


# (file written, compress, the file cut short, the name the error gives): every format SimpleITK writes.
TRUNCATED_CASES = [
    ("case.nii", False, "case.nii", "case.nii: truncated, 1292 bytes where its header declares 1792"),
    ("case.nii.gz", True, "case.nii.gz", "case.nii.gz: truncated, its gzip stream ends before the 1792 bytes"),
    ("case.mha", False, "case.mha", "case.mha: truncated, 940 bytes where its header declares 1440"),
    ("case.mha", True, "case.mha", "case.mha: truncated, .* bytes where its header declares"),
    ("case.mhd", False, "case.raw", "case.raw: truncated, 940 bytes where its header declares 1440"),
    ("case.nrrd", False, "case.nrrd", r"case.nrrd: truncated, the file is shorter than its header declares \(.*fread"),
    ("case.nrrd", True, "case.nrrd", "case.nrrd: truncated, the file is shorter than its header declares"),
]


@pytest.mark.parametrize("name, compress, cut, message", TRUNCATED_CASES)
def test_a_file_shorter_than_its_header_is_named(tmp_path, name, compress, cut, message):
    image = sitk.Cast(_volume(shape=(6, 10, 12)), sitk.sitkInt16)  # 1440 bytes of data
    sitk.WriteImage(image, str(tmp_path / name), compress)
    data = (tmp_path / cut).read_bytes()
    (tmp_path / cut).write_bytes(data[:-500])  # an interrupted copy
    with pytest.raises(errors.DataError, match=message):
        volumes.read_volume(tmp_path / name)


def test_a_gzip_stream_cut_in_its_trailer_is_truncated(tmp_path):
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(_volume(), str(path), True)
    path.write_bytes(path.read_bytes()[:-3])  # the data whole, the stream's length field cut
    with pytest.raises(errors.DataError, match="case.nii.gz: truncated, its gzip stream ends before"):
        volumes.read_volume(path)


def test_a_whole_nii_gz_is_decompressed_once(tmp_path, monkeypatch):
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(_volume(), str(path), True)

    def second_decompression(*args, **kwargs):
        raise AssertionError("a whole .nii.gz was decompressed a second time")

    monkeypatch.setattr(volume_checks.gzip, "open", second_decompression)
    assert volumes.read_volume(path).GetSize() == (12, 10, 6)


def test_unreadable_file_names_it(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not a nifti file")
    with pytest.raises(errors.DataError, match="broken.nii.gz"):
        volumes.read_volume(path)
    with pytest.raises(errors.DataError, match="missing.nii.gz: no such file"):
        volumes.read_volume(tmp_path / "missing.nii.gz")


def test_2d_image_is_refused(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image(16, 16, sitk.sitkInt16), str(path))
    with pytest.raises(errors.DataError, match=r"slice.nii.gz: expected a 3D volume, got a 2D image"):
        volumes.read_volume(path)


@pytest.mark.parametrize("what", ["size", "spacing", "origin", "direction"])
def test_geometry_mismatch_names_label_file(what):
    image = _volume()
    label = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    label.CopyInformation(image)
    if what == "size":
        label = sitk.Image((12, 10, 7), sitk.sitkUInt8)
        label.SetSpacing(image.GetSpacing())
        label.SetOrigin(image.GetOrigin())
    elif what == "spacing":
        label.SetSpacing((0.8, 0.8, 3.0))
    elif what == "origin":
        label.SetOrigin((0.0, 0.0, 0.0))
    else:
        label.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    with pytest.raises(errors.DataError, match=f"lab.nii: label {what} .* differs from image img.nii {what}"):
        volumes.check_same_geometry(image, label, "img.nii", "lab.nii")


def test_canonical_orientation_undoes_ras_storage():
    lps = _volume()
    ras = sitk.Flip(lps, (True, True, False))  # same physical content, stored RAS-like
    assert volumes.orientation_of(ras) == "RAS"
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(volumes.to_canonical(ras)), sitk.GetArrayFromImage(lps)
    )
    assert volumes.orientation_of(volumes.to_canonical(ras)) == "LPS"


def test_window_scales_to_unit_range():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    np.testing.assert_allclose(volumes.window(hu, (-160, 240)), [0.0, 0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="hu_window"):
        volumes.window(hu, (100, 100))


def test_check_labels_rejects_values_outside_classes():
    label = np.zeros((2, 4, 4), np.int16)
    label[0, 0, 0] = 9
    with pytest.raises(errors.DataError, match=r"seg.nii: label values \[9\] outside the 8 classes"):
        volumes.check_labels(label, 8, "seg.nii")
    assert volumes.check_labels(np.clip(label, 0, 7), 8, "seg.nii").dtype == np.uint8


def test_keep_slices_by_label_fraction():
    label = np.zeros((4, 10, 10), np.uint8)
    label[1, :2, :] = 1    # 20 %
    label[2, :1, :5] = 2   # 5 %
    label[3, :1, :4] = 1   # 4 %
    np.testing.assert_array_equal(volumes.keep_slices(label, 0.05), [1, 2])
    np.testing.assert_array_equal(volumes.keep_slices(label, 0.04, classes=[1]), [1, 3])
    np.testing.assert_array_equal(volumes.keep_slices(label, 0.0), [0, 1, 2, 3])


def test_find_cases_requires_labels(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    sitk.WriteImage(_volume(), str(tmp_path / "images" / "a.nii.gz"))
    sitk.WriteImage(_volume(), str(tmp_path / "images" / "b.mha"))
    sitk.WriteImage(_volume(), str(tmp_path / "labels" / "a.nii.gz"))
    with pytest.raises(errors.DataError, match="b.mha: no label volume for case 'b'"):
        volumes.find_cases(tmp_path)
    cases = volumes.find_cases(tmp_path, require_labels=False)
    assert [(c.case_id, c.label is not None) for c in cases] == [("a", True), ("b", False)]


def test_lits_names_are_paired_and_sorted_by_number(tmp_path):
    label = np.zeros((2, 8, 8), np.uint8)
    helpers.lits_pair(tmp_path / "Training Batch 2", 10, label)
    helpers.lits_pair(tmp_path / "Training Batch 1", 2, label)
    helpers.lits_pair(tmp_path / "Training Batch 1", 0, label)
    cases = volumes.find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["volume-0", "volume-2", "volume-10"]
    for case in cases:
        number = case.case_id.split("-")[1]
        assert case.image.name == f"volume-{number}.nii" and case.label.name == f"segmentation-{number}.nii"
        assert case.label.parent == case.image.parent


def test_a_volume_without_its_segmentation_is_named(tmp_path):
    helpers.lits_pair(tmp_path, 0, np.zeros((2, 8, 8)))
    sitk.WriteImage(sitk.Image(8, 8, 2, sitk.sitkFloat32), str(tmp_path / "volume-7.nii"))
    with pytest.raises(errors.DataError, match=r"volume-7.nii: no segmentation-7.nii beside it"):
        volumes.find_cases(tmp_path)


def test_a_folder_that_is_neither_layout_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(errors.DataError, match=r"no cohort found \(neither imagesTr/ with a dataset.json \(Decathlon, "
                                                 r"nnU-Net v2 raw\), nor images/ and labels/, nor LiTS volume-N.nii "
                                                 r"files\)$"):
        volumes.find_cases(tmp_path)


def test_a_segmentation_of_other_geometry_names_the_file(tmp_path):
    helpers.lits_pair(tmp_path, 3, np.zeros((2, 8, 8)), label_spacing=(1.0, 1.0, 3.0))
    with pytest.raises(errors.DataError, match=r"segmentation-3.nii: label spacing .* differs from image "
                                                 r".*volume-3.nii spacing"):
        shards.prepare(tmp_path, tmp_path / "prepared", **shards.PRESETS["lits"])


# NIfTI's reader sets NaN/Inf to 0 before ITK sees them (the file's data is counted); the others hand them on.
@pytest.mark.parametrize("name, dtype", [("case.nii", np.float64), ("case.nii.gz", np.float32),
                                         ("case.mha", np.float32), ("case.nrrd", np.float64)])
def test_non_finite_voxels_are_counted_in_every_format(tmp_path, name, dtype):
    array = np.zeros((6, 10, 12), dtype)
    array[2, 3, :5] = np.nan
    array[4, :2, :3] = -np.inf
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name), name.endswith(".gz"))
    with pytest.raises(errors.DataError, match=rf"{name}: 11 of 720 voxels are not finite \(NaN or Inf\)$"):
        volumes.read_volume(tmp_path / name)


@pytest.mark.parametrize("axis", [1, 2, 3])
def test_a_nifti_spacing_of_0_is_refused_not_read_as_1_mm(tmp_path, axis):
    import struct

    sitk.WriteImage(_volume(), str(tmp_path / "case.nii"))
    data = bytearray((tmp_path / "case.nii").read_bytes())
    data[76 + 4 * axis:80 + 4 * axis] = struct.pack("<f", 0.0)  # pixdim[axis]
    (tmp_path / "case.nii").write_bytes(bytes(data))
    with pytest.raises(errors.DataError, match=rf"case.nii: pixdim\[{axis}\] \(the voxel spacing along "
                                                 rf"{'xyz'[axis - 1]}\) is 0 in its header"):
        volumes.read_volume(tmp_path / "case.nii")


def test_two_volumes_of_one_case_and_a_label_without_its_image_are_named(tmp_path):
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
        sitk.WriteImage(_volume(), str(tmp_path / sub / "a.nii.gz"))
    sitk.WriteImage(_volume(), str(tmp_path / "labels" / "b.mha"))
    with pytest.raises(errors.DataError, match=r"labels/b.mha: a label volume without its image \(no case 'b' in "):
        volumes.find_cases(tmp_path)
    sitk.WriteImage(_volume(), str(tmp_path / "images" / "b.mha"))
    sitk.WriteImage(_volume(), str(tmp_path / "images" / "b.nrrd"))
    with pytest.raises(errors.DataError, match=r"images/b.mha and .*images/b.nrrd: two volumes of case 'b'; keep one"):
        volumes.find_cases(tmp_path)


def test_a_label_past_uint8_is_refused_not_wrapped():
    label = np.zeros((2, 4, 4), np.uint16)
    label[1, 2, 2] = 256
    with pytest.raises(errors.DataError, match=r"seg.nii: label value 256 does not fit the shards' 8-bit labels"):
        volumes.check_labels(label, 300, "seg.nii")
