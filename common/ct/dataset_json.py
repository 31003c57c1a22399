"""The layouts a ``dataset.json`` describes: the Medical Segmentation Decathlon's and nnU-Net v2's raw one.

The Decathlon (``TaskNN_Name/``, as the challenge ships it)::

    dataset.json   "labels" {"0": "background", "1": "liver", ...}, "modality" {"0": "CT"},
                   "training" [{"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}, ...],
                   "test" ["./imagesTs/liver_132.nii.gz", ...]
    imagesTr/  labelsTr/  imagesTs/

nnU-Net v2's raw layout (``DatasetNNN_Name/``)::

    dataset.json   "channel_names" {"0": "CT"}, "labels" {"background": 0, "liver": 1, ...},
                   "numTraining" 131, "file_ending" ".nii.gz"
    imagesTr/<case>_0000.nii.gz   labelsTr/<case>.nii.gz   imagesTs/<case>_0000.nii.gz

Case ids are the image's file name without its suffix (nnU-Net's channel
suffix dropped), so the same scan has the same id in every layout. The zoo reads
single-channel CT: a dataset of several modalities or channels is refused in
one line, as are nnU-Net's region labels and "ignore" label, which the zoo's
losses and metrics have no rule for. Every file the ``"training"`` list
or the folders hold is used or named in an error, never skipped.
"""

from __future__ import annotations

import json
import pathlib
import re

from common.ct.cases import VOLUME_SUFFIXES, Case, case_id_of, pair, volume_entries
from common.errors import DataError

NAME = "dataset.json"
CHANNEL = re.compile(r"(.+)_(\d{4})$")  # nnU-Net's <case>_<channel>: _0000 is the first (and here the only) channel


def load(root: pathlib.Path) -> dict | None:
    """The folder's ``dataset.json`` as a dict, None when there is none."""
    path = root / NAME
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(spec, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(spec).__name__}")
    return spec


def index_class_names(path: pathlib.Path, spec: dict | None) -> list[str] | None:
    """The Decathlon's ``"labels"`` ({"0": "background", ...}) as class names; None without them."""
    if not spec or "labels" not in spec:
        return None
    labels = spec["labels"]
    try:
        return [str(labels[str(i)]) for i in range(len(labels))]
    except (KeyError, TypeError) as error:
        raise DataError(f"{path}: 'labels' must map '0'..'N-1' to class names ({error!r})") from None


def value_class_names(path: pathlib.Path, spec: dict) -> list[str] | None:
    """nnU-Net v2's ``"labels"`` ({"background": 0, "liver": 1, ...}) as class names in value order."""
    labels = spec.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, dict):
        raise DataError(f"{path}: 'labels' must map class names to 0..N-1 (nnU-Net v2), got {labels!r}")
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise DataError(f"{path}: 'labels' defines regions ({name!r}: {value}), nnU-Net's region-based "
                            "training; the zoo trains one class per label value")
        if name == "ignore":
            raise DataError(f"{path}: 'labels' has nnU-Net's 'ignore' label ({value}), voxels the losses skip; the "
                            "zoo trains and scores every voxel, so map them to a class first")
        if not isinstance(value, int) or isinstance(value, bool):
            raise DataError(f"{path}: 'labels' must map class names to integers (nnU-Net v2), got {name!r}: {value!r}")
    by_value = {value: name for name, value in labels.items()}
    if sorted(labels.values()) != list(range(len(labels))):
        raise DataError(f"{path}: 'labels' must give the values 0..{len(labels) - 1} once each (nnU-Net v2), got "
                        f"{sorted(labels.values())}")
    return [by_value[i] for i in range(len(labels))]


def _single_channel(path: pathlib.Path, channels, key: str) -> None:
    """Refuses a dataset of several modalities: the zoo's models take one CT channel."""
    if not isinstance(channels, dict) or not channels:
        raise DataError(f"{path}: '{key}' must name the image channels, e.g. {{\"0\": \"CT\"}}; got {channels!r}")
    if len(channels) > 1:
        names = ", ".join(f"{k}: {v}" for k, v in channels.items())
        raise DataError(f"{path}: {len(channels)} image channels ({names}); the zoo reads single-channel CT only")


def _member(root: pathlib.Path, path: pathlib.Path, where: str, value) -> pathlib.Path:
    """A file the Decathlon's lists name ("./imagesTr/x.nii.gz"), checked to exist inside the dataset folder."""
    if not isinstance(value, str) or not value:
        raise DataError(f"{path}: {where} must be a path like './imagesTr/case.nii.gz', got {value!r}")
    file = (root / value).resolve()
    if pathlib.PurePath(value).is_absolute() or not file.is_relative_to(root.resolve()):
        raise DataError(f"{path}: {where} {value!r} leaves the dataset folder")
    if not file.exists():
        suffixed = next((s for s in VOLUME_SUFFIXES if file.name.endswith(s)), None)
        hint = ""
        if suffixed and file.with_name(case_id_of(file) + "_0000" + suffixed).exists():
            hint = " (nnU-Net v1's layout, with _0000 files? convert it with nnUNetv2_convert_old_nnUNet_dataset)"
        raise DataError(f"{path}: {where} {value!r}: no such file{hint}")
    return root / value


