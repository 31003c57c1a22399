"""Synthetic LiTS-like cohort: the embedded phantom's liver with hypodense tumours, in LiTS' file layout.

The EAS U-Net paper (001) segments the liver on LiTS. ``write_lits_cohort`` writes
the ``common.ct.synthetic`` phantom of each case seed with only its liver labelled
and 0 to ``max_tumours`` darker lesions inside it, as ``volume-N.nii`` and
``segmentation-N.nii``, so ``zoo prepare --preset lits`` reads it as it reads LiTS.
"""

from __future__ import annotations

import os
from numbers import Integral

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from common.ct import synthetic

LITS_LABELS = ("background", "liver", "tumour")  # the LiTS challenge's label values 0, 1, 2
_TUMOUR_HU_DROP = (35.0, 60.0)  # hypodense lesions in the portal-venous phase


def _paint_tumours(image: sitk.Image, liver: np.ndarray, rng: np.random.Generator,
                   count: int) -> tuple[np.ndarray, np.ndarray]:
    """Darkens ``count`` ellipsoidal lesions inside the liver; returns (hu, LiTS label 0/1/2)."""
    hu = sitk.GetArrayFromImage(image)
    label = liver.astype(np.uint8)
    spacing = np.array(image.GetSpacing()[::-1])  # (z, y, x) mm
    inside = np.argwhere(ndimage.binary_erosion(liver, iterations=2))
    if inside.size == 0:
        return hu, label
    zz, yy, xx = np.indices(liver.shape, dtype=np.float32)
    for _ in range(count):
        centre = inside[rng.integers(len(inside))]
        radius = rng.uniform(6.0, 16.0, size=3)  # mm
        distance = sum(((axis - c) * s / r) ** 2 for axis, c, s, r in zip((zz, yy, xx), centre, spacing, radius))
        lesion = (distance <= 1.0) & liver
        soft = ndimage.gaussian_filter(lesion.astype(np.float32), synthetic._BLUR_MM / spacing)
        hu -= np.float32(rng.uniform(*_TUMOUR_HU_DROP)) * soft
        label[lesion] = 2
    return hu, label


def write_lits_cohort(out_dir, num_cases: int = 12, seed: int = 0, size=(128, 128, 32), spacing=None,
                      noise_hu: float = 20.0, max_tumours: int = 3) -> list[str]:
    """Write a cohort in the LiTS challenge's layout: ``volume-N.nii`` + ``segmentation-N.nii``.

    Each case is the ``synthetic.write_cohort`` phantom of the same seed and index with its
    liver kept (label 1), 0 to ``max_tumours`` hypodense lesions inside the
    liver (label 2), and every other organ unlabelled, as in LiTS. Odd cases are
    stored RAS-like, as ``synthetic.write_cohort`` does. Returns the case ids
    (``volume-N``, as ``common.ct.volumes.find_cases`` names them).

    Example:
        >>> import tempfile
        >>> write_lits_cohort(tempfile.mkdtemp(), num_cases=2, size=(32, 32, 4))
        ['volume-0', 'volume-1']
    """
    if not isinstance(num_cases, Integral) or isinstance(num_cases, bool) or num_cases < 1:
        raise ValueError(f"num_cases must be an integer >= 1, got {num_cases!r}")
    if not isinstance(max_tumours, Integral) or isinstance(max_tumours, bool) or max_tumours < 0:
        raise ValueError(f"max_tumours must be an integer >= 0, got {max_tumours!r}")
    size, spacing = synthetic._check_args(seed, size, spacing, noise_hu, spacing_optional=True)
    os.makedirs(out_dir, exist_ok=True)
    case_ids = []
    for index in range(num_cases):
        case_seed, case_spacing = synthetic._case_plan(seed, index, spacing)
        image, organs = synthetic.make_phantom(case_seed, size, case_spacing, noise_hu)
        rng = np.random.default_rng([case_seed, 1])
        liver = sitk.GetArrayFromImage(organs) == synthetic._LABEL["liver"]
        hu, label = _paint_tumours(image, liver, rng, int(rng.integers(max_tumours + 1)))
        ct, segmentation = sitk.GetImageFromArray(hu), sitk.GetImageFromArray(label)
        for volume in (ct, segmentation):
            volume.CopyInformation(image)
        if index % 2 == 1:
            ct, segmentation = synthetic._flip_to_ras_storage(ct), synthetic._flip_to_ras_storage(segmentation)
        synthetic._write_atomic(ct, os.path.join(out_dir, f"volume-{index}.nii"))
        synthetic._write_atomic(segmentation, os.path.join(out_dir, f"segmentation-{index}.nii"))
        case_ids.append(f"volume-{index}")
    return case_ids
