"""Cohorts as shipped (issue 38, item 1): the Decathlon's and nnU-Net v2's raw layouts read as today's.

The same three cases of the tiny cohort are laid out four ways (today's ``images/`` + ``labels/``,
the Decathlon's, nnU-Net v2's raw, and nnU-Net's with its own label order) by copying files;
``zoo prepare`` must write byte-identical shards and the same class names from each, one epoch of
``zoo train`` on each the same losses and weights, and ``zoo evaluate`` of one saved model the same
table. The ill layouts are one line each (ILL_LAYOUTS).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import pathlib
import shutil

import numpy as np
import pytest

from common.ct import layouts, shards
from common.ct.synthetic import CLASS_NAMES
from tests import helpers

TRAINED = ("case_000", "case_001", "case_002")
TESTED = ("case_003",)


def _copy(source: pathlib.Path, target: pathlib.Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _write_json(path: pathlib.Path, payload) -> None:
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")


def write_images_labels(tiny_cohort: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
    """Today's layout with the TRAINED cases and the synthetic cohort's dataset.json."""
    for case in TRAINED:
        for sub in ("images", "labels"):
            _copy(tiny_cohort / sub / f"{case}.nii.gz", root / sub / f"{case}.nii.gz")
    shutil.copyfile(tiny_cohort / "dataset.json", root / "dataset.json")
    return root


def write_decathlon(tiny_cohort: pathlib.Path, root: pathlib.Path, **changes) -> pathlib.Path:
    """The Decathlon's layout: imagesTr/labelsTr/imagesTs, the "training" pairs and "test" list."""
    for case in TRAINED:
        _copy(tiny_cohort / "images" / f"{case}.nii.gz", root / "imagesTr" / f"{case}.nii.gz")
        _copy(tiny_cohort / "labels" / f"{case}.nii.gz", root / "labelsTr" / f"{case}.nii.gz")
    for case in TESTED:
        _copy(tiny_cohort / "images" / f"{case}.nii.gz", root / "imagesTs" / f"{case}.nii.gz")
    _write_json(root / "dataset.json", {
        "name": "Tiny", "tensorImageSize": "3D", "modality": {"0": "CT"},
        "labels": {str(i): name for i, name in enumerate(CLASS_NAMES)},
        "numTraining": len(TRAINED), "numTest": len(TESTED),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in TRAINED],
        "test": [f"./imagesTs/{c}.nii.gz" for c in TESTED], **changes})
    return root


def write_nnunet(tiny_cohort: pathlib.Path, root: pathlib.Path, labels=None, **changes) -> pathlib.Path:
    """nnU-Net v2's raw layout: imagesTr/<case>_0000, labelsTr/<case>, imagesTs/<case>_0000, labels name -> int."""
    for case in TRAINED:
        _copy(tiny_cohort / "images" / f"{case}.nii.gz", root / "imagesTr" / f"{case}_0000.nii.gz")
        _copy(tiny_cohort / "labels" / f"{case}.nii.gz", root / "labelsTr" / f"{case}.nii.gz")
    for case in TESTED:
        _copy(tiny_cohort / "images" / f"{case}.nii.gz", root / "imagesTs" / f"{case}_0000.nii.gz")
    labels = labels or {name: i for i, name in enumerate(CLASS_NAMES)}
    _write_json(root / "dataset.json", {"channel_names": {"0": "CT"}, "labels": labels,
                                        "numTraining": len(TRAINED), "file_ending": ".nii.gz", **changes})
    return root


