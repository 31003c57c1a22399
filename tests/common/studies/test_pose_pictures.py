"""``zoo pose-pictures``: skeleton, heatmaps and masks as PNG."""

import json

import cv2
import numpy as np
import pytest

from common import cli


def test_pose_pictures(pose_data, pose_run, tmp_path, capsys):
    out, _ = pose_run
    assert cli.main(["pose-pictures", str(out), str(pose_data), str(tmp_path), "--mask-contrast"]) == 0
    assert "mask_1: mask" in capsys.readouterr().out
    contrast = json.loads((tmp_path / "mask_contrast.json").read_text(encoding="utf-8"))
    assert contrast[0]["stage"] == "mask_1" and 0 <= contrast[0]["auc"] <= 1 and contrast[0]["records"] > 0
    skeleton, heatmaps, masks = (cv2.imread(str(tmp_path / f"{n}.png")) for n in ("skeleton", "heatmaps", "masks"))
    assert skeleton.shape == (96, 96, 3)
    assert heatmaps.shape == (128, 4 * 32 + 64, 3)  # a 4 x 4 grid of half-size tiles, the crop on the right
    assert masks.shape == (64, 2 * 64, 3)  # the crop, then stage 1's mask over it
    assert np.all(masks[:, 64:].astype(int) <= masks[:, :64].astype(int) + 1)  # masks only darken


def test_pckh_curve_figure_draws_each_curve_where_its_values_are():
    from common.studies import pose_pictures

    thresholds = [round(0.01 * i, 2) for i in range(51)]
    flat = [50.0] * 51
    rising = [float("nan")] + [2.0 * 100 * t for t in thresholds[1:]]  # NaN: no annotated joint, left out
    image = pose_pictures.pckh_curve_figure({"flat": (thresholds, flat), "rising": (thresholds, rising)})
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8
    blue, orange = pose_pictures.CURVE_COLOURS[:2]
    middle_row = 30 + (430 - 30) // 2  # 50 % between the plot's top (100 %) and bottom (0 %)
    assert np.all(image[middle_row, 200:600] == blue, axis=-1).mean() > 0.5  # the flat curve at 50 %
    ys, xs = np.nonzero(np.all(image == orange, axis=-1)[:, 120:])  # the rising one, right of the legend's column
    assert len(xs) and np.corrcoef(xs, ys)[0, 1] < -0.9  # up and to the right


class _MaskModel:
    """Stands in for an ACNN: one prediction and one mask output, the mask given per call."""

    output_names = ["prediction_1", "mask_1"]

    def __init__(self, masks):
        self.masks = iter(masks)

    def __call__(self, crop, training=False):
        return [np.zeros((1, 16, 16, 16), np.float32), next(self.masks)[None, ..., None]]


def test_mask_contrast_is_one_for_a_mask_of_the_figure_and_half_for_a_flat_one(pose_data):
    from common.pose import data as pose_data_module
    from common.studies import pose_pictures

    records = pose_data_module.load_split(pose_data, "train")[:3]
    regions = [pose_pictures.figure_region(r, 16).astype(np.float32) for r in records]
    exact = pose_pictures.mask_contrast(_MaskModel(regions), records, 64)[0]
    assert (exact["auc"], exact["figure"], exact["background"], exact["records"]) == (1.0, 1.0, 0.0, 3)
    flat = pose_pictures.mask_contrast(_MaskModel([np.full((16, 16), 0.9, np.float32)] * 3), records, 64)[0]
    assert flat["auc"] == 0.5 and flat["figure"] == pytest.approx(0.9) and flat["background"] == pytest.approx(0.9)
    inverted = pose_pictures.mask_contrast(_MaskModel([1 - r for r in regions]), records, 64)[0]
    assert inverted["auc"] == 0.0
