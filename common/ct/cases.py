"""A cohort's cases from its file names: the zoo's ``images/`` + ``labels/`` layout and the LiTS challenge's.

``images/`` + ``labels/``::

    COHORT/images/<case>.nii.gz     (or .nii, .mha, .mhd, .nrrd, or a DICOM series folder)
    COHORT/labels/<case>.nii.gz     (any of the same volume formats)

LiTS (the Liver Tumor Segmentation challenge's own layout): ``volume-<N>.nii``
beside ``segmentation-<N>.nii``, anywhere below the folder (the challenge
ships them in "Training Batch 1" and "Training Batch 2"); case ids
``volume-<N>``, sorted by N.

The layouts a ``dataset.json`` describes are read by ``common.ct.dataset_json``;
``common.ct.layouts`` tells which layout a folder has.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

from common.errors import DataError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


@dataclasses.dataclass(frozen=True)
class Case:
    """One image/label pair of a cohort (``label`` is None for unlabelled cases)."""

    case_id: str
    image: pathlib.Path
    label: pathlib.Path | None = None


def case_id_of(path: pathlib.Path) -> str:
    """Returns the case id of a volume file or DICOM folder (its name without suffix)."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def volume_entries(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """Case id -> volume file or DICOM folder of ``folder`` (hidden names, e.g. macOS ``._x.nii.gz``, left out)."""
    entries = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() or path.name.endswith(VOLUME_SUFFIXES):
            case_id = case_id_of(path)
            if case_id in entries:  # e.g. case_000.nii beside case_000.nii.gz: which one is the case?
                raise DataError(f"{entries[case_id]} and {path}: two volumes of case '{case_id}'; keep one")
            entries[case_id] = path
    return entries


def pair(images: dict[str, pathlib.Path], labels: dict[str, pathlib.Path], images_dir: pathlib.Path,
         labels_dir: pathlib.Path, require_labels: bool) -> list[Case]:
    """Cases pairing images and labels by case id, sorted by id; a label is never left out unread.

    Raises:
        DataError: naming a label without its image (renamed, or lost), or an image without its
            label when ``require_labels``.
    """
    orphans = sorted(set(labels) - set(images))
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise DataError(f"{labels[orphans[0]]}: a label volume without its image (no case '{orphans[0]}' in "
                        f"{images_dir}){more}")
    cases = []
    for case_id in sorted(images):
        label = labels.get(case_id)
        if label is None and require_labels:
            raise DataError(f"{images[case_id]}: no label volume for case '{case_id}' in {labels_dir}")
        cases.append(Case(case_id, images[case_id], label))
    return cases


def find_image_label_cases(root: pathlib.Path, require_labels: bool = True) -> list[Case]:
    """The cases of ``root/images/`` paired with ``root/labels/`` by file name."""
    images_dir, labels_dir = root / "images", root / "labels"
    images = volume_entries(images_dir)
    if not images:
        raise DataError(f"{images_dir}: no volumes found ({', '.join(VOLUME_SUFFIXES)} or DICOM folders)")
    labels = volume_entries(labels_dir) if labels_dir.is_dir() else {}
    return pair(images, labels, images_dir, labels_dir, require_labels)


_LITS_VOLUME = re.compile(r"volume-(\d+)(\.nii(?:\.gz)?)$")


def find_lits_cases(root, require_labels: bool = True) -> list[Case]:
    """Lists the cases of a LiTS folder: ``volume-N.nii`` with ``segmentation-N.nii`` beside it.

    Returns:
        The cases, sorted by N; an empty list when the folder holds no LiTS volume.
    """
    root = pathlib.Path(root)
    found = {}
    for path in sorted(root.rglob("volume-*.nii*")):
        match = _LITS_VOLUME.fullmatch(path.name)
        if not match or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        number, suffix = int(match.group(1)), match.group(2)
        if number in found:
            raise DataError(f"{path}: case {number} also found at {found[number].image}")
        label = path.with_name(f"segmentation-{match.group(1)}{suffix}")
        if not label.exists():
            others = [p for p in path.parent.glob(f"segmentation-{match.group(1)}.nii*")]
            label = others[0] if others else None
        if label is None and require_labels:
            raise DataError(f"{path}: no segmentation-{match.group(1)}.nii beside it (LiTS layout)")
        found[number] = Case(f"volume-{match.group(1)}", path, label)
    _check_lits_segmentations(root, {case.label for case in found.values()})
    return [found[n] for n in sorted(found)]


def _check_lits_segmentations(root: pathlib.Path, paired: set) -> None:
    """Raises DataError naming a ``segmentation-N.nii`` that no ``volume-N.nii`` of the folder uses."""
    for path in sorted(root.rglob("segmentation-*.nii*")):
        if path not in paired and not any(part.startswith(".") for part in path.relative_to(root).parts):
            raise DataError(f"{path}: a label volume without its image (no "
                            f"{path.name.replace('segmentation-', 'volume-', 1)} beside it)")
