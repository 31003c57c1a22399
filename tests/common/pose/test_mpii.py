"""``common.pose.mpii.pckh`` on a constructed case whose answers are computed by hand."""

import numpy as np
import pytest

from common.pose import mpii


def _case():
    """Two people; head boxes of diagonal 50 and 20, so head sizes 30 and 12 and thresholds 15 and 6 px."""
    gt = np.full((2, 16, 2), 100.0)
    pred = gt.copy()
    visible = np.ones((2, 16), bool)
    boxes = np.array([[[0, 0], [30, 40]], [[10, 10], [22, 26]]], float)
    # Person 0 (15 px): r_ankle at exactly 15 (correct, <=), l_ankle at 15.01, head top at 20,
    # r_shoulder at (9, 12) = 15 (correct), l_shoulder not annotated, r_wrist at 16, pelvis at 100.
    pred[0, 0] += (15, 0)
    pred[0, 5] += (0, 15.01)
    pred[0, 9] += (20, 0)
    pred[0, 12] += (9, 12)
    visible[0, 13] = False
    pred[0, 13] += (500, 500)  # ignored: not annotated
    pred[0, 10] += (16, 0)
    pred[0, 6] += (100, 0)
    # Person 1 (6 px): r_ankle at exactly 6, upper neck at 7, r_shoulder not annotated,
    # l_shoulder at 6, thorax at 100.
    pred[1, 0] += (0, 6)
    pred[1, 8] += (7, 0)
    visible[1, 12] = False
    pred[1, 13] += (6, 0)
    pred[1, 7] += (0, 100)
    return pred, gt, visible, boxes


def test_pckh_matches_the_hand_computed_table():
    result = mpii.pckh(*_case())
    expected_joints = {"r_ankle": 100, "l_ankle": 50, "upper_neck": 50, "head_top": 50, "r_shoulder": 100,
                       "l_shoulder": 100, "r_wrist": 50, "l_wrist": 100, "pelvis": 50, "thorax": 50}
    for name, value in expected_joints.items():
        assert result[name] == value, name
    for name in ("r_knee", "r_hip", "l_hip", "l_knee", "r_elbow", "l_elbow"):
        assert result[name] == 100, name
    expected_columns = {"Head": 50, "Sho.": 100, "Elb.": 100, "Wri.": 75, "Hip": 100, "Kne.": 100, "Ank.": 75}
    assert {k: result[k] for k in expected_columns} == expected_columns
    # Total pools the 14 joints' 26 annotated instances (4 misses), not the columns' mean (85.71).
    assert result["Total"] == 100 * 22 / 26
    print({k: round(v, 3) for k, v in result.items()})


def test_threshold_and_missing_joints():
    pred, gt, visible, boxes = _case()
    assert mpii.pckh(pred, gt, visible, boxes, threshold=1.0)["Total"] == 100.0  # every miss is within 2x
    visible[:, 4] = False
    result = mpii.pckh(pred, gt, visible, boxes)
    assert np.isnan(result["l_knee"]) and np.isnan(result["Kne."])
    assert result["Total"] == 100 * 20 / 24


@pytest.mark.parametrize("change, message", [
    (lambda a: (a[0][:, :15], *a[1:]), "pred"),
    (lambda a: (*a[:2], a[2][:1], a[3]), "visible"),
    (lambda a: (*a[:3], a[3][:, 0]), "head_boxes"),
    (lambda a: (*a[:3], np.zeros((2, 2, 2))), "zero size"),
])
def test_bad_shapes_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        mpii.pckh(*change(_case()))
