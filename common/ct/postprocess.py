"""nnU-Net's post-processing: keep only a class's largest connected component, where cross-validation shows it helps.

``zoo cv`` scores each fold's held-out cases twice, as predicted and with
each class reduced to its largest connected component (LCC), and
``decide`` keeps the rule for a class only where it raised that class's mean
held-out Dice over all folds' cases. The decision lives in the CV folder::

    CV/postprocessing.json   {"format": 1, "connectivity": 1, "classes": {"1": {"name", "dice",
                              "dice_lcc", "cases", "apply"}, ...}}

``zoo predict --postprocess`` with that CV folder as its model applies it.
Components are face-connected in 3D (``scipy.ndimage.label``'s default
structure, nnU-Net v1's); removed voxels become background (0).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from scipy import ndimage

from common import atomic, errors

DECISION = "postprocessing.json"
FORMAT_VERSION = 1


def keep_largest_component(labels: np.ndarray, classes) -> np.ndarray:
    """A copy of ``labels`` in which each class of ``classes`` keeps only its largest connected component.

    Example:
        >>> labels = np.zeros((1, 1, 7), np.uint8)
        >>> labels[0, 0, [0, 1, 2, 5]] = 1
        >>> keep_largest_component(labels, [1])[0, 0].tolist()
        [1, 1, 1, 0, 0, 0, 0]
    """
    result = labels.copy()
    for label in classes:
        components, count = ndimage.label(labels == label)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0  # the background of the mask
            result[(components > 0) & (components != np.argmax(sizes))] = 0
    return result


def lcc_dice(predicted: np.ndarray, reference: np.ndarray, classes) -> dict[str, float]:
    """Each class's Dice after reducing that class alone to its largest component: {"1": dice, ...}."""
    dice = {}
    for label in classes:
        a, b = keep_largest_component(predicted, [label]) == label, reference == label
        total = int(a.sum()) + int(b.sum())
        # Dice alone (no distances to compute); both empty is 1.0, as in common.ct.metrics.
        dice[str(label)] = 2.0 * int((a & b).sum()) / total if total else 1.0
    return dice


def decide(units: list[dict], class_names) -> dict:
    """The per-class decision from finished CV units (each with ``per_case`` metrics and ``lcc_dice``).

    A class keeps the rule only where its mean Dice over all folds' held-out cases is higher with it.
    """
    classes = {}
    for label in sorted({k for u in units for case in u["lcc_dice"].values() for k in case}, key=int):
        pairs = [(u["per_case"][case][label]["dice"], u["lcc_dice"][case][label])
                 for u in units for case in u["lcc_dice"] if label in u["lcc_dice"][case]]
        pairs = np.array(pairs, np.float64).reshape(-1, 2)
        plain, reduced = (float(v) for v in pairs.mean(axis=0)) if len(pairs) else (float("nan"), float("nan"))
        classes[label] = {"name": class_names[int(label)], "dice": plain, "dice_lcc": reduced,
                          "cases": len(pairs), "apply": bool(reduced > plain)}
    return {"format": FORMAT_VERSION, "connectivity": 1, "classes": classes}


def write_decision(folder, decision: dict) -> pathlib.Path:
    """Writes ``decision`` as ``folder/postprocessing.json``, atomically."""
    path = pathlib.Path(folder) / DECISION
    atomic.write_json(path, decision)
    return path


def read_decision(folder) -> list[int]:
    """The classes whose largest-component rule a CV folder's decision applies.

    Raises:
        DataError naming the file when there is none (not a finished ``zoo cv`` folder) or it is malformed.
    """
    path = pathlib.Path(folder) / DECISION
    if not path.exists():
        raise errors.DataError(f"{path}: no post-processing decision; it is written by `zoo cv` once every fold "
                               "is scored (rerun `zoo cv` with the same options to finish it)")
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))["classes"]
        return sorted(int(label) for label, entry in classes.items() if entry["apply"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise errors.DataError(f"{path}: not a post-processing decision ({error})") from None
