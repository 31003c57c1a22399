"""What SimpleITK's readers let through, checked before a volume is used (``common.ct.volumes.read_volume``).

ITK fills a short file's missing voxels with zeros, reads a NIfTI spacing of 0
as 1 mm and its NaN/Inf voxels as 0, spaces a DICOM series with missing slices
evenly, and hands other formats' NaN/Inf voxels on as numbers; each is a
``DataError`` naming the file here instead.
"""

from __future__ import annotations

import gzip
import math
import os
import pathlib
import re
import struct
import zlib

import numpy as np
import SimpleITK as sitk

from common.errors import DataError

# Teem (SimpleITK's NRRD reader) detects short data itself; these are its words for it.
TEEM_SHORT_READ = re.compile(r"fread got only|expected \d+ bytes but received")


def _truncated(path, present, declared) -> DataError:
    return DataError(f"{path}: truncated, {present} bytes where its header declares {declared} "
                     "(an interrupted copy or download?)")


def check_nifti_length(path: pathlib.Path, reader: sitk.ImageFileReader) -> None:
    """ITK's NIfTI reader fills missing data with zeros without a word, so the length is checked here."""
    keys = set(reader.GetMetaDataKeys())
    if not {"dim[0]", "bitpix", "vox_offset"} <= keys:
        return
    dims = [int(reader.GetMetaData(f"dim[{i}]")) for i in range(1, int(reader.GetMetaData("dim[0]")) + 1)]
    declared = int(float(reader.GetMetaData("vox_offset"))) + math.prod(dims) * int(reader.GetMetaData("bitpix")) // 8
    with open(path, "rb") as file:
        magic = file.read(2)
        if magic != b"\x1f\x8b":
            present = path.stat().st_size
            if present < declared:
                raise _truncated(path, present, declared)
            return
        # A whole gzip stream ends with its length mod 2**32 (RFC 1952, ISIZE): four bytes read
        # spare a normal file a second decompression; only a mismatch is decompressed to measure it.
        file.seek(-4, os.SEEK_END)
        if int.from_bytes(file.read(4), "little") == declared % 2**32:
            return
    present = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                present += len(chunk)
    except EOFError:
        raise DataError(f"{path}: truncated, its gzip stream ends before the {declared} bytes its header "
                        "declares (an interrupted copy or download?)") from None
    except (OSError, zlib.error) as error:
        raise DataError(f"{path}: corrupt gzip stream ({error})") from None
    if present < declared:
        raise _truncated(path, present, declared)


def check_meta_image_length(path: pathlib.Path, reader: sitk.ImageFileReader) -> None:
    """MetaIO reports a short read only on stderr and then fails with "No such file or directory",
    so the data's length is compared with the header's own fields here."""
    with open(path, "rb") as file:
        head = file.read(1 << 16)
    fields, header_end = {}, None
    for match in re.finditer(rb"^\s*(\w+)\s*=\s*(.*?)\s*$", head, re.MULTILINE):
        fields[match.group(1).decode()] = match.group(2).decode(errors="replace")
        if match.group(1) == b"ElementDataFile":
            header_end = head.find(b"\n", match.end()) + 1 or len(head)
            break
    data_file = fields.get("ElementDataFile", "")
    if header_end is None or "HeaderSize" in fields or data_file.startswith("LIST") or "%" in data_file:
        return  # data laid out in ways this check does not follow: left to MetaIO
    offset, data_path = (header_end, path) if data_file == "LOCAL" else (0, path.parent / data_file)
    if fields.get("CompressedData", "False").lower() == "true":
        if "CompressedDataSize" not in fields:
            return
        declared = int(fields["CompressedDataSize"])
    else:
        item = sitk.GetArrayViewFromImage(sitk.Image((1, 1), reader.GetPixelID())).itemsize
        declared = math.prod(reader.GetSize()) * reader.GetNumberOfComponents() * item
    if data_path.exists() and data_path.stat().st_size - offset < declared:
        raise _truncated(data_path, data_path.stat().st_size - offset, declared)



