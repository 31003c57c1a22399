import json
import logging
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from common import errors
from common.ct import shards, volumes
from tests import helpers


def test_one_shard_per_case_and_manifest(tiny_cohort, tiny_prepared):
    manifest = shards.load_manifest(tiny_prepared)
    cases = volumes.find_cases(tiny_cohort)
    assert [c["id"] for c in manifest["cases"]] == [c.case_id for c in cases]
    # One generation folder holds every shard, and nothing else is there.
    generation = tiny_prepared / pathlib.Path(manifest["cases"][0]["shard"]).relative_to(tiny_prepared).parent
    assert [p.name for p in (tiny_prepared / "shards").iterdir()] == [generation.name]
    assert sorted(p.name for p in generation.iterdir()) == [f"{c.case_id}.tfrecord" for c in cases]
    assert manifest["num_classes"] == 8 and manifest["class_names"][1] == "liver"
    assert manifest["orientation"] == "LPS"
    assert not list(tiny_prepared.rglob(".*tmp*"))


def test_shard_round_trip_equals_canonical_arrays(tiny_cohort, tiny_prepared):
    manifest = shards.load_manifest(tiny_prepared)
    case = volumes.find_cases(tiny_cohort)[1]  # stored RAS-like: exercises the reorientation
    arrays = volumes.load_case(case, 8, manifest["hu_window"])
    decoded = [shards.parse_example(r) for r in tf.data.TFRecordDataset(manifest["cases"][1]["shard"])]
    assert len(decoded) == arrays.image.shape[0] == manifest["cases"][1]["slices"]
    for z, (image, label) in enumerate(decoded):
        np.testing.assert_array_equal(image.numpy()[..., 0], arrays.image[z])
        np.testing.assert_array_equal(label.numpy(), arrays.label[z])


def test_min_label_fraction_drops_slices(tiny_cohort, tmp_path):
    manifest = shards.prepare(tiny_cohort, tmp_path, min_label_fraction=0.05)
    case = volumes.find_cases(tiny_cohort)[0]
    label = volumes.load_case(case, 8).label
    expected = int(((label > 0).reshape(len(label), -1).mean(1) >= 0.05).sum())
    assert manifest["cases"][0]["slices"] == expected < label.shape[0]


def test_num_classes_required_without_dataset_json(tiny_cohort, tmp_path):
    cohort = tmp_path / "c"
    (cohort / "images").mkdir(parents=True)
    (cohort / "labels").mkdir()
    for sub in ("images", "labels"):
        src = tiny_cohort / sub / "case_000.nii.gz"
        (cohort / sub / src.name).write_bytes(src.read_bytes())
    with pytest.raises(ValueError, match="num_classes"):
        shards.prepare(cohort, tmp_path / "p")
    with pytest.raises(errors.DataError, match="case_000.nii.gz: label values .* outside the 3 classes"):
        shards.prepare(cohort, tmp_path / "p", num_classes=3)
    manifest = shards.prepare(cohort, tmp_path / "p", num_classes=8)
    assert manifest["class_names"][:2] == ["background", "class_1"]
    assert json.loads((tmp_path / "p" / "dataset.json").read_text(encoding="utf-8"))["num_classes"] == 8


def _slices_of(shard) -> list[int]:
    return [int(tf.train.Example.FromString(record.numpy()).features.feature["slice"].int64_list.value[0])
            for record in tf.data.TFRecordDataset(str(shard))]


def test_lits_preset_keeps_exactly_the_slices_with_enough_liver(tmp_path):
    # 100 x 100 slices: 1.5 % is 150 pixels. Tumour (2) counts as liver.
    liver_pixels = [0, 149, 150, 151, 100, 3000]
    label = np.zeros((len(liver_pixels), 100, 100), np.uint8)
    for z, count in enumerate(liver_pixels):
        label[z].flat[:count] = 1
    label[4].flat[100:150] = 2  # 100 liver + 50 tumour = 150
    label[5].flat[:40] = 2
    helpers.lits_pair(tmp_path / "lits", 0, label)
    manifest = shards.prepare(tmp_path / "lits", tmp_path / "prepared", **shards.PRESETS["lits"])
    assert _slices_of(tmp_path / "prepared" / manifest["cases"][0]["shard"]) == [2, 3, 4, 5]
    assert manifest["class_names"] == ["background", "liver"] and manifest["label_map"] == {"2": 1}
    assert manifest["hu_window"] == [-200.0, 250.0] and manifest["min_label_fraction"] == 0.015
    arrays = volumes.load_case(volumes.find_cases(tmp_path / "lits")[0], 2, label_map={2: 1})
    assert set(np.unique(arrays.label)) == {0, 1}
    assert arrays.image.min() == 0.0 and arrays.image.max() == 1.0  # -300..300 HU clipped to [-200, 250]


def test_tumour_preset_keeps_three_classes(tmp_path):
    label = np.zeros((1, 20, 20), np.uint8)
    label[0, :5] = 1
    label[0, 5:7] = 2
    helpers.lits_pair(tmp_path / "lits", 4, label)
    manifest = shards.prepare(tmp_path / "lits", tmp_path / "prepared", **shards.PRESETS["lits_tumour"])
    assert manifest["num_classes"] == 3 and manifest["label_map"] is None
    arrays = volumes.load_case(volumes.find_cases(tmp_path / "lits")[0], 3)
    assert np.bincount(arrays.label.ravel()).tolist() == [260, 100, 40]


