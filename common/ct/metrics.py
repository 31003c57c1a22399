"""Per-label overlap and distance metrics of a segmentation against its reference.

Overlap metrics (dice, iou, voe, precision, recall) count voxels. Distance
metrics are in millimetres:

* ``voe``: volumetric overlap error ``1 - |A∩B| / |A∪B|`` (= 1 - iou). The
  EAS U-Net paper prints ``1 - Dice`` as its formula, but its Table 1 values
  match neither consistently; we use the standard definition.
* ``hd``: the symmetric Hausdorff distance between the two voxel sets, the
  quantity SimpleITK's ``HausdorffDistanceImageFilter`` reports.
* ``hd95``, ``assd`` and ``assd_lits``: surface distances. The surface of a
  mask is ``mask & ~binary_erosion(mask, face connectivity, border_value=0)``
  (medpy's, connectivity 1), so voxels on the array edge are surface. Each
  surface voxel of one mask is paired with the nearest surface voxel of the
  other, in both directions. Libraries combine the two directions
  differently, so each name says whose rule it follows:

  - ``hd95``: the 95th percentile (linear interpolation) of both directions'
    distances pooled, as medpy's ``hd95`` (``percentile(hstack((d_ab, d_ba)), 95)``).
    MONAI's ``compute_hausdorff_distance(percentile=95)`` takes the larger of
    the two directed percentiles instead, which is never smaller.
  - ``assd``: the mean of both directions' distances pooled, as MONAI's
    ``compute_average_surface_distance(symmetric=True)`` (and medpy 0.5).
  - ``assd_lits``: the mean of the two directed means, ``(mean(d_ab) +
    mean(d_ba)) / 2``, as medpy 0.4's ``assd`` and the LiTS evaluation code,
    which the EAS U-Net paper's ASD column comes from. It differs from
    ``assd`` whenever the two surfaces have different sizes.

Empty-mask conventions, per label:

* both masks empty: dice = iou = precision = recall = 1.0, voe = 0.0 and
  hd = hd95 = assd = assd_lits = 0.0 (a correct "absent" call).
* exactly one mask empty: dice = iou = precision = recall = 0.0, voe = 1.0
  (a ratio whose denominator is zero is 0.0, because the other mask is not
  empty), and hd = hd95 = assd = assd_lits = nan: the distances are undefined, so
  reports average them with ``nanmean`` and count them (see ``summarize``).

Spacing is given in SimpleITK's (x, y, z) order, reversed relative to the
numpy axes (z, y, x) of the arrays.

Example:

```python
import numpy as np
from common.ct.metrics import segmentation_metrics

ref = np.zeros((4, 8, 8), np.uint8); ref[1:3, 2:6, 2:6] = 1
pred = np.zeros_like(ref); pred[1:3, 2:6, 3:7] = 1
m = segmentation_metrics(pred, ref, spacing=(0.8, 0.8, 2.0))
round(m[1]["dice"], 3)  # 0.75
```
"""

import numpy as np
from scipy import ndimage

# The keys of ``segmentation_metrics``; reports print the overlaps in percent, distances in mm.
METRIC_NAMES = ("dice", "iou", "voe", "precision", "recall", "hd", "hd95", "assd", "assd_lits")
# Scored besides those where a cohort marks organ look-alikes (``zoo synthetic-ct --layout context``).
DISTRACTOR_ERROR = "distractor_error"
PERCENT_METRICS = ("dice", "iou", "voe", "precision", "recall", DISTRACTOR_ERROR)


def scale_of(name: str) -> float:
    """What reports multiply a metric by: 100 for the overlaps (percent), 1 for distances (mm)."""
    return 100.0 if name in PERCENT_METRICS else 1.0


