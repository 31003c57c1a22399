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
