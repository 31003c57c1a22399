"""Pose evaluation: crops -> model (and its flip test) -> decoded keypoints in image coordinates -> PCKh (Table 1).

The flip test (Newell's ``valid`` step, HRNet's and mmpose's ``FLIP_TEST``)
averages the heatmaps of the crop with those of the mirrored crop, flipped
back with the left/right joints swapped. HRNet and mmpose then shift the
flipped-back heatmaps one pixel to the right (``output_flipped[..., 1:] =
output_flipped[..., :-1]``): their targets sit at ``round(x / 4)``, so a
mirrored crop's peak lands 3/4 of a heatmap pixel left of the unflipped
one. Here targets and decoding use pixel centres (``crop_matrix``: a mirror
maps heatmap column u to ``W - 1 - u`` exactly), as Newell's Torch code,
which flips back without a shift; ``FLIP_SHIFT`` is therefore 0, and
``shift=1`` gives HRNet's rule (``zoo eval-pose --flip-shift 1``).
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from common import stats, tables
from common.pose import data as pose_data
from common.pose import mpii

TABLE_COLUMNS = ("Head", "Sho.", "Elb.", "Wri.", "Hip", "Kne.", "Ank.", "Total", "Mean@0.1")
FLIP_SHIFT = 0  # pixels; HRNet's and mmpose's 1 compensates a target convention this code does not have
LOW_THRESHOLD = 0.1  # Mean@0.1 (mmpose's pckAll[10]; HRNet's pckAll[11] is in fact 0.11)
CURVE_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(51))  # 0 to 0.5, HRNet's and mmpose's rng
MISSING = "–"  # a joint or column with no annotated instance


def last_prediction(model, outputs):
    """The last stage's prediction P of a model's output list: the heatmaps its registry entry serves."""
    from common import registry

    if not isinstance(outputs, (list, tuple)):  # Keras unwraps a one-output model's list
        return outputs
    return registry.entry_of(model).serving_outputs(model)(outputs)["heatmaps"]


def flip_back(heatmaps, shift: int = FLIP_SHIFT) -> np.ndarray:
    """Heatmaps (B, H, W, K) of mirrored crops, back in the unmirrored frame.

    Mirrors the width axis, swaps the MPII left/right joints
    (``mpii.FLIP_PAIRS``), then moves every column ``shift`` pixels to the
    right as HRNet and mmpose do (the first ``shift`` columns keep their own
    values, as ``x[..., 1:] = x[..., :-1]`` leaves column 0).
    """
    back = np.asarray(heatmaps)[:, :, ::-1][..., mpii.FLIP_PERMUTATION].copy()
    if shift:
        back[:, :, shift:] = back[:, :, :-shift].copy()
    return back


def predict_heatmaps(model, images, flip_test: bool = True, shift: int = FLIP_SHIFT) -> np.ndarray:
    """The last prediction (B, H, W, K) on a batch of crops, averaged with the flip test's unless told not to."""
    heatmaps = np.asarray(last_prediction(model, model(images, training=False)), np.float32)
    if not flip_test:
        return heatmaps
    mirrored = np.ascontiguousarray(np.asarray(images)[:, :, ::-1])
    flipped = np.asarray(last_prediction(model, model(mirrored, training=False)), np.float32)
    return 0.5 * (heatmaps + flip_back(flipped, shift))


