"""Pictures of a pose model: skeleton overlays, heatmaps (paper Fig. 1), attention masks (Fig. 6), PCKh curves."""

from __future__ import annotations

import pathlib

import cv2
import numpy as np

from common import atomic
from common.pose import data as pose_data
from common.pose import mpii

GT_COLOUR, PRED_COLOUR = (255, 60, 60), (60, 255, 60)
CURVE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))  # RGB, one per curve


def _uint8(image) -> np.ndarray:
    image = np.asarray(image)
    return image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _point(joints, j) -> tuple[int, int]:
    return tuple(int(round(v)) for v in joints[j])


def _draw_limbs(canvas, joints, visible, colour, thickness, line_type=cv2.LINE_8) -> None:
    """The MPII limbs and the neck-head segment between visible joints, drawn into ``canvas``."""
    for a, b, _ in mpii.LIMBS + ((8, 9, 0),):
        if visible[a] and visible[b]:
            cv2.line(canvas, _point(joints, a), _point(joints, b), colour, thickness, line_type)


def skeleton_overlay(image, joints, visible=None, colour=PRED_COLOUR) -> np.ndarray:
    """A copy of the RGB image with the MPII skeleton drawn over it (invisible joints skipped)."""
    out = _uint8(image).copy()
    visible = np.ones(len(joints), bool) if visible is None else np.asarray(visible, bool)
    thickness = max(1, out.shape[0] // 128)
    _draw_limbs(out, joints, visible, colour, thickness, cv2.LINE_AA)
    for j in np.flatnonzero(visible):
        cv2.circle(out, _point(joints, j), thickness + 1, colour, -1, cv2.LINE_AA)
    return out


def heatmap_figure(crop, heatmaps, columns: int = 4) -> np.ndarray:
    """Fig. 1 (bottom): each joint's heatmap over the crop in a grid, the crop itself on the right.

    Each heatmap is scaled by its own peak, so a weak but well-placed peak shows.
    """
    crop = _uint8(crop)
    side = crop.shape[0] // 2
    small = cv2.resize(crop, (side, side))
    tiles = []
    for k in range(heatmaps.shape[-1]):
        heat = np.clip(heatmaps[..., k], 0, None)
        heat = cv2.resize(heat / max(float(heat.max()), 1e-6), (side, side), interpolation=cv2.INTER_LINEAR)
        colour = cv2.cvtColor(cv2.applyColorMap(_uint8(heat), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        tile = cv2.addWeighted(small, 0.4, colour, 0.6, 0)
        cv2.putText(tile, str(k), (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(small))
    grid = np.concatenate([np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)])
    right = np.zeros((grid.shape[0], crop.shape[1], 3), np.uint8)
    right[: min(grid.shape[0], crop.shape[0])] = crop[: grid.shape[0]]
    return np.concatenate([grid, right], axis=1)


def mask_figure(crop, masks) -> np.ndarray:
    """Fig. 6: the crop, then the crop multiplied by each stage's mask (discarded regions dark)."""
    crop = _uint8(crop)
    panels = [crop]
    for mask in masks:
        up = cv2.resize(np.asarray(mask, np.float32)[..., 0], crop.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        panels.append((crop * np.clip(up, 0, 1)[..., None]).astype(np.uint8))
    return np.concatenate(panels, axis=1)


def figure_region(record: pose_data.PoseRecord, size: int, thickness: int = 2) -> np.ndarray:
    """Where the annotated figure lies in a ``size`` x ``size`` map of the evaluation crop: its limbs as lines."""
    joints = pose_data.transform_points(record.joints, pose_data.crop_matrix(record.center, record.side, 0.0, size))
    region = np.zeros((size, size), np.uint8)
    _draw_limbs(region, joints, record.visible, 1, thickness)
    return region.astype(bool)


def mask_contrast(model, records, input_size: int) -> list[dict]:
    """How well each stage's mask tells the annotated figure from the rest of the crop, over ``records``.

    Per stage: the mean mask on the figure's limbs and elsewhere, and the AUC
    (the chance that a figure pixel's mask exceeds a background pixel's; 0.5 is
    a mask blind to the figure, 1.0 one that separates it), each averaged over
    the records. A number beside the Fig. 6 picture, which shows one crop.
    """
    from scipy import stats

    names = model.output_names
    per_stage = {}
    for record in records:
        crop, _, _ = pose_data.prepare_sample(record, input_size)
        outputs = model(crop[None], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for name, output in zip(names, outputs):
            if not name.startswith("mask_"):
                continue
            mask = np.asarray(output, np.float32)[0, ..., 0]
            region = figure_region(record, mask.shape[0])
            if not region.any() or region.all():
                continue
            on, off = mask[region], mask[~region]
            auc = stats.mannwhitneyu(on, off).statistic / (on.size * off.size)
            per_stage.setdefault(name, []).append((on.mean(), off.mean(), auc))
    if not per_stage:
        raise ValueError("mask_contrast: the model has no mask outputs (a run of --model acnn has)")
    return [{"stage": name, "figure": float(np.mean([v[0] for v in values])),
             "background": float(np.mean([v[1] for v in values])), "auc": float(np.mean([v[2] for v in values])),
             "records": len(values)} for name, values in per_stage.items()]


def write_pictures(model, record: pose_data.PoseRecord, out, input_size: int, prefix: str = "") -> list[pathlib.Path]:
    """Writes ``<prefix>skeleton.png`` (ground truth red, prediction green on the original image),
    ``<prefix>heatmaps.png`` (the last prediction) and, for a model with masks, ``<prefix>masks.png``."""
    from acnn_pose import decode_heatmaps

    out = pathlib.Path(out)
    crop, _, matrix = pose_data.prepare_sample(record, input_size)
    outputs = model(crop[None], training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    names = model.output_names
    predictions = [np.asarray(o)[0] for o, n in zip(outputs, names) if n.startswith("prediction_")]
    masks = [np.asarray(o)[0] for o, n in zip(outputs, names) if n.startswith("mask_")]
    coords, _ = decode_heatmaps(predictions[-1][None])
    joints = pose_data.inverse_transform_points(np.asarray(coords)[0], matrix)
    image = pose_data.read_image(record.image)
    overlay = skeleton_overlay(skeleton_overlay(image, record.joints, record.visible, GT_COLOUR), joints)
    written = {out / f"{prefix}skeleton.png": overlay,
               out / f"{prefix}heatmaps.png": heatmap_figure(crop, predictions[-1])}
    if masks:
        written[out / f"{prefix}masks.png"] = mask_figure(crop, masks)
    for path, picture in written.items():
        atomic.write_image(path, picture, rgb=True)
    return list(written)


def pckh_curve_figure(curves: dict, width: int = 640, height: int = 480) -> np.ndarray:
    """PCKh (Total, %) against the threshold, one line per name: ``curves[name] = (thresholds, totals)``.

    The x axis runs from 0 to the largest threshold (0.5 for ``zoo eval-pose``), the y axis from 0 to 100;
    NaN points (no annotated joint) are left out. Returns an RGB uint8 image.
    """
    image = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, width - 20, 30, height - 50
    x_max = max(max(t) for t, _ in curves.values()) or 1.0
    to_pixel = lambda t, v: (int(round(left + (right - left) * t / x_max)),  # noqa: E731
                             int(round(bottom - (bottom - top) * v / 100.0)))
    font, grey, black = cv2.FONT_HERSHEY_SIMPLEX, (220, 220, 220), (0, 0, 0)
    for i in range(6):  # grid and tick labels: thresholds in fifths, percent in steps of 20
        t, v = x_max * i / 5, 20.0 * i
        cv2.line(image, to_pixel(t, 0), to_pixel(t, 100), grey, 1)
        cv2.line(image, to_pixel(0, v), to_pixel(x_max, v), grey, 1)
        cv2.putText(image, f"{t:.2f}", (to_pixel(t, 0)[0] - 14, bottom + 18), font, 0.4, black, 1, cv2.LINE_AA)
        cv2.putText(image, f"{v:.0f}", (left - 30, to_pixel(0, v)[1] + 4), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (right, bottom), black, 1)
    cv2.putText(image, "PCKh threshold (fraction of head size)", (left + 120, height - 12), font, 0.45, black, 1,
                cv2.LINE_AA)
    cv2.putText(image, "PCKh Total (%)", (left - 50, top - 12), font, 0.45, black, 1, cv2.LINE_AA)
    for k, (name, (thresholds, totals)) in enumerate(curves.items()):
        colour = CURVE_COLOURS[k % len(CURVE_COLOURS)]
        points = [to_pixel(t, v) for t, v in zip(thresholds, totals) if v is not None and not np.isnan(v)]
        if len(points) > 1:
            cv2.polylines(image, [np.array(points, np.int32)], False, colour, 2, cv2.LINE_AA)
        cv2.putText(image, name, (left + 10, top + 20 + 18 * k), font, 0.45, colour, 1, cv2.LINE_AA)
    return image
