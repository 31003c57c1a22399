"""Which layout a cohort folder has: the one place that tells, and what each layout's cases and classes are.

``LAYOUTS`` is the table, tried in order (``detect``):

- nnU-Net v2 raw: a ``dataset.json`` with ``"channel_names"`` (``common.ct.dataset_json``);
- the Medical Segmentation Decathlon: a ``dataset.json`` with a ``"training"`` list;
- the zoo's ``images/`` + ``labels/``, with an optional ``dataset.json`` whose ``"labels"`` maps
  ``"0".."N-1"`` to class names (``common.ct.cases``);
- LiTS: ``volume-N.nii`` beside ``segmentation-N.nii``, the same optional ``dataset.json``.

``zoo prepare``, ``evaluate`` and ``predict`` name the layout they found
(``Layout.description``), so a folder read as another layout than meant is
seen at once. ``prediction_inputs`` lists what ``zoo predict`` reads from a
folder: a dataset's test images (imagesTs), else the folder's own volumes.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

from common.ct import cases as cohort_cases
from common.ct import dataset_json
from common.ct.cases import Case
from common.errors import DataError


@dataclasses.dataclass(frozen=True)
class Layout:
    """One cohort layout: how it is recognised, and how its cases, class names and test images are read.

    Each reader takes (root, its ``dataset.json`` as a dict or None); ``cases`` also ``require_labels``.
    """

    name: str  # recorded in the prepared manifest ("layout")
    description: str  # what the commands print: "cohort layout: <description>"
    matches: Callable[[pathlib.Path, dict | None], bool]
    cases: Callable[[pathlib.Path, dict | None, bool], list[Case]]
    class_names: Callable[[pathlib.Path, dict | None], list[str] | None]
    tests: Callable[[pathlib.Path, dict | None], list[Case]] | None = None  # the dataset's imagesTs


def _shipped(root: pathlib.Path, spec: dict | None, key: str) -> bool:
    """A dataset.json with ``key`` beside an imagesTr or imagesTs folder (nnU-Net and the Decathlon need both)."""
    return bool(spec) and key in spec and ((root / "imagesTr").is_dir() or (root / "imagesTs").is_dir())


def _lits_cases(root: pathlib.Path, _spec, require_labels: bool) -> list[Case]:
    found = cohort_cases.find_lits_cases(root, require_labels)
    if not found:
        raise DataError(f"{root}: no cohort found (neither imagesTr/ with a dataset.json (Decathlon, nnU-Net v2 "
                        "raw), nor images/ and labels/, nor LiTS volume-N.nii files)")
    return found


def _index_names(root: pathlib.Path, spec: dict | None) -> list[str] | None:
    return dataset_json.index_class_names(root / dataset_json.NAME, spec)


NNUNET_V2 = Layout(
    "nnunet_v2", "nnU-Net v2 raw (dataset.json, imagesTr/labelsTr, channel suffix _0000)",
    lambda root, spec: _shipped(root, spec, "channel_names"), dataset_json.nnunet_cases,
    lambda root, spec: dataset_json.value_class_names(root / dataset_json.NAME, spec), dataset_json.nnunet_tests)
DECATHLON = Layout(
    "decathlon", "Medical Segmentation Decathlon (dataset.json 'training' list, imagesTr/labelsTr)",
    lambda root, spec: _shipped(root, spec, "training"), dataset_json.decathlon_cases, _index_names,
    dataset_json.decathlon_tests)
IMAGES_LABELS = Layout(
    "images_labels", "images/ + labels/", lambda root, spec: (root / "images").is_dir(),
    lambda root, _spec, require_labels: cohort_cases.find_image_label_cases(root, require_labels), _index_names)
LITS = Layout("lits", "LiTS (volume-N.nii beside segmentation-N.nii)", lambda root, spec: True, _lits_cases,
              _index_names)
LAYOUTS = (NNUNET_V2, DECATHLON, IMAGES_LABELS, LITS)


def detect(root) -> tuple[Layout, dict | None]:
    """The layout of a cohort folder and its ``dataset.json`` (None without one).

    Raises:
        DataError: for a missing folder, an unreadable ``dataset.json``, or an ``imagesTr`` folder
            whose ``dataset.json`` is neither the Decathlon's nor nnU-Net v2's.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such cohort folder")
    spec = dataset_json.load(root)
    for layout in LAYOUTS[:2]:
        if layout.matches(root, spec):
            return layout, spec
    if (root / "imagesTr").is_dir():
        if spec is None:
            raise DataError(f"{root}: imagesTr/ without a dataset.json, which the Decathlon's and nnU-Net v2's "
                            "layouts need")
        raise DataError(f"{root / dataset_json.NAME}: neither the Decathlon's (a 'training' list) nor nnU-Net v2's "
                        "('channel_names') dataset.json")
    return next(layout for layout in LAYOUTS[2:] if layout.matches(root, spec)), spec


@dataclasses.dataclass(frozen=True)
class Cohort:
    """A cohort folder's layout and cases (``class_names()`` reads its ``dataset.json`` "labels" when asked)."""

    root: pathlib.Path
    layout: Layout
    spec: dict | None
    cases: list[Case]

    def class_names(self) -> list[str] | None:
        return self.layout.class_names(self.root, self.spec)


def read_cohort(root, require_labels: bool = True) -> Cohort:
    """The cohort at ``root``: its layout (``detect``) and its cases.

    Args:
        root: the cohort folder.
        require_labels: raise if an image has no label file.
    """
    root = pathlib.Path(root)
    layout, spec = detect(root)
    return Cohort(root, layout, spec, layout.cases(root, spec, require_labels))


def prediction_inputs(folder, output=None) -> tuple[str, list[Case]]:
    """What ``zoo predict`` reads from a folder: (a description for its output, the unlabelled cases).

    A Decathlon or nnU-Net v2 dataset gives its test images (imagesTs); any other folder its own
    volumes, named as nnU-Net names them: when every name ends with the channel suffix ``_0000``
    (nnU-Net's imagesTs given directly), the case ids drop it. An ``output`` folder inside the
    folder is not an input (a rerun would read it as a DICOM series); the description says so.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    spec = dataset_json.load(folder)
    for layout in LAYOUTS[:2]:
        if layout.matches(folder, spec):
            return f"{layout.description}, its test images", layout.tests(folder, spec)
    entries = cohort_cases.volume_entries(folder)
    left_out = ""
    for case_id, path in list(entries.items()):
        if output is not None and path.resolve() == pathlib.Path(output).resolve():
            left_out = f" ({path.name}/, the output folder, left out)"
            del entries[case_id]
    if not entries:
        raise DataError(f"{folder}: no volumes found ({', '.join(cohort_cases.VOLUME_SUFFIXES)} or DICOM folders); "
                        "for one DICOM series, name an output file (e.g. labels.nii.gz)")
    stems = {case_id: dataset_json.CHANNEL.fullmatch(case_id) for case_id in entries}
    if all(match and match.group(2) == "0000" for match in stems.values()):
        return (f"a folder of volumes with nnU-Net's channel suffix _0000{left_out}",
                [Case(stems[case_id].group(1), entries[case_id]) for case_id in sorted(entries)])
    return f"a folder of volumes{left_out}", [Case(case_id, entries[case_id]) for case_id in sorted(entries)]
