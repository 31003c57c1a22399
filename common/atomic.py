"""Atomic writes: a file appears whole under its name, or not at all.

Every writer of the zoo goes through ``atomic_path``, so an interrupted run
never leaves half a file where a user (or a model server polling a folder)
could pick it up, and never clobbers what was there with a partial one.

A write is checked before it replaces anything: some writers (SimpleITK on a
full disk) leave a truncated file and report success, so ``atomic_path``
confirms the temporary file is complete (``check_complete``: present,
non-empty, and for gzip, NIfTI and zip-based formats read back to their end)
before the rename, and a failed write is one ``WriteError`` line naming the
file and the cause ("no space left on device").
"""

from __future__ import annotations

import contextlib
import errno as errnos
import fcntl
import gzip
import json
import os
import pathlib
import re
import struct
import uuid
import zipfile

# Formats that hold at least a header; an empty TFRecord shard or text file can be legitimate.
NEVER_EMPTY = (".gz", ".nii", ".nrrd", ".mha", ".mhd", ".keras", ".zip", ".h5", ".json", ".geojson", ".png", ".jpg",
               ".jpeg", ".tif", ".tiff", ".npy")


class WriteError(OSError):
    """A file could not be written whole; the message names it and the cause, and the previous file is untouched."""


def _suffix(name: str) -> str:
    # ".nii.gz" and ".weights.h5" must stay whole: writers pick the format from it.
    for double in (".nii.gz", ".weights.h5", ".tar.gz"):
        if name.endswith(double):
            return double
    return pathlib.Path(name).suffix


def _nifti_size(header: bytes) -> int | None:
    """Bytes a NIfTI-1 file of this header holds (vox_offset + voxels * bitpix / 8), None if not NIfTI-1."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = struct.unpack(order + "f", header[108:112])[0]
            voxels = 1
            for side in dims[1:1 + max(0, min(dims[0], 7))]:
                voxels *= max(side, 1)
            return int(offset) + voxels * bitpix // 8
    return None


def check_complete(path) -> None:
    """Raises OSError unless ``path`` is a whole file: present, non-empty, and readable to its end.

    gzip streams are decompressed to their end-of-stream marker, NIfTI files
    are as long as their header says, zip archives (``.keras``) pass their CRC
    check. Other formats are checked for presence and size only.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise OSError(errnos.EIO, "the writer left no file")
    name = path.name
    if path.stat().st_size == 0 and name.lower().endswith(NEVER_EMPTY):
        raise OSError(errnos.EIO, "the writer left no data (is the disk full?)")
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                header = stream.read(352)
                size = len(header) + sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 20), b""))
        elif name.endswith(".nii"):
            header, size = path.read_bytes()[:352], path.stat().st_size
        elif name.endswith((".keras", ".zip")):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise OSError(errnos.EIO, f"the archive's member {bad} is damaged")
            return
        else:
            return
    except (EOFError, zipfile.BadZipFile, gzip.BadGzipFile) as error:
        raise OSError(errnos.EIO, f"the file is incomplete ({error})") from None
    expected = _nifti_size(header) if ".nii" in name else None
    if expected is not None and size < expected:
        raise OSError(errnos.EIO, f"the file is incomplete ({size} of {expected} bytes)")


def _os_error(error: Exception) -> OSError:
    """``error`` as the OSError it is: h5py reports a write that failed when it closed the file (a full disk)
    as a RuntimeError "... errno = 28, error message = 'No space left on device' ..."; any other error is
    raised again as it was."""
    if isinstance(error, OSError):
        return error
    found = re.search(r"\berrno = (\d+)", str(error))
    if found is None:
        raise error
    return OSError(int(found.group(1)), os.strerror(int(found.group(1))))


def _cause(error: OSError) -> str:
    if isinstance(error, WriteError):
        return str(error)
    text = os.strerror(error.errno) if error.errno in (errnos.ENOSPC, errnos.EFBIG, errnos.EROFS, errnos.EACCES,
                                                       errnos.EDQUOT) else (error.strerror or str(error))
    return text[:1].lower() + text[1:]


@contextlib.contextmanager
def atomic_path(path, verify=None):
    """Yields a temporary path beside ``path``; renames it onto ``path`` once the block succeeded and it is whole.

    The temporary name keeps the suffix, so format-sniffing writers (SimpleITK,
    Keras, OpenCV) write the right format. After the block the file is checked
    (``check_complete``, then ``verify(tmp)`` when given); a write that failed
    or left an incomplete file raises ``WriteError`` naming ``path`` and the
    cause, and ``path`` keeps what it held. On any exception the temporary
    file is removed.
    """
    path = pathlib.Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteError(f"{path}: cannot create its folder ({_cause(error)})") from None
    suffix = _suffix(path.name)
    tmp = path.with_name(f".{path.name[:len(path.name) - len(suffix)]}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        try:
            yield tmp
            check_complete(tmp)
            if verify is not None:
                verify(tmp)
            os.replace(tmp, path)
        except WriteError:
            raise
        except (OSError, RuntimeError) as error:
            error = _os_error(error)
            kept = "the previous file is untouched" if path.exists() else "nothing was written"
            raise WriteError(f"{path}: not written: {_cause(error)}; {kept}") from None
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def locked_folder(folder, command: str):
    """An exclusive lock on ``folder`` while ``command`` writes it; a second writer gets one WriteError line.

    The kernel releases the lock when the process ends, killed or not, so a crash never leaves the folder locked.
    """
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WriteError(f"{folder}: another `{command}` is writing this folder; wait for it to end") from None
        yield
    finally:
        os.close(descriptor)


def write_json(path, payload) -> None:
    """Writes ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")


def save_weights(model, path) -> None:
    """``model.save_weights`` (a ``.weights.h5`` file), atomically: a kill mid-save leaves the last file whole."""
    with atomic_path(path) as tmp:
        model.save_weights(str(tmp))


def write_image(path, image, rgb: bool = False, params=()) -> None:
    """Writes an image with OpenCV (format from the suffix: .png, .jpg), atomically.

    Args:
        path: the file to write.
        image: uint8 array, (H, W) or (H, W, 3) in OpenCV's BGR order, or RGB with ``rgb=True``.
        rgb: convert RGB to BGR first.
        params: OpenCV's ``imwrite`` flags, e.g. ``(cv2.IMWRITE_JPEG_QUALITY, 95)``.

    Raises:
        OSError naming the file when OpenCV cannot write it.
    """
    import cv2  # imported here: the rest of this module is stdlib only (the model packages use it)

    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if rgb else image
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), pixels, list(params)):
            raise OSError(f"{path}: OpenCV could not write the image")
