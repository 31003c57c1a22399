"""Tests of common.ct.metrics against SimpleITK and hand-computed cases."""

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from common.ct import metrics
from common.ct.metrics import mean_foreground_dice, segmentation_metrics, summarize

ANISOTROPIC = (0.7, 0.9, 2.5)  # (x, y, z) mm, SimpleITK order
SHAPE = (14, 20, 24)  # (z, y, x)

# (seed, touches_edge): edge cases put surface voxels on the array border,
# where cropping and SimpleITK's contour are most likely to go wrong.
BLOB_CASES = [(0, True), (1, True), (2, False), (3, False), (4, True), (5, False)]


def _blob_pair(seed, touches_edge):
    """Returns two random blob masks of SHAPE, from thresholded smooth noise."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(2):
        noise = ndimage.gaussian_filter(rng.standard_normal(SHAPE), sigma=2.0)
        mask = noise > 0.05
        if touches_edge:
            mask[-2:, 4:9, :3] = True
        else:
            inner = np.zeros_like(mask)
            inner[1:-1, 1:-1, 1:-1] = True
            mask &= inner
        masks.append(mask)
    return masks


def _to_image(mask, spacing):
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def _sitk_surface_distances(a, b, spacing):
    """Pools surface distances both ways with SimpleITK, independently of ours."""
    structure = ndimage.generate_binary_structure(a.ndim, 1)
    contours, maps = [], []
    for mask in (a, b):
        # LabelContour does not treat the array edge as background; the zero
        # pad makes it match erosion with border_value=0.
        padded = np.pad(mask, 1)
        contour = sitk.LabelContour(_to_image(padded, spacing), fullyConnected=False)
        contour_array = sitk.GetArrayFromImage(contour).astype(bool)
        eroded = ndimage.binary_erosion(padded, structure, border_value=0)
        np.testing.assert_array_equal(contour_array, padded & ~eroded)
        contours.append(contour_array)
        maps.append(sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
            contour, squaredDistance=False, useImageSpacing=True,
            insideIsPositive=False)))
    a_to_b = np.abs(maps[1][contours[0]])
    b_to_a = np.abs(maps[0][contours[1]])
    return np.concatenate([a_to_b, b_to_a]).astype(np.float64)


@pytest.mark.parametrize("seed,touches_edge", BLOB_CASES)
def test_hd_matches_simpleitk_hausdorff(seed, touches_edge):
    a, b = _blob_pair(seed, touches_edge)
    hd_filter = sitk.HausdorffDistanceImageFilter()
    hd_filter.Execute(_to_image(a, ANISOTROPIC), _to_image(b, ANISOTROPIC))
    ours = segmentation_metrics(a.astype(np.uint8), b.astype(np.uint8), ANISOTROPIC)
    assert abs(ours[1]["hd"] - hd_filter.GetHausdorffDistance()) <= 1e-6


@pytest.mark.parametrize("seed,touches_edge", BLOB_CASES)
def test_hd95_and_assd_match_simpleitk_surfaces(seed, touches_edge):
    a, b = _blob_pair(seed, touches_edge)
    pooled = _sitk_surface_distances(a, b, ANISOTROPIC)
    ours = segmentation_metrics(a.astype(np.uint8), b.astype(np.uint8), ANISOTROPIC)
    # SignedMaurerDistanceMap outputs float32 only, whose step is ~1e-6 mm at
    # 8-16 mm: hd95 (one or two such values) differed by up to 1.1e-6 mm over
    # 80 random pairs, while the mean over thousands averages the rounding.
    assert abs(ours[1]["hd95"] - np.percentile(pooled, 95)) <= 2e-6
    assert abs(ours[1]["assd"] - pooled.mean()) <= 1e-6


def test_overlap_metrics_of_two_boxes():
    ref = np.zeros((3, 5, 9), np.uint8)
    pred = np.zeros_like(ref)
    ref[0:2, 0:4, 0:4] = 1  # 32 voxels
    pred[0:2, 0:4, 2:8] = 1  # 48 voxels, 16 shared with ref
    m = segmentation_metrics(pred, ref)[1]
    assert m["dice"] == pytest.approx(2 * 16 / (32 + 48))
    assert m["iou"] == pytest.approx(16 / 64)
    assert m["voe"] == pytest.approx(1 - 16 / 64)
    assert m["precision"] == pytest.approx(16 / 48)
    assert m["recall"] == pytest.approx(16 / 32)


@pytest.mark.parametrize(
    "pred_index,ref_index,spacing,expected_mm",
    [
        # (z, y, x) indices against (x, y, z) spacing: checks the axis order.
        ((0, 0, 0), (2, 0, 0), (1.0, 1.0, 3.0), 6.0),
        ((0, 0, 0), (0, 0, 2), (3.0, 1.0, 1.0), 6.0),
        ((0, 1, 0), (0, 0, 0), (1.0, 0.5, 4.0), 0.5),
        ((0, 0), (0, 3), (0.5, 2.0), 1.5),
        ((0, 0), (3, 4), (1.0, 2.0), math.hypot(3 * 2.0, 4 * 1.0)),
    ],
)
def test_single_voxel_distances_follow_spacing_order(
    pred_index, ref_index, spacing, expected_mm
):
    shape = (4, 5) if len(pred_index) == 2 else (3, 3, 3)
    pred, ref = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    pred[pred_index], ref[ref_index] = 2, 2
    m = segmentation_metrics(pred, ref, spacing)[2]
    for name in ("hd", "hd95", "assd"):
        assert m[name] == pytest.approx(expected_mm, abs=1e-12)


def test_hd95_and_assd_ignore_one_outlier_that_sets_hd():
    ref = np.zeros((1, 25), np.uint8)
    ref[0, :20] = 1
    pred = ref.copy()
    pred[0, 24] = 1  # one stray voxel 5 voxels (10 mm) from the reference
    m = segmentation_metrics(pred, ref, spacing=(2.0, 1.0))[1]
    # 41 pooled surface distances: 40 zeros and one 10 mm.
    assert m["hd"] == pytest.approx(10.0)
    assert m["hd95"] == pytest.approx(0.0)
    assert m["assd"] == pytest.approx(10.0 / 41)


def test_default_labels_are_nonzero_labels_of_either_array():
    pred = np.array([[0, 1, 3], [0, 0, 0]])
    ref = np.array([[0, 1, 2], [0, 0, 0]])
    assert list(segmentation_metrics(pred, ref, (1.0, 1.0))) == [1, 2, 3]
    assert list(segmentation_metrics(pred, ref, (1.0, 1.0), labels=[3])) == [3]


def test_both_masks_empty_count_as_perfect():
    empty = np.zeros((2, 4, 4), np.uint8)
    assert segmentation_metrics(empty, empty) == {}
    m = segmentation_metrics(empty, empty, labels=[1])[1]
    assert m == {"dice": 1.0, "iou": 1.0, "voe": 0.0, "precision": 1.0,
                 "recall": 1.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0, "assd_lits": 0.0}


@pytest.mark.parametrize("empty_side", ["pred", "ref"])
def test_one_empty_mask_scores_zero_with_undefined_distances(empty_side):
    full = np.zeros((2, 4, 4), np.uint8)
    full[1, 1:3, 1:3] = 1
    empty = np.zeros_like(full)
    pred, ref = (empty, full) if empty_side == "pred" else (full, empty)
    m = segmentation_metrics(pred, ref)[1]
    assert (m["dice"], m["iou"], m["voe"]) == (0.0, 0.0, 1.0)
    assert (m["precision"], m["recall"]) == (0.0, 0.0)
    assert all(math.isnan(m[name]) for name in ("hd", "hd95", "assd", "assd_lits"))


def test_mismatched_shapes_raise_with_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(2, 3, 5\)"):
        segmentation_metrics(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))


@pytest.mark.parametrize(
    "shape,spacing",
    [((2, 3, 4), (1.0, 1.0)), ((3, 4), (1.0, 1.0, 1.0)), ((2, 3, 4), (1.0, 0.0, 1.0)),
     ((2, 3, 4), (1.0, -1.0, 1.0))],
)
def test_bad_spacing_raises(shape, spacing):
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(np.zeros(shape), np.zeros(shape), spacing)


def test_summarize_uses_nan_aware_mean_std_and_counts():
    nan = float("nan")
    case_1 = {1: {"dice": 0.5, "hd": 4.0}, 2: {"dice": 0.2, "hd": 1.0}}
    case_2 = {1: {"dice": 1.0, "hd": nan}}
    summary = summarize([case_1, case_2])
    assert summary[1]["dice"] == pytest.approx({"mean": 0.75, "std": np.std([0.5, 1.0], ddof=1), "n": 2})
    assert (summary[1]["hd"]["mean"], summary[1]["hd"]["n"]) == (4.0, 1) and math.isnan(summary[1]["hd"]["std"])
    assert (summary[2]["dice"]["mean"], summary[2]["dice"]["n"]) == (0.2, 1)  # one value: no sample std
    only_nan = summarize([case_2])[1]["hd"]
    assert only_nan["n"] == 0 and math.isnan(only_nan["mean"])


def test_mean_foreground_dice_averages_labels():
    assert mean_foreground_dice({1: {"dice": 0.5}, 2: {"dice": 1.0}}) == 0.75
    assert math.isnan(mean_foreground_dice({}))


def test_distractor_errors_count_look_alikes_given_their_organ():
    distractors = np.zeros((2, 4, 4), np.uint8)
    distractors[0, :2, :2] = 2  # 4 spleen look-alike voxels
    distractors[1, 0, :] = 4  # 4 kidney look-alike voxels
    pred = np.zeros_like(distractors)
    pred[0, 0, :2] = 2  # 2 of the spleen's taken for spleen
    pred[0, 1, 0] = 3  # one taken for another organ: not this error
    pred[1, 0, 0] = 4
    errors = metrics.distractor_errors(pred, distractors, [1, 2, 4])
    assert errors[2] == 0.5 and errors[4] == 0.25 and np.isnan(errors[1])  # no liver look-alike here
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 4\)"):
        metrics.distractor_errors(pred, distractors[:, 0], [2])


def _directed(src_surface, dst_surface, spacing):
    """Each surface voxel of one mask to the nearest of the other, in mm, by brute force (no distance transform)."""
    src = np.argwhere(src_surface) * spacing
    dst = np.argwhere(dst_surface) * spacing
    return np.sqrt(((src[:, None, :] - dst[None, :, :]) ** 2).sum(-1)).min(axis=1)


def test_pooled_and_lits_assd_differ_where_the_surfaces_differ_in_size_and_each_follows_its_rule():
    """A 3x3 square against a 7x11 rectangle: 8 against 32 surface pixels, so the two rules part."""
    pred = np.zeros((16, 16), np.uint8)
    pred[2:5, 2:5] = 1
    ref = np.zeros_like(pred)
    ref[2:9, 2:13] = 1
    spacing = np.array([0.7, 1.3])  # numpy axis order (y, x); SimpleITK's (x, y) below
    surface = [m.astype(bool) & ~ndimage.binary_erosion(m, border_value=0) for m in (pred, ref)]
    a_to_b, b_to_a = _directed(surface[0], surface[1], spacing), _directed(surface[1], surface[0], spacing)
    pooled = np.concatenate([a_to_b, b_to_a]).mean()  # MONAI's symmetric ASD
    lits = (a_to_b.mean() + b_to_a.mean()) / 2  # medpy 0.4, the LiTS evaluation
    m = segmentation_metrics(pred, ref, spacing=(1.3, 0.7))[1]
    assert m["assd"] == pytest.approx(pooled) and m["assd_lits"] == pytest.approx(lits)
    assert abs(m["assd"] - m["assd_lits"]) > 0.3, (m["assd"], m["assd_lits"])
