"""Whole-volume prediction by batched axial slices, and evaluation of held-out cases.

A label volume comes back with its input's exact size, spacing, origin and
direction: the volume is reoriented to the canonical orientation for the
model, and the prediction is reoriented back.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from common import errors, tables
from common.ct import metrics, volumes


def slice_size_check(model, height: int, width: int, source) -> None:
    """Raises DataError if the model has a fixed input size other than the slices'.

    Free-size models take any slice: ``predict_slices`` pads it to the stride.
    """
    fixed_h, fixed_w = model.input_shape[1:3]
    if (fixed_h is not None and fixed_h != height) or (fixed_w is not None and fixed_w != width):
        raise errors.DataError(
            f"{source}: slices are {height}x{width} but the model takes {fixed_h}x{fixed_w} inputs"
        )


def predict_slices(model, image: np.ndarray, batch_size: int = 8, stride: int = 16) -> np.ndarray:
    """Labels every slice of a windowed canonical volume.

    Args:
        model: maps (B, H, W, 1) images to (B, H, W, C) probabilities.
        image: (z, y, x) float32, windowed to [0, 1].
        batch_size: slices per forward pass.
        stride: free-size models get slices zero-padded to a multiple of it.

    Returns:
        (z, y, x) uint8 labels.
    """
    depth, height, width = image.shape
    fixed = model.input_shape[1] is not None
    pad_h = 0 if fixed else -height % stride
    pad_w = 0 if fixed else -width % stride
    padded = np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)))[..., None]
    labels = np.empty((depth, height, width), np.uint8)
    for start in range(0, depth, batch_size):
        probabilities = model.predict_on_batch(padded[start:start + batch_size])
        probabilities = probabilities[0] if isinstance(probabilities, (list, tuple)) else probabilities
        labels[start:start + batch_size] = np.argmax(probabilities, axis=-1)[:, :height, :width]
    return labels


def predict_volume(model, image: sitk.Image, hu_window=volumes.DEFAULT_WINDOW, batch_size: int = 8,
                   stride: int = 16, source="volume") -> sitk.Image:
    """Segments a CT volume; the label image has the input's exact geometry."""
    canonical = volumes.to_canonical(image)
    array = volumes.window(sitk.GetArrayFromImage(canonical), hu_window)
    slice_size_check(model, array.shape[1], array.shape[2], source)
    labels = sitk.GetImageFromArray(predict_slices(model, array, batch_size, stride))
    labels.CopyInformation(canonical)
    labels = sitk.DICOMOrient(labels, volumes.orientation_of(image))
    labels.CopyInformation(image)  # exact, not up to the rounding of two reorientations
    return labels


def evaluate_cases(model, cases, num_classes: int, hu_window=volumes.DEFAULT_WINDOW, batch_size: int = 8,
                   stride: int = 16, label_map: dict | None = None,
                   log=print) -> dict[str, dict[int, dict[str, float]]]:
    """Predicts and scores whole held-out volumes.

    Args:
        label_map: the renumbering the training data had (e.g. LiTS ``{2: 1}``),
            applied to the reference labels.

    Returns:
        {case_id: segmentation_metrics(...)} for classes 1..num_classes-1, with
        distances in mm from the voxel spacing.
    """
    results = {}
    for case in cases:
        image = volumes.read_volume(case.image)
        reference = sitk.GetArrayFromImage(volumes.read_label(case, image, num_classes, label_map))
        predicted = sitk.GetArrayFromImage(predict_volume(model, image, hu_window, batch_size, stride, case.image))
        results[case.case_id] = metrics.segmentation_metrics(
            predicted, reference, spacing=image.GetSpacing(), labels=range(1, num_classes)
        )
        log(f"evaluated {case.case_id}: mean Dice {metrics.mean_foreground_dice(results[case.case_id]):.3f}")
    return results


def format_table(results: dict, class_names, metric_names=("dice",)) -> str:
    """A Markdown table: one row per class, mean (± std) over cases; overlaps in percent, distances in mm."""
    summary = metrics.summarize(list(results.values()))
    rows = []
    for label in sorted(summary):
        cells = [tables.mean_std(summary[label][n]["mean"], summary[label][n]["std"], metrics.scale_of(n))
                 for n in metric_names]
        rows.append([class_names[label], *cells])
    if len(summary) > 1:
        means = {n: float(np.nanmean([summary[label][n]["mean"] for label in summary])) for n in metric_names}
        rows.append(["**mean**", *(f"**{metrics.scale_of(n) * means[n]:.2f}**" for n in metric_names)])
    return tables.markdown([f"class ({len(results)} cases)", *metric_names], rows)
