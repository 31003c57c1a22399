"""Synthetic CT cohort in which telling some organs apart needs long-range context.

What it is for: the U-Transformer paper (000) claims that global attention (MHSA at
the bottleneck, MHCA in the skips) helps tell organs apart by where they lie relative
to the other organs. This cohort is built so that claim can be tested. Each case is the
``common.ct.synthetic`` phantom of the same seed: the same fixed layout, the same
organs and the same label values (``CLASS_NAMES``), so the 8-class models apply. Two
things change:

* Distractors: ``distractors`` blobs per case, labelled background, that look locally
  exactly like a kidney or the spleen: that case's organ HU (cortex and medulla for a
  kidney), the same blur, noise and inhomogeneity, the same outline and rotation. They
  are the organ's own jittered ellipsoid scaled down (``_LookAlike.scale``,
  ``_CRANIOCAUDAL_SCALE``), so every axial section of one is a section the organ itself
  shows nearer a pole. They lie where that organ never is: in the lower anterior
  abdomen, below the stomach and in front of the kidneys (the one space this phantom
  leaves free; a spleen-like one also in the right flank below the liver when the slab
  reaches it), at least ``_MARGIN_MM`` from every organ, vessel, bone, muscle and other
  distractor, inside the abdominal cavity. Only their position relative to the spine,
  the real kidneys and the liver tells them from the organ. They share slices with the
  real kidneys.
* A low-contrast pancreas: 35 +- 3 HU inside an irregular sheath of 30 HU bowel-like
  tissue, 8-20 mm thick, that replaces the fat around it (``_PANCREAS_HU``,
  ``_SHEATH_MM``). Its own intensity hardly marks it; its neighbours do: the stomach in
  front, the aorta and IVC behind, the spleen at its tail, the duodenum at its head.

Study design: train the plain U-Net and the U-Transformer with one protocol
(``zoo cv``) on a ``cue_hu=0`` cohort. The hypothesis is that the U-Transformer labels
fewer distractor voxels as the organ they imitate (``distractors/`` stores that
organ's label on every distractor voxel) and has a higher kidney, spleen and pancreas
Dice. The positive control is the same cohort with ``cue_hu`` set (e.g. 60): every
distractor shifted by that many HU can be told apart locally. So a U-Net trained on it
must make significantly fewer distractor errors than the same U-Net on the cue-free
cohort. If it does not, the protocol cannot see an effect of this kind, and the study
says "cannot tell". Cohorts of one seed with and without the cue are paired. They have
the same anatomy, distractor positions, noise and labels; only the distractor HU
differs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from common import atomic
from common.ct import synthetic, volumes
from common.ct.synthetic import CLASS_NAMES

# One definition of each fact: the phantom's tissue HU, label values, organ layout and geometry helpers.
_HU, _LABEL, _ORGANS = synthetic._HU, synthetic._LABEL, synthetic._ORGANS
_Blob, _Grid, _jitter = synthetic._Blob, synthetic._Grid, synthetic._jitter

NOISE_HU = 20.0  # write_cohort's default noise
MAX_DISTRACTORS = 2  # what the free space holds in every case (a third fails to fit in up to ~10 % of cases)
_MARGIN_MM = 5.0  # least gap (two voxels) between a distractor and any organ, vessel, bone or other distractor
_TRIES = 100  # candidate positions per distractor
_LEAST_ROOM_MM = 6.0  # a candidate centre is at least this plus the margin from anything not free
_INHOMOGENEITY_HU = 8.0  # make_phantom's smooth scanner bias, the same in HU
# A pancreas like unenhanced bowel; its sheath is bowel wall (30 HU): a 2-8 HU contrast, far under the noise.
_PANCREAS_HU, _PANCREAS_JITTER = 35.0, 3.0
_SHEATH_MM = (8.0, 20.0)  # least and most sheath thickness around the pancreas; the sheath is irregular
# A distractor is its organ's jittered ellipsoid scaled in-plane (per organ, below) and craniocaudally
# (here). Every axial section of a smaller ellipsoid is a section the organ itself shows nearer a pole,
# so each slice stays locally indistinguishable; the smaller sizes fit below the stomach and the liver.
_CRANIOCAUDAL_SCALE = (0.3, 0.6)


@dataclass(frozen=True)
class _LookAlike:
    """How distractors imitate one organ.

    Attributes:
        organs: Label templates; one is drawn per distractor (its layout blob and its HU).
        tissues: (tissue, quadric limit) pairs, as ``_paint_organs`` paints the organ.
        scale: In-plane scale range of the organ's ellipsoid.
        boxes: Where the centre is drawn: (x, y, z) ranges in mm, LPS (right = -x, anterior = -y).
    """

    organs: tuple
    tissues: tuple
    scale: tuple
    boxes: tuple


# Below the stomach and liver, in front of the kidneys: where neither a kidney nor the spleen ever is.
_ANTERIOR_LOWER = ((-30.0, 100.0), (-75.0, 0.0), (-70.0, -5.0))
_IMITATED = (
    # The real kidneys lie posterior (y ~ +48), beside the spine.
    _LookAlike(("kidney_right", "kidney_left"), (("kidney_cortex", 1.0), ("kidney_medulla", 0.45)), (0.6, 1.0),
               (_ANTERIOR_LOWER,)),
    # The real spleen lies posterior-lateral left, high; the right flank below the liver is the mirror place.
    _LookAlike(("spleen",), (("spleen", 1.0),), (0.4, 0.75),
               (_ANTERIOR_LOWER, ((-100.0, -60.0), (-40.0, 10.0), (-80.0, -40.0)))),
)
# Where a distractor may lie: loose tissue in the cavity, never an organ, vessel, bone or muscle.
_LOOSE_TISSUE_HU = (_HU["visceral_fat"], _HU["bowel"], _HU["stomach_fluid"], _HU["gas"] - 200.0)


def _check_context_args(distractors, cue_hu) -> None:
    """Raise ValueError naming ``distractors`` or ``cue_hu`` when either is out of range."""
    if not isinstance(distractors, Integral) or isinstance(distractors, bool) or \
            not 0 <= distractors <= MAX_DISTRACTORS:
        raise ValueError(f"distractors must be an integer in [0, {MAX_DISTRACTORS}], got {distractors!r}")
    if not (isinstance(cue_hu, Real) and not isinstance(cue_hu, bool) and np.isfinite(cue_hu)):
        raise ValueError(f"cue_hu must be a finite number of HU, got {cue_hu!r}")


def _organ_shift(hu: np.ndarray, label: np.ndarray, organ: str, tissue: str) -> float:
    """Return this case's HU offset of ``organ``: its brightest painted value minus the table's.

    Read before blur and noise, when every organ voxel holds its tissue's exact value; 0
    (the table value) when the organ lies outside the slab.
    """
    values = hu[label == _LABEL[organ]]
    return float(values.max()) - _HU[tissue] if values.size else 0.0


def _in_boxes(grid: _Grid, boxes) -> np.ndarray:
    """Return the voxels whose centres lie in any of ``boxes`` ((x, y, z) ranges in mm), shape (z, y, x)."""
    inside = np.zeros(grid.shape, bool)
    for (x0, x1), (y0, y1), (z0, z1) in boxes:
        inside |= (((z0 <= grid.z) & (grid.z <= z1))[:, None, None] & ((y0 <= grid.y) & (grid.y <= y1))[None, :, None]
                   & ((x0 <= grid.x) & (grid.x <= x1))[None, None, :])
    return inside


def _place(grid: _Grid, rng: np.random.Generator, look: _LookAlike, template: _Blob, free: np.ndarray,
           bound: np.ndarray, spacing) -> np.ndarray | None:
    """Return the quadric of a scaled, jittered ``template`` that fits in ``free``, or None if none does.

    Args:
        grid: Volume coordinates.
        rng: Distractor generator.
        look: The imitated organ's scale range and boxes.
        template: Its nominal ellipsoid (shape and rotation kept, centre replaced).
        free: Voxels a distractor may cover.
        bound: The organ painter's boundary, ``1 + 0.12 * field``: the same irregular outline.
        spacing: Millimetres per voxel along (x, y, z).
    """
    # Centres are drawn among the voxels of the boxes with some room around them, so few tries miss.
    room = ndimage.distance_transform_edt(free, sampling=spacing[::-1])
    centres = np.argwhere(_in_boxes(grid, look.boxes) & (room >= _MARGIN_MM + _LEAST_ROOM_MM))
    for _ in range(_TRIES if len(centres) else 0):
        iz, iy, ix = centres[rng.integers(len(centres))]
        scale = rng.uniform(*look.scale)
        semi = np.asarray(template.semi) * (scale, scale, scale * rng.uniform(*_CRANIOCAUDAL_SCALE))
        blob = _jitter(rng, _Blob((grid.x[ix], grid.y[iy], grid.z[iz]), tuple(semi), template.angle), 0.0)
        grown = _Blob(blob.center, tuple(np.asarray(blob.semi) + _MARGIN_MM), blob.angle)
        if not ((grid.quadric(grown) < bound) & ~free).any():
            return grid.quadric(blob)
    return None


def _paint_distractors(grid: _Grid, rng: np.random.Generator, hu: np.ndarray, label: np.ndarray,
                       cavity: np.ndarray, spacing, count: int, cue_hu: float) -> np.ndarray:
    """Paint ``count`` unlabelled organ look-alikes away from the organs; return their map.

    The map holds, on each distractor voxel, the label of the organ it imitates. Every
    random draw is independent of ``cue_hu``, so the cue changes the HU and nothing else.

    Raises:
        ValueError: naming ``distractors`` when they do not all fit in the field of view.
    """
    free = cavity & (label == 0) & np.isin(hu, np.float32(_LOOSE_TISSUE_HU))
    bound = 1.0 + 0.12 * grid.smooth_field(rng, wavelength_mm=120.0)  # _paint_organs' irregular outline
    decoys = np.zeros(grid.shape, np.uint8)
    for index in range(count):
        look = _IMITATED[index % len(_IMITATED)]
        organ = look.organs[rng.integers(len(look.organs))]
        q = _place(grid, rng, look, _ORGANS[organ], free & (decoys == 0), bound, spacing)
        if q is None:
            raise ValueError(f"distractors: only {index} of {count} fit {_MARGIN_MM:g} mm clear of the organs in "
                             f"this {grid.shape[::-1]} volume; ask for fewer or widen the field of view")
        shift = _organ_shift(hu, label, organ, look.tissues[0][0])
        for tissue, limit in look.tissues:
            mask = q < limit * bound
            hu[mask] = _HU[tissue] + shift + cue_hu
            decoys[mask] = _LABEL[organ]
    return decoys


def _paint_pancreas_contrast(grid: _Grid, rng: np.random.Generator, hu: np.ndarray, label: np.ndarray,
                             spacing) -> None:
    """Repaint the pancreas near bowel HU and wrap it in a bowel-like sheath of irregular thickness.

    The sheath replaces only the fat around the pancreas, so the pancreas borders soft
    tissue of nearly its own HU on every side where no organ or vessel does.
    """
    pancreas = label == _LABEL["pancreas"]
    hu[pancreas] = _PANCREAS_HU + rng.uniform(-_PANCREAS_JITTER, _PANCREAS_JITTER)
    if not pancreas.any():
        return
    distance = ndimage.distance_transform_edt(~pancreas, sampling=spacing[::-1])
    low, high = _SHEATH_MM
    thickness = np.clip((low + high) / 2 + (high - low) / 3 * grid.smooth_field(rng, wavelength_mm=50.0), low, high)
    sheath = (distance <= thickness) & (label == 0) & (hu == np.float32(_HU["visceral_fat"]))
    hu[sheath] = _HU["bowel"]


def make_context_phantom(seed: int, size=(128, 128, 24), spacing=(2.7, 2.7, 5.0), noise_hu: float = NOISE_HU,
                         distractors: int = 2, cue_hu: float = 0.0) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """Return one case: CT (float32 HU), organ labels (uint8, CLASS_NAMES) and the distractor map (uint8).

    The anatomy, the labels and the noise are ``make_phantom``'s for the same arguments (its
    random stream is replayed unchanged); the distractors and the pancreas contrast draw
    from a second stream, ``default_rng([seed, 2])``. The distractor map holds the label
    of the imitated organ on distractor voxels and 0 elsewhere. Same canonical LPS
    geometry as ``make_phantom``.

    Args:
        seed: Integer seed; the same arguments give identical arrays.
        size: Voxels along (x, y, z).
        spacing: Millimetres per voxel along (x, y, z).
        noise_hu: Standard deviation of the additive Gaussian noise in HU (>= 0).
        distractors: Organ look-alikes per case, in [0, MAX_DISTRACTORS]; they alternate kidney, spleen.
        cue_hu: HU added to every distractor voxel; 0 makes them locally identical to the organ.

    Example:
        >>> image, label, decoys = make_context_phantom(3, size=(48, 48, 8), spacing=(7.0, 7.0, 10.0))
        >>> sorted(set(sitk.GetArrayFromImage(decoys).ravel().tolist()))
        [0, 2, 4]
    """
    size, spacing = synthetic._check_args(seed, size, spacing, noise_hu)
    _check_context_args(distractors, cue_hu)
    rng, extra = np.random.default_rng(int(seed)), np.random.default_rng([int(seed), 2])
    grid = _Grid(size, spacing)
    hu = np.full(grid.shape, _HU["air"], np.float32)
    label = np.zeros(grid.shape, np.uint8)
    body, cavity = synthetic._paint_body(grid, rng, hu)
    synthetic._paint_bowel(grid, rng, hu, cavity)
    synthetic._paint_organs(grid, rng, hu, label, cavity)
    synthetic._paint_skeleton_and_vessels(grid, rng, hu, label, body)
    decoys = _paint_distractors(grid, extra, hu, label, cavity, spacing, distractors, float(cue_hu))
    _paint_pancreas_contrast(grid, extra, hu, label, spacing)
    # From here on as make_phantom: inhomogeneity, partial-volume blur, noise.
    hu += np.float32(_INHOMOGENEITY_HU) * grid.smooth_field(rng) * body
    hu = ndimage.gaussian_filter(hu, [synthetic._BLUR_MM / s for s in spacing[::-1]], mode="nearest")
    hu += rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)
    images = tuple(sitk.GetImageFromArray(array) for array in (hu, label, decoys))
    for image in images:
        image.SetSpacing(spacing)
        image.SetOrigin(grid.origin)
    return images


def write_context_cohort(out_dir, num_cases: int = 12, seed: int = 0, size=(128, 128, 24), spacing=None,
                         distractors: int = 2, cue_hu: float = 0.0, noise_hu: float = NOISE_HU) -> list[str]:
    """Write a context cohort in ``write_cohort``'s layout, plus ``distractors/``; return the case ids.

    ``images/case_XXX.nii.gz`` and ``labels/case_XXX.nii.gz`` as ``write_cohort`` writes them
    (same case seeds and spacings, odd cases stored RAS-like, atomic writes, a
    ``dataset.json`` with CLASS_NAMES), so ``zoo prepare`` and ``zoo cv`` take the folder
    unchanged. ``distractors/case_XXX.nii.gz`` holds each distractor voxel's imitated-organ
    label, for scoring how often a model takes a distractor for the organ.

    Args:
        out_dir: Output folder; created if missing.
        num_cases: Number of cases (>= 1).
        seed: Cohort seed; the same seed gives the same anatomy and distractor positions whatever ``cue_hu``.
        size: Voxels along (x, y, z).
        spacing: Fixed (x, y, z) spacing in mm, or None to draw one per case as ``write_cohort`` does.
        distractors: Organ look-alikes per case, in [0, MAX_DISTRACTORS].
        cue_hu: HU added to every distractor (the study's positive control); 0 hides them locally.
        noise_hu: Standard deviation of the additive Gaussian noise in HU (>= 0).

    Example:
        >>> import tempfile
        >>> write_context_cohort(tempfile.mkdtemp(), num_cases=2, size=(48, 48, 8), spacing=(7.0, 7.0, 10.0))
        ['case_000', 'case_001']
    """
    if not isinstance(num_cases, Integral) or isinstance(num_cases, bool) or num_cases < 1:
        raise ValueError(f"num_cases must be an integer >= 1, got {num_cases!r}")
    size, spacing = synthetic._check_args(seed, size, spacing, noise_hu, spacing_optional=True)
    _check_context_args(distractors, cue_hu)
    folders = ("images", "labels", volumes.DISTRACTORS_DIR)
    for sub in folders:
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    case_ids = []
    for index in range(num_cases):
        case_seed, case_spacing = synthetic._case_plan(seed, index, spacing)
        images = make_context_phantom(case_seed, size, case_spacing, noise_hu, distractors, cue_hu)
        case_id = f"case_{index:03d}"
        for sub, volume in zip(folders, images):
            volume = synthetic._flip_to_ras_storage(volume) if index % 2 == 1 else volume
            synthetic._write_atomic(volume, os.path.join(out_dir, sub, case_id + ".nii.gz"))
        case_ids.append(case_id)
    atomic.write_json(os.path.join(out_dir, "dataset.json"), {
        "name": "synthetic abdominal CT with context distractors", "seed": seed,
        "labels": {str(i): name for i, name in enumerate(CLASS_NAMES)},
        "distractors": distractors, "cue_hu": float(cue_hu), "noise_hu": float(noise_hu),
        "distractor_folder": "distractors/: label of the organ each background voxel imitates, 0 elsewhere",
    })
    return case_ids