@pytest.fixture(scope="module")
def cohorts(tiny_cohort, tmp_path_factory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("layouts")
    # nnU-Net's "labels" in another key order: the class names follow the values, not the order.
    reordered = dict(sorted({name: i for i, name in enumerate(CLASS_NAMES)}.items()))
    return {"images_labels": write_images_labels(tiny_cohort, root / "plain"),
            "decathlon": write_decathlon(tiny_cohort, root / "Task03_Tiny"),
            "nnunet_v2": write_nnunet(tiny_cohort, root / "Dataset003_Tiny"),
            "nnunet_v2_reordered": write_nnunet(tiny_cohort, root / "Dataset004_Tiny", labels=reordered)}


def _shard_digests(prepared: pathlib.Path) -> dict[str, str]:
    return {case["id"]: hashlib.sha256(pathlib.Path(case["shard"]).read_bytes()).hexdigest()
            for case in shards.load_manifest(prepared)["cases"]}


def test_prepare_reads_every_layout_to_the_same_shards(zoo_here, cohorts, tmp_path):
    digests, names = {}, {}
    for key, cohort in cohorts.items():
        done = zoo_here("prepare", cohort, tmp_path / key)
        assert done.returncode == 0, done.stderr
        layout = layouts.detect(cohort)[0]
        assert done.stdout.splitlines()[0] == f"cohort layout: {layout.description}"
        manifest = json.loads((tmp_path / key / "dataset.json").read_text(encoding="utf-8"))
        assert manifest["layout"] == layout.name == key.removesuffix("_reordered") and manifest["num_classes"] == 8
        digests[key], names[key] = _shard_digests(tmp_path / key), manifest["class_names"]
    assert list(digests["images_labels"]) == list(TRAINED)
    assert all(value == digests["images_labels"] for value in digests.values())  # byte for byte
    assert all(value == list(CLASS_NAMES) for value in names.values())
    # One epoch of `zoo train` on today's and nnU-Net's shards: the same losses and the same weights. What training
    # reads of a prepared folder is its shards (equal, above) and its manifest's cases and classes, equal for all.
    trained = {key: _train_one_epoch(tmp_path / key, tmp_path / f"run_{key}") for key in ("images_labels", "nnunet_v2")}
    assert trained["nnunet_v2"][0] == trained["images_labels"][0]
    for mine, theirs in zip(trained["nnunet_v2"][1], trained["images_labels"][1]):
        np.testing.assert_array_equal(mine, theirs)
    read = {key: _what_training_reads(tmp_path / key) for key in cohorts}
    assert all(value == read["images_labels"] for value in read.values())


def _what_training_reads(prepared: pathlib.Path) -> dict:
    """A prepared folder's manifest as ``zoo train`` uses it: every key but where the files came from and lie."""
    manifest = shards.load_manifest(prepared)
    cases = [{k: v for k, v in case.items() if k != "shard"} for case in manifest["cases"]]
    return {**{k: v for k, v in manifest.items() if k not in ("layout", "source", "cases")}, "cases": cases}


def _train_one_epoch(prepared: pathlib.Path, run: pathlib.Path) -> tuple[list[str], list]:
    """One epoch of a tiny U-Net on a prepared folder: its history.csv losses and its weights."""
    from common.train import segmentation

    config = segmentation.TrainConfig(data=str(prepared), out=str(run), base_filters=2, epochs=1, batch_size=16,
                                      crop_size=32, test_cases=["case_002"], verbose=0)
    model = segmentation.train(config)
    with open(run / "history.csv", encoding="utf-8") as stream:
        losses = [row["loss"] for row in csv.DictReader(stream)]
    return losses, model.get_weights()


def test_the_layout_lines_name_what_was_found(cohorts):
    assert [layouts.detect(cohort)[0].description for cohort in list(cohorts.values())[:3]] == [
        "images/ + labels/", "Medical Segmentation Decathlon (dataset.json 'training' list, imagesTr/labelsTr)",
        "nnU-Net v2 raw (dataset.json, imagesTr/labelsTr, channel suffix _0000)"]


@pytest.fixture(scope="module")
def threshold_run(tmp_path_factory, cohorts) -> pathlib.Path:
    """A run folder of a known model (threshold of the windowed intensity), held-out case_002, on today's layout."""
    run = tmp_path_factory.mktemp("run")
    helpers.conv_model(helpers.THRESHOLD_KERNEL, helpers.THRESHOLD_BIAS).save(run / "model.keras")
    organs = {str(organ): 1 + organ % 2 for organ in range(1, 8)}  # the phantom's 7 organs as 2 classes
    _write_json(run / "config.json", {
        "model": "unet", "num_classes": 3, "hu_window": [-160.0, 240.0], "augment": "none", "label_map": organs,
        "class_names": ["background", "dark", "bright"], "source": str(cohorts["images_labels"]),
        "split": {"train": ["case_000", "case_001"], "test": ["case_002"]}})
    return run


def test_evaluate_gives_the_same_numbers_on_every_layout(zoo_here, cohorts, threshold_run):
    tables, scores = {}, {}
    for key, cohort in list(cohorts.items())[:3]:
        done = zoo_here("evaluate", threshold_run, "--cohort", cohort, "--metrics", "dice,hd95", "--tile", "whole")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == f"cohort layout: {layouts.detect(cohort)[0].description}"
        tables[key] = lines[1:]
        scores[key] = json.loads((threshold_run / "evaluation.json").read_text(encoding="utf-8"))
    assert list(scores["images_labels"]) == ["case_002"] and 0 < scores["images_labels"]["case_002"]["1"]["dice"]
    assert tables["decathlon"] == tables["nnunet_v2"] == tables["images_labels"]
    assert scores["decathlon"] == scores["nnunet_v2"] == scores["images_labels"]


def test_prediction_inputs_of_each_layout(cohorts, tmp_path):
    description, found = layouts.prediction_inputs(cohorts["decathlon"])
    assert description.endswith(", its test images") and [(c.case_id, c.image.name) for c in found] == [
        ("case_003", "case_003.nii.gz")]
    description, found = layouts.prediction_inputs(cohorts["nnunet_v2"])
    assert description.startswith("nnU-Net v2 raw") and [(c.case_id, c.image.name) for c in found] == [
        ("case_003", "case_003_0000.nii.gz")]
    description, found = layouts.prediction_inputs(cohorts["nnunet_v2"] / "imagesTr")  # the suffix dropped
    assert description == "a folder of volumes with nnU-Net's channel suffix _0000"
    assert [c.case_id for c in found] == list(TRAINED)
    description, found = layouts.prediction_inputs(cohorts["images_labels"] / "images")
    assert description == "a folder of volumes" and [c.case_id for c in found] == list(TRAINED)
    mixed = tmp_path / "mixed"  # not every name has the suffix: names are kept as they are
    for name in ("scan_0000.nii.gz", "scan_0001.nii.gz"):
        _copy(cohorts["images_labels"] / "images" / "case_000.nii.gz", mixed / name)
    assert [c.case_id for c in layouts.prediction_inputs(mixed)[1]] == ["scan_0000", "scan_0001"]
    (mixed / "predictions").mkdir()  # the output folder inside the input folder: not a DICOM series to read
    assert layouts.prediction_inputs(mixed, mixed / "predictions")[0] == (
        "a folder of volumes (predictions/, the output folder, left out)")


# --- ill layouts: one line each, naming the file, and nothing written ------------------------------------

@dataclasses.dataclass
class Ill:
    """A command on a damaged copy that must fail with ``expected`` (tmp paths in)."""

    argv: list
    expected: str


def _json_change(path: pathlib.Path, change) -> None:
    spec = json.loads(path.read_text(encoding="utf-8"))
    change(spec)
    _write_json(path, spec)


def nnunet_two_channels(tiny, tmp, model):
    root = write_nnunet(tiny, tmp / "ds", channel_names={"0": "CT", "1": "PET"})
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: 2 image channels (0: CT, "
                                                "1: PET); the zoo reads single-channel CT only")


def nnunet_two_channels_to_predict(tiny, tmp, model):
    root = write_nnunet(tiny, tmp / "ds", channel_names={"0": "CT", "1": "PET"})
    return Ill(["predict", model, root, tmp / "out"], f"zoo predict: error: {root}/dataset.json: 2 image channels "
                                                      "(0: CT, 1: PET); the zoo reads single-channel CT only")


def nnunet_second_channel_file(tiny, tmp, model):
    root = write_nnunet(tiny, tmp / "ds")
    shutil.copyfile(root / "imagesTr" / "case_001_0000.nii.gz", root / "imagesTr" / "case_001_0001.nii.gz")
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/imagesTr/case_001_0001.nii.gz: channel "
                                                f"0001 of case 'case_001', but {root}/dataset.json declares one "
                                                "channel; the zoo reads single-channel CT only")