def check_even_slices(folder: pathlib.Path, reader: sitk.ImageSeriesReader, image: sitk.Image) -> None:
    """Raises DataError when the gaps between slice positions vary: slices are missing.

    ITK only warns ("Non uniform sampling or missing slices") and spaces the slices evenly.
    """
    count = len(reader.GetFileNames())
    if count < 3 or not all(reader.HasMetaDataKey(i, "0020|0032") for i in range(count)):
        return
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    # 0020|0032, Image Position Patient, projected on the slice normal.
    positions = np.array([[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")]
                          for i in range(count)]) @ normal
    gaps = np.diff(positions)
    usual = float(np.median(gaps))
    if abs(usual) < 1e-6:
        return
    uneven = np.flatnonzero(np.abs(gaps - usual) > 0.1 * abs(usual))
    if uneven.size == 0:
        return
    where = ", ".join(f"{gaps[i]:g} mm between {positions[i]:g} and {positions[i + 1]:g}" for i in uneven[:3])
    missing = [positions[i] + k * usual for i in uneven for k in range(1, round(gaps[i] / usual))]
    hint = f"; slices missing at {', '.join(f'{m:g}' for m in missing[:10])} mm" if missing else ""
    raise DataError(f"{folder}: DICOM series has uneven slice gaps (usual {usual:g} mm; {where}){hint}")


def _nifti_header(path: pathlib.Path) -> tuple[str, bytes] | None:
    """(byte order, the 348-byte header) of a NIfTI-1 file, .nii or .nii.gz; None for anything else."""
    with open(path, "rb") as file:
        head = file.read(1 << 14)
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 348)  # gzip framing: wbits 16 + 15
        except zlib.error:
            return None  # a damaged stream: check_nifti_length names it
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            return order, head[:348]
    return None


def check_nifti_spacing(path: pathlib.Path) -> None:
    """Raises DataError when a NIfTI-1 header gives a spatial pixdim of 0 (or NaN/Inf).

    nifti1_io reads such a spacing as 1 mm without a word (and ITK reports the corrected value as
    its metadata), so the raw header is read here. Other formats need no check: ITK itself refuses
    a spacing of 0 ("Refusing to change spacing").
    """
    found = _nifti_header(path)
    if found is None:
        return
    order, header = found
    spatial = min(max(struct.unpack(order + "h", header[40:42])[0], 0), 3)
    pixdim = struct.unpack(order + "8f", header[76:108])
    for axis in range(1, spatial + 1):
        if not (math.isfinite(pixdim[axis]) and pixdim[axis] != 0):
            raise DataError(f"{path}: pixdim[{axis}] (the voxel spacing along {'xyz'[axis - 1]}) is "
                            f"{pixdim[axis]:g} in its header; the volume's geometry is unknown")


def check_finite(image: sitk.Image, path) -> None:
    """Raises DataError naming the count of NaN/Inf voxels: a model would label them as anything, silently.

    NIfTI's reader (nifti1_io) sets NaN/Inf floats to 0 before ITK sees them, so a NIfTI file's
    own data is counted; other formats hand them on, and the image is counted.
    """
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return  # integer voxels are always finite (and NIfTI's scaled integers are scaled by finite factors)
    path = pathlib.Path(path)
    found = _nifti_header(path) if path.is_file() else None
    if found is not None:
        bad, total = _nifti_non_finite(path, *found)
    else:
        voxels = sitk.GetArrayViewFromImage(image)
        bad, total = voxels.size - int(np.count_nonzero(np.isfinite(voxels))), voxels.size
    if bad:
        raise DataError(f"{path}: {bad} of {total} voxels are not finite (NaN or Inf)")


_NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI-1 datatype codes: FLOAT32, FLOAT64


def _nifti_non_finite(path: pathlib.Path, order: str, header: bytes) -> tuple[int, int]:
    """(non-finite voxels, voxels) of a NIfTI file's float data, read in 16 MiB chunks."""
    datatype = struct.unpack(order + "h", header[70:72])[0]
    if datatype not in _NIFTI_FLOATS:
        return 0, 0
    dtype = np.dtype(order + _NIFTI_FLOATS[datatype])
    dims = struct.unpack(order + "8h", header[40:56])
    total = math.prod(max(side, 1) for side in dims[1:1 + min(max(dims[0], 0), 7)])
    offset = int(struct.unpack(order + "f", header[108:112])[0])
    bad = 0
    with (gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")) as stream:
        stream.seek(offset)
        left = total * dtype.itemsize
        while left > 0 and (chunk := stream.read(min(left, (16 << 20) // dtype.itemsize * dtype.itemsize))):
            values = np.frombuffer(chunk[:len(chunk) // dtype.itemsize * dtype.itemsize], dtype)
            bad += values.size - int(np.count_nonzero(np.isfinite(values)))
            left -= len(chunk)
    return bad, total


def _is_gzip(path: pathlib.Path) -> bool:
    with open(path, "rb") as file:
        return file.read(2) == b"\x1f\x8b"
