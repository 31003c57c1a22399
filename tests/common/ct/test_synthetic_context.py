"""Tests of the context cohort: organ look-alikes, the paired HU cue, the low-contrast pancreas, files, CLI."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from common import cli
from common.ct import synthetic, synthetic_context, volumes
from common.ct.synthetic import CLASS_NAMES, make_phantom
from common.ct.synthetic_context import make_context_phantom, write_context_cohort

SIZE, SPACING = (96, 96, 8), (3.6, 3.6, 8.0)  # the whole body in under a fifth of the default voxels
SEEDS = (0, 1, 2, 3)
LABEL = {name: index for index, name in enumerate(CLASS_NAMES)}
KIDNEYS = {LABEL["kidney_right"], LABEL["kidney_left"]}
IN_PLANE = np.ones((1, 3, 3), bool)  # erode and dilate within a slice: slices are 8 mm apart
PANCREAS_CONTRAST_HU = 15.0  # the most the pancreas may differ from the tissue around it
CUE_HU = 60.0


def arrays(*images):
    return tuple(sitk.GetArrayFromImage(image) for image in images)


def centroid_mm(mask):
    """(x, y, z) in mm of a canonical (z, y, x) mask: +x patient left, +y posterior."""
    zyx = np.argwhere(mask).mean(axis=0)
    return tuple((zyx[::-1] - (np.array(SIZE) - 1) / 2) * SPACING)


def interior(mask):
    return ndimage.binary_erosion(mask, IN_PLANE)


@pytest.fixture(scope="module")
def cases():
    """seed -> (hu, label, distractor map) at the default noise and cue_hu=0."""
    return {seed: arrays(*make_context_phantom(seed, SIZE, SPACING)) for seed in SEEDS}


@pytest.fixture
def flat_field(monkeypatch):
    """No scanner inhomogeneity, so a tissue's HU does not depend on where it lies."""
    monkeypatch.setattr(synthetic_context, "_INHOMOGENEITY_HU", 0.0)


def test_deterministic_and_seed_dependent(cases):
    again = arrays(*make_context_phantom(0, SIZE, SPACING))
    assert all(np.array_equal(a, b) for a, b in zip(cases[0], again))
    assert not np.array_equal(cases[0][0], cases[1][0]) and not np.array_equal(cases[0][2], cases[1][2])


@pytest.mark.parametrize("seed", SEEDS)
def test_labels_and_layout_are_the_plain_phantoms(cases, seed):
    hu, label, _ = cases[seed]
    plain_hu, plain_label = arrays(*make_phantom(seed, SIZE, SPACING))
    assert set(np.unique(label).tolist()) == set(range(len(CLASS_NAMES)))
    assert np.array_equal(label, plain_label)  # same anatomy, same labels: distractors are background
    assert not np.array_equal(hu, plain_hu)


@pytest.mark.parametrize("seed", SEEDS)
def test_distractors_are_background_where_their_organ_never_is(cases, seed):
    _, label, decoys = cases[seed]
    kinds = set(np.unique(decoys).tolist()) - {0}
    assert LABEL["spleen"] in kinds and len(kinds & KIDNEYS) == 1 and len(kinds) == 2
    assert not label[decoys > 0].any()
    gap = ndimage.distance_transform_edt(label == 0, sampling=SPACING[::-1])[decoys > 0]
    assert gap.min() > SPACING[0]  # loose tissue between every distractor and every organ
    kidney_y = centroid_mm(np.isin(label, list(KIDNEYS)))[1]
    _, spleen_y, _ = centroid_mm(label == LABEL["spleen"])
    for value in kinds:
        x, y, _ = centroid_mm(decoys == value)
        if value == LABEL["spleen"]:
            assert y < spleen_y - 30 or x < 0  # in front of the spleen, or on the right
        else:
            assert y < kidney_y - 30  # in front of the kidneys


@pytest.mark.parametrize("seed", SEEDS)
def test_look_alikes_have_their_organs_hu(flat_field, seed):
    _, label, decoys = arrays(*make_context_phantom(seed, SIZE, SPACING))
    clean, _, _ = arrays(*make_context_phantom(seed, SIZE, SPACING, noise_hu=0.0))
    spleen, fake_spleen = interior(label == LABEL["spleen"]), interior(decoys == LABEL["spleen"])
    assert abs(np.median(clean[fake_spleen]) - np.median(clean[spleen])) < 0.5
    side = (set(np.unique(decoys).tolist()) & KIDNEYS).pop()
    kidney, fake_kidney = label == side, decoys == side
    # Blur leaves the inner voxels at their tissue's HU: the cortex is the brightest, the medulla the darkest.
    assert abs(clean[fake_kidney].max() - clean[kidney].max()) < 0.5
    assert abs(clean[interior(fake_kidney)].min() - clean[interior(kidney)].min()) < 0.5


def test_look_alikes_have_their_organs_noise(flat_field):
    differences, weights, real_residuals, fake_residuals = [], [], [], []
    for seed in range(8):  # a spleen look-alike has ~30 inner voxels here: pool cases, each against its own spleen
        hu, label, decoys = arrays(*make_context_phantom(seed, SIZE, SPACING))
        real, fake = hu[interior(label == LABEL["spleen"])], hu[interior(decoys == LABEL["spleen"])]
        differences.append(fake.mean() - real.mean())
        weights.append(fake.size)
        real_residuals.append(real - real.mean())
        fake_residuals.append(fake - fake.mean())
    noise = np.concatenate(real_residuals).std()
    assert abs(np.average(differences, weights=weights)) < 3 * noise / np.sqrt(sum(weights)) < 5.0
    assert 0.85 < np.concatenate(fake_residuals).std() / noise < 1.15  # the same noise texture


