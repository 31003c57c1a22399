"""Whole-volume prediction by batched axial slices, and evaluation of held-out cases.

A label volume comes back with its input's exact size, spacing, origin and
direction: the volume is reoriented to the canonical orientation for the
model, and the prediction is reoriented back. ``InferenceOptions`` adds
nnU-Net's inference: a Gaussian-weighted sliding window and test-time
mirroring per slice (``common.ct.sliding``), the mean of several models' (a
cross-validation's folds') probabilities, prediction at the training
cohort's in-plane spacing (the image resampled linearly in HU with
SimpleITK, then windowed; the probabilities resampled linearly back to the
input's grid before the argmax), and the largest-connected-component rule
of ``common.ct.postprocess``. The defaults are the zoo's plain slice-by-slice
prediction.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import SimpleITK as sitk

from common import errors, tables
from common.ct import metrics, postprocess, sliding, volumes

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    """How volumes are predicted (``common.ct.ensemble.options_for`` gives a run's defaults).

    Attributes:
        tile: (h, w) of the sliding window; None: whole slices.
        step: distance between tiles as a fraction of the tile, in (0, 1] (nnU-Net: 0.5).
        tta: "none" or "mirror" (the flips of ``sliding.MIRRORS``).
        spacing: (x, y) in-plane spacing in mm to predict at; None: the volume's own.
        postprocess: classes reduced to their largest connected component; None or (): none.
    """

    tile: tuple[int, int] | None = None
    step: float = 0.5
    tta: str = "none"
    spacing: tuple[float, float] | None = None
    postprocess: tuple[int, ...] | None = None

    def validate(self) -> None:
        """Raises ValueError naming the first bad option."""
        if self.tile is not None and (len(self.tile) != 2 or min(self.tile) < 1):
            raise ValueError(f"tile must be two positive sides (h, w), got {self.tile}")
        if not 0 < self.step <= 1:
            raise ValueError(f"step must lie in (0, 1], got {self.step}")
        if self.tta not in sliding.MIRRORS:
            raise ValueError(f"tta must be one of {tuple(sliding.MIRRORS)}, got {self.tta!r}")
        if self.spacing is not None and (len(self.spacing) != 2 or not min(self.spacing) > 0):
            raise ValueError(f"spacing must be two positive values in mm (x, y), got {self.spacing}")

    def describe(self) -> str:
        """One line, e.g. "tile 64x64 step 0.5, tta mirror, spacing 0.78x0.78 mm, post-processing classes 1, 2"."""
        parts = [f"tile {self.tile[0]}x{self.tile[1]} step {self.step:g}" if self.tile else "whole slices",
                 f"tta {self.tta}",
                 f"spacing {self.spacing[0]:.3g}x{self.spacing[1]:.3g} mm" if self.spacing else "own spacing"]
        if self.postprocess is not None:
            parts.append("post-processing classes " + (", ".join(map(str, self.postprocess)) or "none"))
        return ", ".join(parts)


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
    probabilities = sliding.predict_slice_probabilities(model, image, batch_size=batch_size, stride=stride)
    return np.argmax(probabilities, axis=-1).astype(np.uint8)


def resample_plane(image: sitk.Image, spacing, reference: sitk.Image | None = None) -> sitk.Image:
    """``image`` resampled linearly to in-plane ``spacing`` (x, y) mm, or onto ``reference``'s grid.

    The new grid keeps the origin, direction, slices and extent (``round(size * old / new)``
    pixels per axis); points beyond the last input pixel take the nearest one's value.
    """
    if reference is None:
        old = image.GetSpacing()
        size = [max(1, int(round(n * o / s))) for n, o, s in zip(image.GetSize()[:2], old[:2], spacing)]
        return sitk.Resample(image, [*size, image.GetSize()[2]], sitk.Transform(), sitk.sitkLinear,
                             image.GetOrigin(), (*map(float, spacing), old[2]), image.GetDirection(), 0.0,
                             sitk.sitkUnknown, True)
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkUnknown, True)


def predict_probabilities(models, image: sitk.Image, hu_window=volumes.DEFAULT_WINDOW,
                          options: InferenceOptions | None = None, batch_size: int = 8, stride: int = 16,
                          source="volume") -> tuple[np.ndarray, sitk.Image]:
    """The models' mean class probabilities on a volume's canonical grid.

    Returns:
        ((z, y, x, C) float32 probabilities, the canonical image whose grid they are on).
    """
    options = options or InferenceOptions()
    options.validate()
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    canonical = volumes.to_canonical(image)
    grid = canonical
    if options.spacing and not np.allclose(canonical.GetSpacing()[:2], options.spacing, rtol=1e-4):
        grid = resample_plane(sitk.Cast(canonical, sitk.sitkFloat32), options.spacing)
    array = volumes.window(sitk.GetArrayFromImage(grid), hu_window)
    if options.tile is None:
        for model in models:
            slice_size_check(model, array.shape[1], array.shape[2], source)
    total = None
    for index, model in enumerate(models):
        if len(models) > 1:
            logger.info(f"{source}: model {index + 1}/{len(models)}")
        probabilities = sliding.predict_slice_probabilities(model, array, options.tile, options.step, options.tta,
                                                            batch_size, stride)
        total = probabilities if total is None else np.add(total, probabilities, out=total)
    total /= len(models)
    if grid is not canonical:
        vector = sitk.GetImageFromArray(total, isVector=True)
        vector.CopyInformation(grid)
        total = sitk.GetArrayFromImage(resample_plane(vector, None, reference=canonical))
    return total, canonical


def to_input_geometry(array: np.ndarray, canonical: sitk.Image, image: sitk.Image) -> sitk.Image:
    """A canonical (z, y, x) array, or (z, y, x, C) vectors, as an image with ``image``'s exact geometry."""
    result = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    result.CopyInformation(canonical)
    result = sitk.DICOMOrient(result, volumes.orientation_of(image))
    result.CopyInformation(image)  # exact, not up to the rounding of two reorientations
    return result


def predict_volume(model, image: sitk.Image, hu_window=volumes.DEFAULT_WINDOW, batch_size: int = 8,
                   stride: int = 16, source="volume", options: InferenceOptions | None = None,
                   with_probabilities: bool = False):
    """Segments a CT volume; the label image has the input's exact geometry.

    Args:
        model: a model, or a list of models whose probabilities are averaged.
        options: sliding window, mirroring, spacing, post-processing (default: plain slices).
        with_probabilities: also return the (pre-post-processing) probabilities as a
            float32 vector image of the input's geometry.

    Returns:
        The uint8 label image, or (labels, probabilities) with ``with_probabilities``.
    """
    options = options or InferenceOptions()
    probabilities, canonical = predict_probabilities(model, image, hu_window, options, batch_size, stride, source)
    labels = np.argmax(probabilities, axis=-1).astype(np.uint8)
    if options.postprocess:
        labels = postprocess.keep_largest_component(labels, options.postprocess)
    result = to_input_geometry(labels, canonical, image)
    return (result, to_input_geometry(probabilities, canonical, image)) if with_probabilities else result


def predicted_cases(model, cases, num_classes: int, hu_window=volumes.DEFAULT_WINDOW, batch_size: int = 8,
                    stride: int = 16, label_map: dict | None = None, options: InferenceOptions | None = None):
    """Predicts each case in turn: yields (case, image, predicted (z, y, x), reference (z, y, x)) arrays.

    Args:
        model: a model or a list of models (their mean), as ``predict_volume``.
        label_map: the renumbering the training data had (e.g. LiTS ``{2: 1}``),
            applied to the reference labels.
    """
    for case in cases:
        image = volumes.read_volume(case.image)
        reference = sitk.GetArrayFromImage(volumes.read_label(case, image, num_classes, label_map))
        predicted = predict_volume(model, image, hu_window, batch_size, stride, case.image, options)
        yield case, image, sitk.GetArrayFromImage(predicted), reference


def evaluate_cases(model, cases, num_classes: int, hu_window=volumes.DEFAULT_WINDOW, batch_size: int = 8,
                   stride: int = 16, label_map: dict | None = None,
                   options: InferenceOptions | None = None) -> dict[str, dict[int, dict[str, float]]]:
    """Predicts and scores whole held-out volumes (a line per case, and per model of an ensemble, logged).

    Returns:
        {case_id: segmentation_metrics(...)} for classes 1..num_classes-1, with
        distances in mm from the voxel spacing.
    """
    results = {}
    for case, image, predicted, reference in predicted_cases(model, cases, num_classes, hu_window, batch_size,
                                                             stride, label_map, options):
        results[case.case_id] = metrics.segmentation_metrics(
            predicted, reference, spacing=image.GetSpacing(), labels=range(1, num_classes)
        )
        logger.info(f"evaluated {case.case_id}: mean Dice {metrics.mean_foreground_dice(results[case.case_id]):.3f}")
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
    return tables.markdown([f"class ({len(results)} cases)", *metric_names], rows,
                           caption=tables.spread(f"{len(results)} cases") + "; overlaps in %, distances in mm")
