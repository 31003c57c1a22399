"""CT volumes: reading with SimpleITK, geometry checks, canonical orientation, HU windows.

A cohort folder's cases come from ``find_cases``, whatever its layout: the
Medical Segmentation Decathlon's (imagesTr/labelsTr and a ``dataset.json``),
nnU-Net v2's raw one (``<case>_0000.nii.gz``), the zoo's ``images/`` +
``labels/``, or LiTS's ``volume-N.nii``; ``common.ct.layouts`` tells which.

Every volume is reoriented to ``CANONICAL_ORIENTATION`` ("LPS": identity
direction, the DICOM display convention) before it becomes an array, so a
NumPy array ``(z, y, x)`` always shows the patient's right on the image's left
and anterior at the top, whatever the file stored.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import SimpleITK as sitk

from common.ct import layouts, volume_checks
from common.ct.cases import Case
from common.errors import DataError

CANONICAL_ORIENTATION = "LPS"
# Abdominal soft-tissue window (level 40, width 400), the usual one for organs.
DEFAULT_WINDOW = (-160.0, 240.0)
MAX_LABEL = 255  # labels are stored and predicted as uint8


def find_cases(root, require_labels: bool = True) -> list[Case]:
    """Lists the cases of a cohort folder of any layout ``common.ct.layouts`` reads.

    Args:
        root: the cohort folder.
        require_labels: raise if an image has no label file.

    Returns:
        The cases: sorted by id (LiTS: by volume number; the Decathlon: in its "training" list's order).
    """
    return layouts.read_cohort(root, require_labels).cases


def read_volume(path) -> sitk.Image:
    """Reads a 3D volume (NIfTI, MHA/MHD, NRRD, or a DICOM series folder).

    Raises:
        DataError: naming the file if it cannot be read, is truncated (shorter than its header
            declares), is not 3D, has a NIfTI pixdim of 0, holds NaN/Inf voxels (their count), or (a DICOM
            folder) misses slices; ``common.ct.volume_checks`` says why each needs checking.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    try:
        image = _read_series(path) if path.is_dir() else _read_file(path)
    except RuntimeError as error:
        lines = str(error).strip().splitlines()
        reason = lines[-1].strip() if lines else "unreadable"
        if volume_checks.TEEM_SHORT_READ.search(reason):
            raise DataError(f"{path}: truncated, the file is shorter than its header declares ({reason})") from None
        raise DataError(f"{path}: cannot be read as a volume ({reason})") from None
    if image.GetDimension() != 3:
        raise DataError(
            f"{path}: expected a 3D volume, got a {image.GetDimension()}D image of size {image.GetSize()}"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: expected a scalar volume, got {image.GetNumberOfComponentsPerPixel()} components")
    volume_checks.check_finite(image, path)
    return image


def _read_file(path: pathlib.Path) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()  # the header only: sizes to check before the data is read
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        volume_checks.check_nifti_length(path, reader)
        volume_checks.check_nifti_spacing(path)
    elif name.endswith((".mha", ".mhd")):
        volume_checks.check_meta_image_length(path, reader)
    return reader.Execute()


def _read_series(folder: pathlib.Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))
    if not files:
        raise DataError(f"{folder}: folder holds no DICOM series")
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's tags, read with the pixels
    image = reader.Execute()
    volume_checks.check_even_slices(folder, reader, image)
    return image


def check_same_geometry(image: sitk.Image, label: sitk.Image, image_path, label_path, tol: float = 1e-4) -> None:
    """Raises DataError unless image and label share size, spacing, origin and direction."""
    checks = (
        ("size", image.GetSize(), label.GetSize()),
        ("spacing", image.GetSpacing(), label.GetSpacing()),
        ("origin", image.GetOrigin(), label.GetOrigin()),
        ("direction", image.GetDirection(), label.GetDirection()),
    )
    for what, a, b in checks:
        if len(a) != len(b) or not np.allclose(a, b, atol=tol, rtol=0):
            raise DataError(
                f"{label_path}: label {what} {_fmt(b)} differs from image {image_path} {what} {_fmt(a)}"
            )


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def orientation_of(image: sitk.Image) -> str:
    """Returns the three-letter orientation code of an image (e.g. "LPS", "RAS")."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def to_canonical(image: sitk.Image) -> sitk.Image:
    """Reorients a volume to ``CANONICAL_ORIENTATION`` (a permutation/flip, no resampling)."""
    return sitk.DICOMOrient(image, CANONICAL_ORIENTATION)


def window(hu: np.ndarray, hu_window=DEFAULT_WINDOW) -> np.ndarray:
    """Clips Hounsfield units to ``hu_window`` and scales them to [0, 1] as float32."""
    low, high = float(hu_window[0]), float(hu_window[1])
    if not high > low:
        raise ValueError(f"hu_window must be (low, high) with low < high, got {tuple(hu_window)}")
    return ((np.clip(hu.astype(np.float32), low, high) - low) / (high - low)).astype(np.float32)


def check_labels(label: np.ndarray, num_classes: int, path) -> np.ndarray:
    """Returns ``label`` as uint8 after checking its values lie in ``[0, num_classes)``."""
    if not np.issubdtype(label.dtype, np.integer):
        if not np.all(np.equal(np.mod(label, 1), 0)):
            raise DataError(f"{path}: label volume holds non-integer values")
    low, high = label.min(), label.max()
    if high > MAX_LABEL:  # uint8 would wrap it around to another class (256 -> 0, background) without a word
        raise DataError(f"{path}: label value {int(high)} does not fit the shards' 8-bit labels (0-{MAX_LABEL})")
    if low < 0 or high >= num_classes:
        bad = np.unique(label[(label < 0) | (label >= num_classes)])[:5]
        raise DataError(
            f"{path}: label values {bad.tolist()} outside the {num_classes} classes [0, {num_classes - 1}]"
        )
    return label.astype(np.uint8)


@dataclasses.dataclass
class CaseArrays:
    """A case in canonical orientation: windowed image and labels as (z, y, x) arrays."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]


def map_labels(label: np.ndarray, label_map: dict | None) -> np.ndarray:
    """Renumbers label values, e.g. ``{2: 1}`` merges LiTS tumour into liver; unlisted values stay."""
    if not label_map:
        return label
    mapped = label.copy()
    for source, target in label_map.items():
        mapped[label == int(source)] = int(target)
    return mapped


def read_label(case: Case, image: sitk.Image, num_classes: int, label_map: dict | None = None) -> sitk.Image:
    """Reads a case's label volume, checks its geometry against ``image``, maps and checks its values."""
    label = read_volume(case.label)
    check_same_geometry(image, label, case.image, case.label)
    array = map_labels(sitk.GetArrayFromImage(label), label_map)
    result = sitk.GetImageFromArray(check_labels(array, num_classes, case.label))
    result.CopyInformation(label)
    return result


DISTRACTORS_DIR = "distractors"  # a cohort's organ look-alike maps, beside labels/ (zoo synthetic-ct --layout context)


def distractors_path(case: Case) -> pathlib.Path | None:
    """The case's distractor map, in its cohort's ``distractors/`` under the image's file name, or None."""
    path = case.image.parent.parent / DISTRACTORS_DIR / case.image.name
    return path if path.exists() else None


def read_distractors(case: Case, image: sitk.Image) -> np.ndarray | None:
    """The case's distractor map as a (z, y, x) array in ``image``'s geometry, or None when its cohort has none.

    The map holds on each distractor voxel the label of the organ it imitates.
    """
    path = distractors_path(case)
    if path is None:
        return None
    distractors = read_volume(path)
    check_same_geometry(image, distractors, case.image, path)
    return sitk.GetArrayFromImage(distractors)


def load_case(case: Case, num_classes: int, hu_window=DEFAULT_WINDOW, label_map: dict | None = None) -> CaseArrays:
    """Reads, checks, reorients and windows one case (labels renumbered by ``label_map``)."""
    image = read_volume(case.image)
    label_array = None
    if case.label is not None:
        label_array = sitk.GetArrayFromImage(to_canonical(read_label(case, image, num_classes, label_map)))
    canonical = to_canonical(image)
    return CaseArrays(
        case.case_id,
        window(sitk.GetArrayFromImage(canonical), hu_window),
        label_array,
        canonical.GetSpacing(),
    )


def keep_slices(label: np.ndarray, min_fraction: float = 0.0, classes=None) -> np.ndarray:
    """Returns the indices of the z slices whose labelled fraction is at least ``min_fraction``.

    Args:
        label: integer array (z, y, x).
        min_fraction: fraction of a slice's pixels that must belong to ``classes``;
            0 keeps every slice.
        classes: the label values that count (default: every non-zero label).
    """
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must lie in [0, 1], got {min_fraction}")
    if min_fraction == 0.0:
        return np.arange(label.shape[0])
    mask = label > 0 if classes is None else np.isin(label, list(classes))
    fraction = mask.reshape(mask.shape[0], -1).mean(axis=1)
    return np.flatnonzero(fraction >= min_fraction)


def read_slice(path, index: int | None = None, hu_window=DEFAULT_WINDOW) -> np.ndarray:
    """The windowed axial slice ``index`` of a volume in canonical orientation (default: the middle one)."""
    canonical = to_canonical(read_volume(path))
    depth = canonical.GetDepth()
    index = depth // 2 if index is None else index
    if not 0 <= index < depth:
        raise ValueError(f"slice: {index} is outside the {depth} slices of {path}")
    return window(sitk.GetArrayFromImage(canonical[:, :, index]), hu_window)