def nnunet_image_without_suffix(tiny, tmp, model):
    root = write_nnunet(tiny, tmp / "ds")
    (root / "imagesTr" / "case_002_0000.nii.gz").rename(root / "imagesTr" / "case_002.nii.gz")
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/imagesTr/case_002.nii.gz: not named "
                                                f"<case>_0000.nii.gz (nnU-Net v2: the channel suffix and "
                                                f"{root}/dataset.json's file_ending)")


def nnunet_missing_label(tiny, tmp, model):
    root = write_nnunet(tiny, tmp / "ds")
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/imagesTr/case_001_0000.nii.gz: no label "
                                                f"volume for case 'case_001' in {root}/labelsTr")


def nnunet_num_training(tiny, tmp, model):
    root = write_nnunet(tiny, tmp / "ds", numTraining=4)
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: numTraining is 4, but "
                                                f"{root}/imagesTr holds 3 cases (an interrupted copy?)")


def nnunet_regions(tiny, tmp, model):
    root = write_nnunet(tiny, tmp / "ds", labels={"background": 0, "organs": [1, 2]})
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: 'labels' defines regions "
                                                "('organs': [1, 2]), nnU-Net's region-based training; the zoo trains "
                                                "one class per label value")


def nnunet_ignore_label(tiny, tmp, model):
    labels = {**{name: i for i, name in enumerate(CLASS_NAMES)}, "ignore": 8}
    root = write_nnunet(tiny, tmp / "ds", labels=labels)
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: 'labels' has nnU-Net's "
                                                "'ignore' label (8), voxels the losses skip; the zoo trains and scores "
                                                "every voxel, so map them to a class first")


