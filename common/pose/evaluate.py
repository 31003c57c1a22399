"""Pose evaluation: crops -> model -> decoded keypoints in image coordinates -> PCKh (paper Table 1)."""

from __future__ import annotations

import numpy as np

from common.pose import data as pose_data
from common.pose import mpii

TABLE_COLUMNS = ("Head", "Sho.", "Elb.", "Wri.", "Hip", "Kne.", "Ank.", "Total")


def last_prediction(model, outputs):
    """The last stage's prediction P of a model's output list."""
    if not isinstance(outputs, (list, tuple)):  # Keras unwraps a one-output model's list
        return outputs
    names = model.output_names
    index = max(i for i, name in enumerate(names) if name.startswith("prediction_"))
    return outputs[index]


def predict_records(model, records, input_size: int, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (N, 16, 2) in original-image coordinates and peak scores (N, 16)."""
    from common import registry

    keypoints = registry.entry_of(model).keypoints
    coords, scores = [], []
    for start in range(0, len(records), batch_size):
        batch = [pose_data.prepare_sample(r, input_size) for r in records[start:start + batch_size]]
        images = np.stack([b[0] for b in batch])
        matrices = np.stack([b[2] for b in batch])
        heatmaps = last_prediction(model, model(images, training=False))
        hm_coords, hm_scores = keypoints(heatmaps)
        coords.append(pose_data.inverse_transform_points(np.asarray(hm_coords), matrices))
        scores.append(np.asarray(hm_scores))
    return np.concatenate(coords), np.concatenate(scores)


def evaluate(model, records, input_size: int, batch_size: int = 8, threshold: float = 0.5) -> dict[str, float]:
    """PCKh of ``model`` on ``records`` (which need head boxes)."""
    missing = [str(r.image) for r in records if r.head_box is None]
    if missing:
        raise pose_data.DataError(f"{missing[0]}: no head box (give 'head_box' in the annotation or "
                                  f"annot/gt_valid.mat); {len(missing)} annotations lack one")
    pred, _ = predict_records(model, records, input_size, batch_size)
    gt = np.stack([r.joints for r in records])
    visible = np.stack([r.visible for r in records])
    boxes = np.stack([r.head_box for r in records])
    return mpii.pckh(pred, gt, visible, boxes, threshold)


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table with the paper's Table 1 columns, one row per method."""
    lines = ["| Method | " + " | ".join(TABLE_COLUMNS) + " |", "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for name, result in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{result[c]:.1f}" for c in TABLE_COLUMNS) + " |")
    return "\n".join(lines)