def decathlon_cases(root: pathlib.Path, spec: dict, require_labels: bool = True) -> list[Case]:
    """The Decathlon's ``"training"`` pairs, in their order; files of imagesTr/labelsTr it does not list refused."""
    path = root / NAME
    _single_channel(path, spec.get("modality", {"0": "CT"}), "modality")
    training = spec.get("training")
    if not isinstance(training, list):
        raise DataError(f"{path}: 'training' must list {{'image': ..., 'label': ...}} pairs, got {training!r}")
    cases, listed = {}, set()
    for index, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{path}: training[{index}] must be {{'image': ..., 'label': ...}}, got {entry!r}")
        image = _member(root, path, f"training[{index}].image", entry["image"])
        label = _member(root, path, f"training[{index}].label", entry["label"]) if "label" in entry else None
        if label is None and require_labels:
            raise DataError(f"{path}: training[{index}] has no 'label'")
        case_id = case_id_of(image)
        if case_id in cases:
            raise DataError(f"{path}: training[{index}]: case '{case_id}' is listed twice")
        cases[case_id] = Case(case_id, image, label)
        listed |= {image.resolve(), label.resolve() if label else None}
    for folder in ("imagesTr", "labelsTr"):
        for file in (volume_entries(root / folder).values() if (root / folder).is_dir() else ()):
            if file.resolve() not in listed:
                raise DataError(f"{file}: in {folder} but not in {path}'s 'training' list; list it or move it out")
    if not cases:
        raise DataError(f"{path}: the 'training' list is empty")
    return list(cases.values())


def decathlon_tests(root: pathlib.Path, spec: dict) -> list[Case]:
    """The Decathlon's ``"test"`` images (imagesTs), unlabelled."""
    path = root / NAME
    _single_channel(path, spec.get("modality", {"0": "CT"}), "modality")
    tests = spec.get("test")
    if not isinstance(tests, list) or not tests:
        raise DataError(f"{path}: no 'test' list of images (imagesTs) to predict; give a folder of volumes")
    images = [_member(root, path, f"test[{index}]", value) for index, value in enumerate(tests)]
    return [Case(case_id_of(image), image) for image in images]


def _file_ending(path: pathlib.Path, spec: dict) -> str:
    ending = spec.get("file_ending")
    if ending not in VOLUME_SUFFIXES:
        raise DataError(f"{path}: file_ending {ending!r} is not a 3D volume format the zoo reads "
                        f"({', '.join(VOLUME_SUFFIXES)})")
    return ending


def _channel_files(folder: pathlib.Path, ending: str, path: pathlib.Path) -> dict[str, pathlib.Path]:
    """Case id -> ``<case>_0000<ending>`` of an nnU-Net images folder; any other volume there is refused."""
    images = {}
    for file in sorted(folder.iterdir()):
        if file.name.startswith(".") or not (file.is_dir() or file.name.endswith(VOLUME_SUFFIXES)):
            continue
        match = CHANNEL.fullmatch(file.name[:-len(ending)]) if file.name.endswith(ending) else None
        if match is None:
            raise DataError(f"{file}: not named <case>_0000{ending} (nnU-Net v2: the channel suffix and {path}'s "
                            "file_ending)")
        if match.group(2) != "0000":
            raise DataError(f"{file}: channel {match.group(2)} of case '{match.group(1)}', but {path} declares one "
                            "channel; the zoo reads single-channel CT only")
        images[match.group(1)] = file
    return images


def nnunet_cases(root: pathlib.Path, spec: dict, require_labels: bool = True) -> list[Case]:
    """nnU-Net v2's imagesTr/<case>_0000 paired with labelsTr/<case>, as many as ``"numTraining"`` says."""
    path = root / NAME
    if "dataset" in spec:  # nnU-Net v2's alternative: every file listed by path, possibly outside the folder
        raise DataError(f"{path}: lists its files in 'dataset', which the zoo does not read; put them in "
                        "imagesTr/ and labelsTr/ as <case>_0000 and <case>")
    _single_channel(path, spec.get("channel_names"), "channel_names")
    ending = _file_ending(path, spec)
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: no such folder (nnU-Net v2 raw layout)")
    images = _channel_files(images_dir, ending, path)
    labels = {}
    for file in (sorted(labels_dir.iterdir()) if labels_dir.is_dir() else ()):
        if not file.name.startswith(".") and file.name.endswith(VOLUME_SUFFIXES):
            if not file.name.endswith(ending):
                raise DataError(f"{file}: not a {ending} file, {path}'s file_ending")
            labels[file.name[:-len(ending)]] = file
    cases = pair(images, labels, images_dir, labels_dir, require_labels)
    declared = spec.get("numTraining")
    if declared is not None and declared != len(cases):
        raise DataError(f"{path}: numTraining is {declared}, but {images_dir} holds {len(cases)} cases (an "
                        "interrupted copy?)")
    if not cases:
        raise DataError(f"{images_dir}: no <case>_0000{ending} volumes")
    return cases


def nnunet_tests(root: pathlib.Path, spec: dict) -> list[Case]:
    """nnU-Net v2's imagesTs/<case>_0000 images, unlabelled."""
    path = root / NAME
    _single_channel(path, spec.get("channel_names"), "channel_names")
    folder = root / "imagesTs"
    images = _channel_files(folder, _file_ending(path, spec), path) if folder.is_dir() else {}
    if not images:
        raise DataError(f"{folder}: no test images to predict (nnU-Net v2 raw layout); give a folder of volumes")
    return [Case(case_id, images[case_id]) for case_id in sorted(images)]