def nnunet_label_gap(tiny, tmp, model):
    root = write_nnunet(tiny, tmp / "ds", labels={"background": 0, "liver": 2})
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: 'labels' must give the "
                                                "values 0..1 once each (nnU-Net v2), got [0, 2]")


def nnunet_png(tiny, tmp, model):
    root = write_nnunet(tiny, tmp / "ds", file_ending=".png")
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: file_ending '.png' is not a "
                                                "3D volume format the zoo reads (.nii.gz, .nii, .mha, .mhd, .nrrd, "
                                                ".nhdr)")


def nnunet_dataset_by_path(tiny, tmp, model):
    root = write_nnunet(tiny, tmp / "ds", dataset={"case_000": {"images": ["a.nii.gz"], "label": "b.nii.gz"}})
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: lists its files in "
                                                "'dataset', which the zoo does not read; put them in imagesTr/ and "
                                                "labelsTr/ as <case>_0000 and <case>")


def decathlon_missing_file(tiny, tmp, model):
    root = write_decathlon(tiny, tmp / "ds")
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: training[1].label "
                                                "'./labelsTr/case_001.nii.gz': no such file")


def decathlon_path_outside(tiny, tmp, model):
    root = write_decathlon(tiny, tmp / "ds")
    _json_change(root / "dataset.json", lambda spec: spec["training"][0].update(image="../case_000.nii.gz"))
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: training[0].image "
                                                "'../case_000.nii.gz' leaves the dataset folder")


def decathlon_unlisted_image(tiny, tmp, model):
    root = write_decathlon(tiny, tmp / "ds")
    _json_change(root / "dataset.json", lambda spec: spec["training"].pop())
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/imagesTr/case_002.nii.gz: in imagesTr but "
                                                f"not in {root}/dataset.json's 'training' list; list it or move it out")


def decathlon_two_modalities(tiny, tmp, model):
    root = write_decathlon(tiny, tmp / "ds", modality={"0": "T2", "1": "ADC"})
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: 2 image channels (0: T2, "
                                                "1: ADC); the zoo reads single-channel CT only")