def test_a_rerun_replaces_a_folder_of_the_old_layout_whole(tiny_cohort, tiny_prepared, tmp_path, caplog):
    """A folder prepared before generations (shards/<case>.tfrecord) is replaced, its shards removed and counted."""
    old = tmp_path / "prepared"
    (old / "shards").mkdir(parents=True)
    manifest = json.loads((tiny_prepared / shards.MANIFEST).read_text(encoding="utf-8"))
    for case in manifest["cases"]:
        (old / "shards" / f"{case['id']}.tfrecord").write_bytes((tiny_prepared / case["shard"]).read_bytes())
        case["shard"] = f"shards/{case['id']}.tfrecord"
    (old / shards.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    (old / "notes.txt").write_text("mine")  # what a user keeps beside it stays
    caplog.set_level(logging.INFO, logger="common")
    fresh = shards.prepare(tiny_cohort, old)
    assert caplog.messages[-1] == "removed 4 shards of the replaced manifest and 0 folders of interrupted runs"
    assert sorted(str(p.relative_to(old)) for p in old.rglob("*") if p.is_file()) == sorted(
        [shards.MANIFEST, "notes.txt"] + [case["shard"] for case in fresh["cases"]])


def test_a_manifest_not_written_leaves_the_folder_as_it_was(tiny_cohort, tiny_prepared, tmp_path, monkeypatch):
    """The manifest is the switch: when it fails, the generation written before it goes too."""
    from common import atomic

    prepared = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, prepared)
    before = helpers.checksums(prepared)

    def full_disk(path, payload):
        raise atomic.WriteError(f"{path}: not written: no space left on device; the previous file is untouched")

    monkeypatch.setattr(shards.atomic, "write_json", full_disk)
    with pytest.raises(atomic.WriteError, match="dataset.json: not written: no space left on device"):
        shards.prepare(tiny_cohort, prepared, hu_window=(-200, 250))
    assert helpers.checksums(prepared) == before
    assert [p.name for p in (prepared / "shards").iterdir()] == [p.name for p in (tiny_prepared / "shards").iterdir()]


def _decoded(shard) -> tuple[np.ndarray, np.ndarray]:
    """A shard's (z, y, x) image and label, as training reads them (``parse_example``)."""
    slices = [shards.parse_example(record) for record in tf.data.TFRecordDataset(str(shard))]
    return np.stack([i.numpy()[..., 0] for i, _ in slices]), np.stack([lab.numpy() for _, lab in slices])


def test_each_case_records_the_sha256_of_the_voxels_training_reads(tiny_cohort, tiny_prepared, tmp_path):
    """Hashed while written, it is the digest of what the shard decodes to, and one altered voxel changes it."""
    import SimpleITK as sitk

    manifest = shards.load_manifest(tiny_prepared)
    for case in manifest["cases"]:
        assert case["sha256"] == shards.voxel_sha256(*_decoded(case["shard"]))
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort)
    path = cohort / "images" / "case_001.nii.gz"
    image = sitk.ReadImage(str(path))
    voxels = sitk.GetArrayFromImage(image)
    inside = np.flatnonzero((voxels > volumes.DEFAULT_WINDOW[0]) & (voxels < volumes.DEFAULT_WINDOW[1] - 1))[0]
    voxels.flat[inside] += 1  # 1 HU of one voxel, inside the window: the windowed value moves too
    altered = sitk.GetImageFromArray(voxels)
    altered.CopyInformation(image)
    sitk.WriteImage(altered, str(path))
    again = shards.prepare(cohort, tmp_path / "prepared")
    digests = {case["id"]: case["sha256"] for case in manifest["cases"]}
    assert {case["id"]: case["sha256"] == digests[case["id"]] for case in again["cases"]} == {
        "case_000": True, "case_001": False, "case_002": True, "case_003": True}
    assert shards.cohort_sha256(again) != shards.cohort_sha256(manifest)


def test_the_voxel_digest_holds_dtype_and_shape_and_the_cohorts_holds_every_case():
    image, label = np.linspace(0, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4), np.zeros((2, 3, 4), np.uint8)
    digest = shards.voxel_sha256(image, label)
    assert digest == shards.voxel_sha256(image.copy(), label.copy()) and len(digest) == 64
    # The same bytes read otherwise: a transposed slice shape, another dtype.
    assert shards.voxel_sha256(image.reshape(2, 4, 3), label.reshape(2, 4, 3)) != digest
    assert shards.voxel_sha256(image.view(np.int32), label) != digest
    assert shards.voxel_sha256(image, label + 1) != digest
    with pytest.raises(ValueError, match=r"image \(2, 3, 4\) and label \(2, 4, 3\)"):
        shards.voxel_sha256(image, label.reshape(2, 4, 3))
    cases = [{"id": "b", "sha256": "1" * 64}, {"id": "a", "sha256": "2" * 64}]
    cohort = shards.cohort_sha256({"cases": cases})
    assert cohort == shards.cohort_sha256({"cases": cases[::-1]})  # sorted by case: the manifest's order is not data
    assert cohort != shards.cohort_sha256({"cases": [cases[0], {"id": "a", "sha256": "3" * 64}]})
    assert cohort != shards.cohort_sha256({"cases": cases[:1]})
    # A folder prepared before digests: nothing to check, never an error.
    assert shards.cohort_sha256({"cases": [cases[0], {"id": "a"}]}) is None
