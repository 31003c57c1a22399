import errno
import gzip
import json
import struct

import pytest

from common import atomic


def test_success_renames_into_place_keeping_the_suffix(tmp_path):
    target = tmp_path / "sub" / "labels.nii.gz"
    with atomic.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_bytes(gzip.compress(b"new"))
    assert gzip.decompress(target.read_bytes()) == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["labels.nii.gz"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "config.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def _nifti(voxels: int) -> bytes:
    """A NIfTI-1 header (348 bytes, vox_offset 352) of ``voxels`` uint8 voxels, and its 4-byte extension flag."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 1, voxels, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<h", header, 72, 8)
    struct.pack_into("<f", header, 108, 352.0)
    return bytes(header)


# (file name, what the writer leaves, words of the one-line error)
INCOMPLETE = [
    ("labels.nii.gz", lambda: gzip.compress(_nifti(100) + bytes(100))[:-12], "incomplete"),
    ("labels.nii.gz", lambda: gzip.compress(_nifti(100) + bytes(40)), "incomplete (392 of 452 bytes)"),
    ("labels.nii", lambda: _nifti(100) + bytes(10), "incomplete (362 of 452 bytes)"),
    ("model.keras", lambda: _zip()[:-30], "incomplete"),
    ("config.json", lambda: b"", "the writer left no data"),
]


def _zip() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", "{}" * 100)
    return buffer.getvalue()


@pytest.mark.parametrize("name, written, words", INCOMPLETE)
def test_an_incomplete_write_is_one_line_and_keeps_the_previous_file(tmp_path, name, written, words):
    target = tmp_path / name
    target.write_bytes(b"the user's previous file")
    with pytest.raises(atomic.WriteError) as error:
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(written())
    assert str(error.value).startswith(f"{target}: not written: ") and words in str(error.value)
    assert str(error.value).endswith("the previous file is untouched") and "\n" not in str(error.value)
    assert target.read_bytes() == b"the user's previous file"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_whole_files_pass_and_a_failing_write_names_its_cause(tmp_path):
    for name, data in (("a.nii.gz", gzip.compress(_nifti(100) + bytes(100))), ("a.nii", _nifti(100) + bytes(100)),
                       ("a.keras", _zip())):
        with atomic.atomic_path(tmp_path / name) as tmp:
            tmp.write_bytes(data)
        assert (tmp_path / name).read_bytes() == data
    with pytest.raises(atomic.WriteError, match=r"b\.json: not written: no space left on device; nothing was"):
        with atomic.atomic_path(tmp_path / "b.json"):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_h5pys_failed_close_is_the_os_error_it_reports(tmp_path):
    """On a full disk h5py raises a RuntimeError when it closes the file; atomic_path reports its errno in one line."""
    path = tmp_path / "latest.weights.h5"
    full = ("Disable slist on flush dest failure failed (file write failed: time = Mon Dec  7 04:10:45 2026\n, "
            f"filename = '{path}', file descriptor = 9, errno = 28, error message = 'No space left on device', "
            "buf = 0x557ba82d2348, total write size = 9496, bytes this sub-write = 9496, offset = 253952)")
    with pytest.raises(atomic.WriteError) as raised:  # what h5py raised closing a backup on a full tmpfs
        with atomic.atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError(full)
    assert str(raised.value) == f"{path}: not written: no space left on device; nothing was written"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="^another error$"):
        with atomic.atomic_path(path):
            raise RuntimeError("another error")
