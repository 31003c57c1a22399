"""Checks that a regenerated cohort is the one saved units were scored on.

    python verify_cohort.py COHORT ARM      e.g. S/cohort docs/studies/u_transformer/e60/unet

Each organ's reference voxel count R in COHORT/labels must make TP = recall * R and P = TP / precision
whole numbers, and 2 TP / (P + R) the saved Dice, for every case and class of every unit of ARM; the exit
status is 1 when any fails. The check can fail: against the cohort of `--seed 1` (same command, other
seed) all 420 of the baseline arm's scores fail it.
"""

import json
import math
import pathlib
import sys

import numpy as np
import SimpleITK as sitk


def voxel_counts(cohort: pathlib.Path, case: str) -> np.ndarray:
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / "labels" / f"{case}.nii.gz")))
    return np.bincount(labels.ravel())


def consistent(scores: dict, reference_voxels: int) -> bool:
    true_positives = scores["recall"] * reference_voxels
    predicted_voxels = true_positives / scores["precision"]
    dice = 2 * true_positives / (predicted_voxels + reference_voxels)
    whole = all(abs(count - round(count)) < 1e-6 for count in (true_positives, predicted_voxels))
    return whole and abs(dice - scores["dice"]) < 1e-9


def main(cohort: pathlib.Path, arm: pathlib.Path) -> int:
    counts, checked, failed = {}, 0, 0
    for path in sorted(arm.glob("*/metrics.json")):
        for case, per_class in json.loads(path.read_text())["per_case"].items():
            counts.setdefault(case, voxel_counts(cohort, case))
            for label, scores in per_class.items():
                reference = counts[case][int(label)] if int(label) < len(counts[case]) else 0
                if reference == 0 or not scores["recall"] or math.isnan(scores["recall"]):
                    continue  # nothing found or nothing to find: no count to check
                checked += 1
                failed += not consistent(scores, int(reference))
    print(f"{arm}: {checked} case-class scores checked, {failed} inconsistent with {cohort}")
    return 1 if failed or not checked else 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])))