def segmentation_metrics(
    pred, ref, spacing=(1.0, 1.0, 1.0), labels=None
) -> dict[int, dict[str, float]]:
    """Computes overlap and distance metrics of `pred` against `ref` per label.

    Args:
        pred: integer label array, (z, y, x) or (y, x).
        ref: integer reference label array of the same shape.
        spacing: voxel size in mm in SimpleITK order, (x, y, z) or (x, y);
            one entry per array axis, all positive.
        labels: label values to report; defaults to every non-zero label
            present in either array, sorted.

    Returns:
        `{label: {"dice", "iou", "voe", "precision", "recall", "hd", "hd95",
        "assd", "assd_lits"}}` with python floats; see the module docstring for empty masks.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    sampling = _validate(pred, ref, spacing)
    if labels is None:
        labels = np.union1d(np.unique(pred), np.unique(ref))
        labels = labels[labels != 0]
    results = {}
    for label in labels:
        a, b = _crop_to_union(pred == label, ref == label)
        results[int(label)] = {
            **_overlap_metrics(a, b),
            **_distance_metrics(a, b, sampling),
        }
    return results


def distractor_errors(pred, distractors, labels) -> dict[int, float]:
    """Share of each label's look-alike voxels that ``pred`` gives that label.

    A distractor is background that imitates an organ; ``distractors`` holds, on each of
    its voxels, the label it imitates (0 elsewhere), as ``zoo synthetic-ct --layout
    context`` writes it. Organ precision hides these errors among the far more numerous
    boundary errors, so they are counted on their own.

    Args:
        pred: integer label array.
        distractors: the imitated-label map, same shape.
        labels: label values to report.

    Returns:
        ``{label: fraction in [0, 1]}``, nan for a label that no distractor imitates here.

    Example:
        >>> d = np.array([0, 2, 2, 2, 4]); p = np.array([2, 2, 0, 0, 0])
        >>> distractor_errors(p, d, [2, 4])
        {2: 0.3333333333333333, 4: 0.0}
    """
    pred, distractors = np.asarray(pred), np.asarray(distractors)
    if pred.shape != distractors.shape:
        raise ValueError(f"prediction {pred.shape} and distractor map {distractors.shape} differ in shape")
    result = {}
    for label in labels:
        mask = distractors == label
        result[int(label)] = float((pred[mask] == label).mean()) if mask.any() else float("nan")
    return result


def summarize(
    per_case: list[dict[int, dict[str, float]]],
) -> dict[int, dict[str, dict]]:
    """Aggregates per-case metrics into mean, std and count per label and metric.

    Args:
        per_case: one `segmentation_metrics` result per case; a label missing
            from a case does not count for that case.

    Returns:
        `{label: {metric: {"mean", "std", "n"}}}`, where mean and std ignore nan
        values and n counts the non-nan ones; std is the sample standard
        deviation (ddof 1, as every std the zoo prints: ``common.stats``), nan
        when n < 2; the mean is nan when n is 0.
    """
    values: dict[int, dict[str, list[float]]] = {}
    for case in per_case:
        for label, metrics in case.items():
            for name, value in metrics.items():
                values.setdefault(label, {}).setdefault(name, []).append(value)
    summary = {}
    for label in sorted(values):
        summary[label] = {}
        for name, vals in values[label].items():
            arr = np.asarray(vals, dtype=np.float64)
            n = int(np.count_nonzero(~np.isnan(arr)))
            # The guard spares nanmean its RuntimeWarning when all are nan.
            mean = float(np.nanmean(arr)) if n else float("nan")
            std = float(np.nanstd(arr, ddof=1)) if n > 1 else float("nan")
            summary[label][name] = {"mean": mean, "std": std, "n": n}
    return summary


def mean_foreground_dice(metrics: dict[int, dict[str, float]]) -> float:
    """Averages the Dice of every label of one case.

    Args:
        metrics: one `segmentation_metrics` result.

    Returns:
        The mean of the labels' "dice" values, or nan when there is no label.
    """
    if not metrics:
        return float("nan")
    return float(np.mean([m["dice"] for m in metrics.values()]))


def _validate(pred, ref, spacing):
    """Checks shapes and spacing and returns the sampling in numpy axis order.

    Args:
        pred: prediction array.
        ref: reference array.
        spacing: voxel size in SimpleITK (x, y, z) order.
    """
    if pred.shape != ref.shape:
        raise ValueError(
            f"pred and ref must have the same shape, got pred {pred.shape} "
            f"and ref {ref.shape}"
        )
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim or not all(s > 0 for s in spacing):
        raise ValueError(
            f"spacing must hold {pred.ndim} positive values (one per axis of "
            f"arrays of shape {pred.shape}), got spacing={spacing}"
        )
    return spacing[::-1]


def _crop_to_union(a, b):
    """Crops two masks to the bounding box of their union plus one voxel.

    Results do not change: every voxel of either mask stays in the crop, so
    nearest-voxel distances are the same, and past the crop lies background
    or the real array edge, which erosion with border_value=0 treats alike.

    Args:
        a: boolean mask.
        b: boolean mask of the same shape.
    """
    union = a | b
    if not union.any():
        return a[(slice(0, 0),) * a.ndim], b[(slice(0, 0),) * b.ndim]
    box = []
    for axis in range(union.ndim):
        others = tuple(i for i in range(union.ndim) if i != axis)
        hits = np.flatnonzero(union.any(axis=others))
        box.append(slice(max(hits[0] - 1, 0), min(hits[-1] + 2, union.shape[axis])))
    box = tuple(box)
    return a[box], b[box]


def _overlap_metrics(a, b):
    """Computes dice, iou, voe, precision and recall of mask `a` against `b`.

    Args:
        a: boolean predicted mask.
        b: boolean reference mask.
    """
    tp = int(np.count_nonzero(a & b))
    n_a, n_b = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if n_a == 0 and n_b == 0:
        return {"dice": 1.0, "iou": 1.0, "voe": 0.0, "precision": 1.0, "recall": 1.0}
    iou = tp / (n_a + n_b - tp)
    return {
        "dice": 2.0 * tp / (n_a + n_b),
        "iou": iou,
        "voe": 1.0 - iou,
        # A zero denominator here means the other mask is non-empty: a miss.
        "precision": tp / n_a if n_a else 0.0,
        "recall": tp / n_b if n_b else 0.0,
    }


def _distance_metrics(a, b, sampling):
    """Computes hd (voxel sets), hd95, assd and assd_lits (surfaces) in mm.

    Args:
        a: boolean predicted mask, cropped by `_crop_to_union`.
        b: boolean reference mask, same crop.
        sampling: voxel size in mm in numpy axis order.
    """
    has_a, has_b = bool(a.any()), bool(b.any())
    if not has_a and not has_b:
        return {"hd": 0.0, "hd95": 0.0, "assd": 0.0, "assd_lits": 0.0}
    if not has_a or not has_b:
        nan = float("nan")
        return {"hd": nan, "hd95": nan, "assd": nan, "assd_lits": nan}
    hd = max(_directed_distances(a, b, sampling).max(),
             _directed_distances(b, a, sampling).max())
    surf_a, surf_b = _surface(a), _surface(b)
    a_to_b = _directed_distances(surf_a, surf_b, sampling)
    b_to_a = _directed_distances(surf_b, surf_a, sampling)
    pooled = np.concatenate([a_to_b, b_to_a])
    return {
        "hd": float(hd),
        "hd95": float(np.percentile(pooled, 95)),  # medpy's hd95
        "assd": float(pooled.mean()),  # MONAI's symmetric ASD, medpy 0.5
        "assd_lits": float((a_to_b.mean() + b_to_a.mean()) / 2),  # medpy 0.4, the LiTS evaluation
    }


def _surface(mask):
    """Returns the voxels of `mask` with a face neighbour outside it or the array.

    Args:
        mask: boolean mask.
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _directed_distances(src, dst, sampling):
    """Returns, for each voxel of `src`, the distance in mm to the nearest of `dst`.

    Args:
        src: boolean mask of the voxels to measure from.
        dst: non-empty boolean mask of the voxels to measure to.
        sampling: voxel size in mm in numpy axis order.
    """
    return ndimage.distance_transform_edt(~dst, sampling=sampling)[src]


