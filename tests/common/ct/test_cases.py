"""common.ct.cases: case ids and the volumes of a folder (the zoo's images/+labels/ and LiTS listings)."""

import pathlib

import pytest

from common.ct import cases
from common.errors import DataError


@pytest.mark.parametrize("name, case_id", [
    ("case_000.nii.gz", "case_000"), ("liver_12.nii", "liver_12"), ("scan.mha", "scan"),
    ("dicom_folder", "dicom_folder"),
])
def test_a_case_id_is_the_name_without_its_volume_suffix(name, case_id):
    assert cases.case_id_of(pathlib.Path(name)) == case_id


def test_volume_entries_skip_hidden_and_other_files_and_refuse_two_files_of_one_case(tmp_path):
    for name in ("b.nii.gz", "a.nii", "._a.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "c").mkdir()  # a DICOM series folder
    assert list(cases.volume_entries(tmp_path)) == ["a", "b", "c"]
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    with pytest.raises(DataError, match=r"a\.nii and .*a\.nii\.gz: two volumes of case 'a'; keep one"):
        cases.volume_entries(tmp_path)
