"""The MPII facts in one place: joint order, left/right pairs, limbs, and PCKh as the official toolkit.

Joint order (HRNet / mmpose annotation files): 0 r-ankle, 1 r-knee, 2 r-hip,
3 l-hip, 4 l-knee, 5 l-ankle, 6 pelvis, 7 thorax, 8 upper neck, 9 head top,
10 r-wrist, 11 r-elbow, 12 r-shoulder, 13 l-shoulder, 14 l-elbow, 15 l-wrist.
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 16
# MPII joint order (the HRNet / mmpose annotation files and the official toolkit).
MPII_JOINTS = ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax", "upper_neck",
               "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist")
# Left/right pairs: ankles, knees, hips, wrists, elbows, shoulders; a mirrored image swaps them.
FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
FLIP_PERMUTATION = np.arange(NUM_JOINTS)
for _a, _b in FLIP_PAIRS:
    FLIP_PERMUTATION[_a], FLIP_PERMUTATION[_b] = _b, _a
# The skeleton drawn by the synthetic data and the pictures: (joint a, joint b, palette index) for legs,
# torso, arms and neck.
LIMBS = ((0, 1, 0), (1, 2, 1), (5, 4, 0), (4, 3, 1), (2, 3, 2), (2, 6, 2), (3, 6, 2), (6, 7, 2), (7, 12, 3),
         (7, 13, 3), (12, 11, 4), (11, 10, 5), (13, 14, 4), (14, 15, 5), (7, 8, 6))

# The columns of Table 1 of Sun et al. (Focus On What's Important): the mean of the two joints of each part.
PCKH_COLUMNS = {"Head": (8, 9), "Sho.": (12, 13), "Elb.": (11, 14), "Wri.": (10, 15), "Hip": (2, 3),
                "Kne.": (1, 4), "Ank.": (0, 5)}
PCKH_TOTAL_JOINTS = (0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15)  # all but pelvis and thorax
MPII_HEAD_FACTOR = 0.6  # the toolkit's SC_BIAS: head size = 0.6 x head-box diagonal


def pckh(pred, gt, visible, head_boxes, threshold=0.5) -> dict[str, float]:
    """PCKh as the official MPII toolkit computes it, with the columns of Sun et al.'s Table 1.

    A joint is correct when ``distance / head_size <= threshold``, head size
    being 0.6 x the diagonal of the head box; only annotated (``visible``)
    joints count.

    Args:
        pred, gt: (N, 16, 2) pixel coordinates (x, y), MPII joint order.
        visible: (N, 16) bool, the annotated joints.
        head_boxes: (N, 2, 2) ``[[x1, y1], [x2, y2]]``.
        threshold: the fraction of the head size (0.5 for PCKh@0.5).

    Returns:
        Percentages: the 16 joint names (``MPII_JOINTS``; nan for a joint
        with no annotated instance), the columns ``Head``, ``Sho.``,
        ``Elb.``, ``Wri.``, ``Hip``, ``Kne.``, ``Ank.`` (mean of the two
        joints) and ``Total``, pooled over every annotated instance of the
        14 joints other than pelvis and thorax (not a mean of columns).
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    visible, head_boxes = np.asarray(visible, bool), np.asarray(head_boxes, np.float64)
    n = gt.shape[0] if gt.ndim == 3 else -1
    expected = {"pred": (pred.shape, (n, 16, 2)), "gt": (gt.shape, (n, 16, 2)),
                "visible": (visible.shape, (n, 16)), "head_boxes": (head_boxes.shape, (n, 2, 2))}
    for name, (shape, want) in expected.items():
        if shape != want:
            raise ValueError(f"pckh: {name} must have shape (N, 16, ...) = {want}, got {shape}")
    head_size = MPII_HEAD_FACTOR * np.linalg.norm(head_boxes[:, 1] - head_boxes[:, 0], axis=-1)
    if np.any(head_size[visible.any(axis=1)] <= 0):
        raise ValueError("pckh: head_boxes with zero size for instances with annotated joints")
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = np.linalg.norm(pred - gt, axis=-1) / head_size[:, None]
    correct = (normalized <= threshold) & visible
    counts, hits = visible.sum(axis=0), correct.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_joint = 100.0 * hits / counts
    result = {name: float(value) for name, value in zip(MPII_JOINTS, per_joint)}
    for column, (a, b) in PCKH_COLUMNS.items():
        result[column] = float((per_joint[a] + per_joint[b]) / 2)
    total = list(PCKH_TOTAL_JOINTS)
    result["Total"] = float(100.0 * hits[total].sum() / counts[total].sum()) if counts[total].sum() else float("nan")
    return result