@pytest.mark.parametrize("cue_hu", [CUE_HU, -CUE_HU])
def test_cue_shifts_the_distractors_and_nothing_else(cases, cue_hu):
    hu, label, decoys = cases[1]
    cued_hu, cued_label, cued_decoys = arrays(*make_context_phantom(1, SIZE, SPACING, cue_hu=cue_hu))
    assert np.array_equal(cued_label, label) and np.array_equal(cued_decoys, decoys)
    shift = cued_hu - hu
    assert np.allclose(shift[interior(decoys > 0)], cue_hu, atol=1.0)
    far = ~ndimage.binary_dilation(decoys > 0, iterations=3)  # beyond the partial-volume blur
    assert np.allclose(shift[far], 0.0, atol=1e-3)


@pytest.mark.parametrize("seed", SEEDS)
def test_pancreas_hardly_differs_from_its_surroundings(cases, seed):
    def contrast(hu, label):
        pancreas = label == LABEL["pancreas"]
        around = ndimage.binary_dilation(pancreas, IN_PLANE) & (label == 0)
        return abs(np.median(hu[interior(pancreas)]) - np.median(hu[around]))

    hu, label, _ = cases[seed]
    assert contrast(hu, label) < PANCREAS_CONTRAST_HU
    assert contrast(*arrays(*make_phantom(seed, SIZE, SPACING))) > 5 * PANCREAS_CONTRAST_HU  # the plain one


ILL_CASES = [
    (dict(distractors=3), "distractors"), (dict(distractors=-1), "distractors"),
    (dict(distractors=1.0), "distractors"), (dict(distractors=True), "distractors"),
    (dict(cue_hu=float("nan")), "cue_hu"), (dict(cue_hu="60"), "cue_hu"), (dict(cue_hu=True), "cue_hu"),
    (dict(num_cases=0), "num_cases"), (dict(size=(64, 64)), "size"), (dict(seed=-1), "seed"),
]


@pytest.mark.parametrize("kwargs, name", ILL_CASES)
def test_bad_arguments_name_themselves(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        write_context_cohort(tmp_path / "cohort", **{"size": (64, 64, 6), **kwargs})
    assert not (tmp_path / "cohort").exists()


def test_a_volume_too_small_for_the_distractors_names_them():
    with pytest.raises(ValueError, match="^distractors: only 0 of 2 fit"):
        make_context_phantom(0, (16, 16, 2), (4.0, 4.0, 4.0))
    make_context_phantom(0, (16, 16, 2), (4.0, 4.0, 4.0), distractors=0)


def test_cli_writes_paired_cohorts_that_read_back(tmp_path):
    common = ["--num-cases", "2", "--shape", "64,64,6", "--voxel-size", "5.4,5.4,10", "--seed", "3", "--layout",
              "context"]
    plain, cued = tmp_path / "plain", tmp_path / "cued"
    assert cli.main(["synthetic-ct", str(plain), *common]) == 0
    assert cli.main(["synthetic-ct", str(cued), *common, "--cue-hu", str(CUE_HU)]) == 0
    assert [c.case_id for c in volumes.find_cases(cued)] == ["case_000", "case_001"]  # as zoo prepare lists them
    dataset = json.loads((cued / "dataset.json").read_text(encoding="utf-8"))
    assert [dataset["labels"][str(i)] for i in range(len(CLASS_NAMES))] == list(CLASS_NAMES)
    assert dataset["cue_hu"] == CUE_HU and dataset["distractors"] == 2
    for index, case in enumerate(("case_000", "case_001")):
        read = {(root.name, sub): sitk.ReadImage(str(root / sub / f"{case}.nii.gz"))
                for root in (plain, cued) for sub in ("images", "labels", "distractors")}
        assert np.allclose(read["cued", "images"].GetDirection(), (1, 0, 0, 0, 1, 0, 0, 0, 1) if index == 0
                           else (-1, 0, 0, 0, -1, 0, 0, 0, 1))  # odd cases stored RAS-like, as write_cohort
        plain_hu, label, decoys, cued_hu, cued_label, cued_decoys = arrays(*read.values())
        assert np.array_equal(label, cued_label) and np.array_equal(decoys, cued_decoys)
        assert set(np.unique(label).tolist()) <= set(range(len(CLASS_NAMES))) and not label[decoys > 0].any()
        assert np.allclose((cued_hu - plain_hu)[interior(decoys > 0)], CUE_HU, atol=1.0)
        case_seed, spacing = synthetic._case_plan(3, index, (5.4, 5.4, 10.0))
        expected = make_context_phantom(case_seed, (64, 64, 6), spacing, cue_hu=CUE_HU)[0]
        oriented = sitk.DICOMOrient(read["cued", "images"], "LPS")
        assert np.array_equal(sitk.GetArrayFromImage(oriented), sitk.GetArrayFromImage(expected))


@pytest.mark.parametrize("flags, layout, name", [
    (["--cue-hu", "60"], "msd", "--cue-hu"), (["--distractors", "1"], "lits", "--distractors"),
])
def test_cli_refuses_context_options_for_other_layouts(tmp_path, capsys, flags, layout, name):
    out = tmp_path / "cohort"
    assert cli.main(["synthetic-ct", str(out), "--layout", layout, "--shape", "32,32,4", *flags]) == 2
    assert f"{name} applies to --layout context only, not --layout {layout}" in capsys.readouterr().err
    assert not out.exists()


def test_cli_bad_distractor_count_is_one_line(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert cli.main(["synthetic-ct", str(out), "--layout", "context", "--distractors", "5"]) == 2
    assert "distractors must be an integer in [0, 2], got 5" in capsys.readouterr().err
    assert not out.exists()
