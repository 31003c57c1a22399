"""common.ct.volume_checks: what SimpleITK's readers let through (non-finite voxels, a NIfTI spacing of 0)."""

import numpy as np
import pytest
import SimpleITK as sitk

from common.ct import volume_checks
from common.errors import DataError


def _nifti(path, values, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(np.asarray(values, np.float32))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return image


def test_nans_are_counted_in_the_file_though_the_nifti_reader_zero_fills_them(tmp_path):
    values = np.zeros((2, 3, 4), np.float32)
    values[0, 0, :3] = np.nan
    values[1, 2, 3] = np.inf
    _nifti(tmp_path / "ct.nii", values)
    read = sitk.ReadImage(str(tmp_path / "ct.nii"))
    with pytest.raises(DataError, match=r"ct\.nii: 4 of 24 voxels are not finite"):
        volume_checks.check_finite(read, tmp_path / "ct.nii")
    volume_checks.check_finite(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.float32)), tmp_path / "none.mha")


def test_a_nifti_pixdim_of_zero_is_refused(tmp_path):
    _nifti(tmp_path / "ct.nii", np.zeros((2, 3, 4)))
    volume_checks.check_nifti_spacing(tmp_path / "ct.nii")  # a whole header passes
    data = bytearray((tmp_path / "ct.nii").read_bytes())
    data[76 + 4 * 3:76 + 4 * 4] = np.float32(0).tobytes()  # pixdim[3]: the z spacing
    (tmp_path / "ct.nii").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"pixdim\[3\] \(the voxel spacing along z\) is 0"):
        volume_checks.check_nifti_spacing(tmp_path / "ct.nii")
