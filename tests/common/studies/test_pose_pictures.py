"""``zoo pose-pictures``: skeleton, heatmaps and masks as PNG."""

import cv2
import numpy as np

from common import cli


def test_pose_pictures(pose_data, pose_run, tmp_path, capsys):
    out, _ = pose_run
    assert cli.main(["pose-pictures", str(out), str(pose_data), str(tmp_path)]) == 0
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