def decathlon_labels_by_name(tiny, tmp, model):
    root = write_decathlon(tiny, tmp / "ds", labels={"background": 0, "liver": 1})
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: 'labels' must map '0'..'N-1' "
                                                "to class names (KeyError('0'))")


def nnunet_v1(tiny, tmp, model):
    root = write_decathlon(tiny, tmp / "ds")
    for case in TRAINED:
        (root / "imagesTr" / f"{case}.nii.gz").rename(root / "imagesTr" / f"{case}_0000.nii.gz")
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: training[0].image "
                                                "'./imagesTr/case_000.nii.gz': no such file (nnU-Net v1's layout, with "
                                                "_0000 files? convert it with nnUNetv2_convert_old_nnUNet_dataset)")


def images_tr_without_dataset_json(tiny, tmp, model):
    root = write_decathlon(tiny, tmp / "ds")
    (root / "dataset.json").unlink()
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}: imagesTr/ without a dataset.json, which "
                                                "the Decathlon's and nnU-Net v2's layouts need")


def dataset_json_of_neither(tiny, tmp, model):
    root = write_decathlon(tiny, tmp / "ds")
    _json_change(root / "dataset.json", lambda spec: spec.pop("training"))
    return Ill(["evaluate", model, "--cohort", root], f"zoo evaluate: error: {root}/dataset.json: neither the "
                                                      "Decathlon's (a 'training' list) nor nnU-Net v2's "
                                                      "('channel_names') dataset.json")


def dataset_json_not_json(tiny, tmp, model):
    root = write_decathlon(tiny, tmp / "ds")
    (root / "dataset.json").write_text('{"training": [', encoding="utf-8")
    return Ill(["prepare", root, tmp / "out"], f"zoo prepare: error: {root}/dataset.json: not valid JSON (Expecting "
                                                "value: line 1 column 15 (char 14))")


def decathlon_without_test_list(tiny, tmp, model):
    root = write_decathlon(tiny, tmp / "ds", test=[])
    return Ill(["predict", model, root, tmp / "out"], f"zoo predict: error: {root}/dataset.json: no 'test' list of "
                                                      "images (imagesTs) to predict; give a folder of volumes")


def dicom_series_to_a_folder(tiny, tmp, model):
    (tmp / "series").mkdir()
    (tmp / "series" / "IM0001.dcm").write_bytes(b"\0" * 132)
    return Ill(["predict", model, tmp / "series", tmp / "out"], f"zoo predict: error: {tmp}/series: no volumes found "
                                                                "(.nii.gz, .nii, .mha, .mhd, .nrrd, .nhdr or DICOM "
                                                                "folders); for one DICOM series, name an output file "
                                                                "(e.g. labels.nii.gz)")


ILL_LAYOUTS = [nnunet_two_channels, nnunet_two_channels_to_predict, nnunet_second_channel_file,
               nnunet_image_without_suffix, nnunet_missing_label, nnunet_num_training, nnunet_regions,
               nnunet_ignore_label, nnunet_label_gap, nnunet_png, nnunet_dataset_by_path, decathlon_missing_file,
               decathlon_path_outside, decathlon_unlisted_image, decathlon_two_modalities, decathlon_labels_by_name,
               nnunet_v1, images_tr_without_dataset_json, dataset_json_of_neither, dataset_json_not_json,
               decathlon_without_test_list, dicom_series_to_a_folder]


@pytest.mark.parametrize("make", ILL_LAYOUTS, ids=[f.__name__ for f in ILL_LAYOUTS])
def test_an_ill_layout_is_one_line_and_writes_nothing(make, zoo_here, tiny_cohort, threshold_run, tmp_path):
    ill = make(tiny_cohort, tmp_path, threshold_run)
    before = helpers.checksums(tmp_path), helpers.checksums(threshold_run)
    done = zoo_here(*ill.argv)
    assert done.returncode == 2, done.stdout + done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("zoo ")] == [ill.expected], done.stderr
    assert "Traceback" not in done.stderr
    assert (helpers.checksums(tmp_path), helpers.checksums(threshold_run)) == before
    assert not (tmp_path / "out").exists()