def predict_records(model, records, input_size: int, batch_size: int = 8, flip_test: bool = True,
                    shift: int = FLIP_SHIFT) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (N, 16, 2) in original-image coordinates and peak scores (N, 16)."""
    from common import registry

    keypoints = registry.entry_of(model).keypoints
    coords, scores = [], []
    for start in range(0, len(records), batch_size):
        batch = [pose_data.prepare_sample(r, input_size) for r in records[start:start + batch_size]]
        images = np.stack([b[0] for b in batch])
        matrices = np.stack([b[2] for b in batch])
        hm_coords, hm_scores = keypoints(predict_heatmaps(model, images, flip_test, shift))
        coords.append(pose_data.inverse_transform_points(np.asarray(hm_coords), matrices))
        scores.append(np.asarray(hm_scores))
    return np.concatenate(coords), np.concatenate(scores)


def evaluate(model, records, input_size: int, batch_size: int = 8, threshold: float = 0.5, flip_test: bool = True,
             shift: int = FLIP_SHIFT) -> dict:
    """PCKh of ``model`` on ``records`` (which need head boxes).

    Returns ``mpii.pckh``'s percentages at ``threshold``, ``Mean@0.1`` (the
    pooled Total at 0.1, as HRNet's and mmpose's count-weighted mean over the
    14 joints) and ``curve``: ``{"thresholds": [...], "Total": [...]}`` from 0
    to 0.5.
    """
    missing = [str(r.image) for r in records if r.head_box is None]
    if missing:
        raise pose_data.DataError(f"{missing[0]}: no head box (give 'head_box' in the annotation or "
                                  f"annot/gt_valid.mat); {len(missing)} annotations lack one")
    pred, _ = predict_records(model, records, input_size, batch_size, flip_test, shift)
    truth = (np.stack([r.joints for r in records]), np.stack([r.visible for r in records]),
             np.stack([r.head_box for r in records]))
    result = mpii.pckh(pred, *truth, threshold)
    result["Mean@0.1"] = mpii.pckh(pred, *truth, LOW_THRESHOLD)["Total"]
    result["curve"] = {"thresholds": list(CURVE_THRESHOLDS),
                       "Total": [mpii.pckh(pred, *truth, t)["Total"] for t in CURVE_THRESHOLDS]}
    return result


def json_ready(result: dict) -> dict:
    """``result`` with NaN (no annotated instance) as None, so the file is strict JSON (``null``)."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return None if isinstance(value, float) and math.isnan(value) else value

    return clean(result)


def format_cell(value) -> str:
    """One decimal; ``MISSING`` for a joint or column without annotated instances (NaN or None)."""
    return MISSING if value is None or math.isnan(value) else f"{value:.1f}"


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table with the paper's Table 1 columns and Mean@0.1, one row per method."""
    return tables.markdown(["Method", *TABLE_COLUMNS],
                           [[name, *(format_cell(result[c]) for c in TABLE_COLUMNS)] for name, result in rows.items()])


def load_group(folder, split: str = "valid", result_file: str | None = None) -> dict[str, dict]:
    """Each run's ``zoo eval-pose`` result in a folder of runs (one subfolder per seed): ``{run name: result}``.

    ``result_file`` defaults to ``pckh_<split>.json`` (the flip test's).
    """
    folder = pathlib.Path(folder)
    name = result_file or f"pckh_{split}.json"
    if not folder.is_dir():
        raise pose_data.DataError(f"{folder}: no such folder of pose runs")
    results = {path.parent.name: json.loads(path.read_text(encoding="utf-8"))
               for path in sorted(folder.glob(f"*/{name}"))}
    if not results:
        raise pose_data.DataError(f"{folder}: no run with {name} (run zoo eval-pose on each run first)")
    return results


def compare_groups(group_a, group_b, column: str = "Total", split: str = "valid") -> dict:
    """``column`` of two folders of runs paired by run name: each group's summary and the paired test of b - a."""
    a, b = load_group(group_a, split), load_group(group_b, split)
    if sorted(a) != sorted(b):
        raise pose_data.DataError(f"{group_a} and {group_b} must hold runs of the same names to pair them, "
                                  f"got {sorted(a)} and {sorted(b)}")
    if column not in TABLE_COLUMNS:
        raise ValueError(f"--column must be one of {', '.join(TABLE_COLUMNS)}, got {column!r}")
    names = sorted(a)
    values_a, values_b = [a[n][column] for n in names], [b[n][column] for n in names]
    return {"column": column, "runs": names, "a": values_a, "b": values_b,
            "summary_a": stats.describe(values_a), "summary_b": stats.describe(values_b),
            "paired": stats.paired(values_a, values_b)}
