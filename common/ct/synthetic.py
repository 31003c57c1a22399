"""Synthetic contrast-enhanced abdominal CT cohort, the zoo's embedded default dataset.

Anatomy is laid out in millimetres in SimpleITK's LPS space (+x patient Left,
+y Posterior, +z Superior) around the volume centre, so organ sizes stay
plausible whatever the spacing. Organs are smoothly deformed ellipsoids (a curved
tube for the pancreas) with per-case jitter of size, position, rotation and HU,
so liver, spleen and pancreas are told apart by position and shape, not HU alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from common import atomic

CLASS_NAMES = ("background", "liver", "spleen", "kidney_right", "kidney_left", "stomach", "gallbladder", "pancreas")
_LABEL = {name: index for index, name in enumerate(CLASS_NAMES)}

# Portal-venous-phase-like HU; organs get +-10 HU per case on top of these.
_HU = {
    "air": -1000.0, "gas": -600.0, "fat": -100.0, "visceral_fat": -90.0, "skin": 40.0, "muscle": 45.0,
    "liver": 100.0, "spleen": 120.0, "kidney_cortex": 175.0, "kidney_medulla": 130.0, "pancreas": 80.0,
    "stomach_wall": 45.0, "stomach_fluid": 15.0, "gallbladder": 10.0, "bowel": 30.0,
    "aorta": 180.0, "ivc": 140.0, "bone": 650.0, "cancellous": 420.0, "csf": 15.0,
}
_HU_JITTER = 10.0
_BLUR_MM = 1.2  # partial-volume blur, as a Gaussian sigma in millimetres


@dataclass(frozen=True)
class _Blob:
    """An ellipsoid in millimetres: centre (x, y, z), semi-axes (a, b, c), rotation about z in degrees."""

    center: tuple[float, float, float]
    semi: tuple[float, float, float]
    angle: float = 0.0


# Nominal organ layout (mm, LPS, volume centre at 0). Right = -x, anterior = -y.
_ORGANS = {
    "liver_right_lobe": _Blob((-68.0, 0.0, 25.0), (62.0, 78.0, 70.0), -10.0),
    "liver_left_lobe": _Blob((-8.0, -48.0, 35.0), (48.0, 26.0, 34.0), 15.0),
    "spleen": _Blob((90.0, 40.0, 35.0), (25.0, 55.0, 42.0), 40.0),
    "kidney_right": _Blob((-62.0, 48.0, -18.0), (24.0, 32.0, 40.0), 30.0),
    "kidney_left": _Blob((62.0, 48.0, -10.0), (24.0, 32.0, 40.0), -30.0),
    "stomach": _Blob((45.0, -48.0, 38.0), (44.0, 32.0, 40.0), 20.0),
    "gallbladder": _Blob((-36.0, -42.0, -20.0), (15.0, 18.0, 26.0), 25.0),
}
# Pancreas centreline (quadratic Bezier): head right of the midline, tail at the splenic hilum.
_PANCREAS_CONTROL = ((-32.0, -6.0, -14.0), (8.0, -24.0, -2.0), (74.0, 16.0, 8.0))
_PANCREAS_RADIUS = (15.0, 10.0, 14.0)  # in-plane at the head, in-plane at the tail, craniocaudal


def _check_triplet(name: str, value, integer: bool) -> tuple:
    """Return ``value`` as a 3-tuple of positive numbers or raise ValueError naming ``name``.

    Args:
        name: Argument name used in the error message.
        value: The user-supplied (x, y, z) sequence.
        integer: Whether the entries must be integers (sizes) rather than reals (spacings).
    """
    kind = Integral if integer else Real
    items = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else ()
    if len(items) != 3 or not all(isinstance(v, kind) and not isinstance(v, bool) and np.isfinite(v) and v > 0
                                  for v in items):
        kind_name = "integers" if integer else "numbers"
        raise ValueError(f"{name} must be 3 positive {kind_name} in (x, y, z) order, got {value!r}")
    return tuple(int(v) for v in items) if integer else tuple(float(v) for v in items)


def _check_args(seed, size, spacing, noise_hu, spacing_optional: bool = False) -> tuple:
    """Validate the arguments shared by the public functions; return ``size`` and ``spacing`` as tuples.

    Args:
        seed: Must be a non-negative integer, as numpy's seeding requires.
        size: Voxels along (x, y, z).
        spacing: Millimetres per voxel along (x, y, z).
        noise_hu: Noise standard deviation in HU, >= 0.
        spacing_optional: Whether ``spacing`` may be None.
    """
    if not isinstance(seed, Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(noise_hu, Real) and not isinstance(noise_hu, bool) and np.isfinite(noise_hu) and noise_hu >= 0):
        raise ValueError(f"noise_hu must be a finite number >= 0, got {noise_hu!r}")
    size = _check_triplet("size", size, integer=True)
    if spacing is None and spacing_optional:
        return size, None
    return size, _check_triplet("spacing", spacing, integer=False)


class _Grid:
    """Voxel-centre coordinates in millimetres of a canonical (identity direction) volume.

    Args:
        size: Voxels along (x, y, z).
        spacing: Millimetres per voxel along (x, y, z).
    """

    def __init__(self, size, spacing):
        self.origin = tuple(-(n - 1) / 2.0 * s for n, s in zip(size, spacing))
        self.x, self.y, self.z = (
            (o + s * np.arange(n)).astype(np.float32) for n, s, o in zip(size, spacing, self.origin)
        )
        self.shape = (size[2], size[1], size[0])

    def quadric(self, blob: _Blob) -> np.ndarray:
        """Return the ellipsoid's normalised squared radius at every voxel, shape (z, y, x).

        Args:
            blob: Ellipsoid; 1 on its surface, < 1 inside.
        """
        (cx, cy, cz), (a, b, c) = blob.center, blob.semi
        cos, sin = np.cos(np.radians(blob.angle)), np.sin(np.radians(blob.angle))
        dx, dy = self.x[None, :] - cx, self.y[:, None] - cy
        # Rotation about z keeps the quadric separable: an in-plane part plus a z part.
        in_plane = ((cos * dx + sin * dy) / a) ** 2 + ((-sin * dx + cos * dy) / b) ** 2
        return ((self.z - cz) / c)[:, None, None] ** 2 + in_plane[None]

    def smooth_field(self, rng: np.random.Generator, terms: int = 4, wavelength_mm: float = 160.0) -> np.ndarray:
        """Return a zero-mean, roughly unit-variance field that varies over ~``wavelength_mm``.

        Args:
            rng: Source of the random phases and frequencies.
            terms: Number of separable cosine products summed.
            wavelength_mm: Typical wavelength; defined in millimetres so it ignores spacing.
        """
        field = np.zeros(self.shape, np.float32)
        for _ in range(terms):
            k = 2 * np.pi / (wavelength_mm * rng.uniform(0.6, 1.4, size=3))
            phase = rng.uniform(0, 2 * np.pi, size=3)
            fx, fy, fz = (np.cos(k[i] * axis + phase[i]) for i, axis in enumerate((self.x, self.y, self.z)))
            field += fz[:, None, None] * (fy[:, None] * fx[None, :])[None]
        return field * np.float32(np.sqrt(8.0 / terms))


def _jitter(rng: np.random.Generator, blob: _Blob, shift_mm: float = 6.0) -> _Blob:
    """Return ``blob`` with per-case size (+-15 %), position and rotation variation.

    Args:
        rng: Per-case generator.
        blob: Nominal ellipsoid.
        shift_mm: Largest displacement per axis (a few voxels at ~2.7 mm).
    """
    scale = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, size=3)
    center = np.asarray(blob.center) + rng.uniform(-shift_mm, shift_mm, size=3)
    return _Blob(tuple(center), tuple(np.asarray(blob.semi) * scale), blob.angle + rng.uniform(-12, 12))


def _pancreas_quadric(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    """Return the pancreas's normalised squared distance to its curved centreline, shape (z, y, x).

    Args:
        grid: Volume coordinates.
        rng: Per-case generator (control points, thickness).
    """
    ctrl = np.asarray(_PANCREAS_CONTROL) + rng.uniform(-6.0, 6.0, size=(3, 3))
    r_head, r_tail, r_z = np.asarray(_PANCREAS_RADIUS) * rng.uniform(0.9, 1.15)
    t = np.linspace(0.0, 1.0, 40)[:, None]
    points = (1 - t) ** 2 * ctrl[0] + 2 * (1 - t) * t * ctrl[1] + t**2 * ctrl[2]
    radius = r_head + (r_tail - r_head) * t[:, 0]
    q = np.full(grid.shape, np.inf, np.float32)
    # A union of ellipsoids along the curve; each is evaluated only in its bounding box for speed.
    for (px, py, pz), r in zip(points, radius):
        box = [np.flatnonzero(np.abs(axis - c) < extent) for axis, c, extent in
               ((grid.z, pz, r_z), (grid.y, py, r), (grid.x, px, r))]
        if any(len(b) == 0 for b in box):
            continue
        sz, sy, sx = (slice(b[0], b[-1] + 1) for b in box)
        local = (((grid.z[sz] - pz) / r_z) ** 2)[:, None, None] + (
            ((grid.y[sy, None] - py) ** 2 + (grid.x[None, sx] - px) ** 2) / r**2)[None]
        np.minimum(q[sz, sy, sx], local, out=q[sz, sy, sx])
    return q


def _paint_body(grid: _Grid, rng: np.random.Generator, hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paint the body wall layers and back muscles; return the body and abdominal-cavity masks.

    Args:
        grid: Volume coordinates.
        rng: Per-case generator (body size).
        hu: HU volume painted in place.
    """
    a, b = 150.0 * rng.uniform(0.95, 1.05), 112.0 * rng.uniform(0.95, 1.05)
    layers = [(0.0, "skin"), (3.0, "fat"), (16.0 + rng.uniform(-4, 6), "muscle"), (28.0, "visceral_fat")]
    masks = []
    for depth, tissue in layers:
        inner = _Blob((0.0, 0.0, 0.0), (a - depth, b - depth, 1e9))
        masks.append(grid.quadric(inner) < 1.0)
        hu[masks[-1]] = _HU[tissue]
    # Paraspinal and psoas muscles frame the spine, as in every abdominal slice.
    for side in (-1, 1):
        for blob in (_Blob((side * 32.0, 82.0, 0.0), (24.0, 20.0, 1e9)),
                     _Blob((side * 30.0, 38.0, -60.0), (13.0, 15.0, 60.0), side * 20.0)):
            hu[(grid.quadric(blob) < 1.0) & masks[0]] = _HU["muscle"]
    return masks[0], masks[-1]


def _paint_bowel(grid: _Grid, rng: np.random.Generator, hu: np.ndarray, cavity: np.ndarray) -> None:
    """Paint unlabelled bowel loops (wall, fluid, gas) in the lower anterior abdomen and the duodenum.

    Args:
        grid: Volume coordinates.
        rng: Per-case generator.
        hu: HU volume painted in place.
        cavity: Abdominal-cavity mask the loops are confined to.
    """
    loops = [_Blob((rng.uniform(-90, 90), rng.uniform(-80, 10), rng.uniform(-100, -25)),
                   tuple(rng.uniform((12, 10, 15), (22, 18, 35))), rng.uniform(0, 180)) for _ in range(7)]
    loops.append(_jitter(rng, _Blob((-55.0, -10.0, -30.0), (12.0, 14.0, 30.0)), 4.0))  # duodenum
    for blob in loops:
        q = grid.quadric(blob)
        hu[(q < 1.0) & cavity] = _HU["bowel"]
        lumen = (q < 0.55) & cavity
        hu[lumen] = _HU["gas"] - 200.0 if rng.uniform() < 0.35 else _HU["stomach_fluid"]


def _paint_organs(grid: _Grid, rng: np.random.Generator, hu: np.ndarray, label: np.ndarray,
                  cavity: np.ndarray) -> None:
    """Paint the seven labelled organs; later organs win so that each voxel has one class.

    Args:
        grid: Volume coordinates.
        rng: Per-case generator.
        hu: HU volume painted in place.
        label: Label volume painted in place.
        cavity: Abdominal-cavity mask the organs are confined to.
    """
    fields = [grid.smooth_field(rng, wavelength_mm=120.0) for _ in range(2)]
    shift = {name: rng.uniform(-_HU_JITTER, _HU_JITTER) for name in CLASS_NAMES[1:]}

    def paint(q: np.ndarray, organ: str, tissue: str, field: int = 0, limit: float = 1.0) -> np.ndarray:
        mask = (q < limit * (1.0 + 0.12 * fields[field])) & cavity
        hu[mask], label[mask] = _HU[tissue] + shift[organ], _LABEL[organ]
        return mask

    liver = _jitter(rng, _ORGANS["liver_right_lobe"])
    left_lobe = _jitter(rng, _ORGANS["liver_left_lobe"])
    paint(np.minimum(grid.quadric(liver), grid.quadric(left_lobe)), "liver", "liver")
    paint(grid.quadric(_jitter(rng, _ORGANS["spleen"])), "spleen", "spleen", 1)
    stomach = _jitter(rng, _ORGANS["stomach"])
    q = grid.quadric(stomach)
    paint(q, "stomach", "stomach_wall", 1)
    lumen = paint(q, "stomach", "stomach_fluid", 1, limit=0.7)
    # Gas floats to the non-dependent (anterior, small y) part of the lumen in a supine patient.
    gas_level = stomach.center[1] - stomach.semi[1] * rng.uniform(0.0, 0.35)
    hu[lumen & (grid.y[None, :, None] < gas_level)] = _HU["gas"] + rng.uniform(-50, 50)
    paint(_pancreas_quadric(grid, rng), "pancreas", "pancreas", 0)
    for side in ("kidney_right", "kidney_left"):
        q = grid.quadric(_jitter(rng, _ORGANS[side], 4.0))
        paint(q, side, "kidney_cortex", 1)
        paint(q, side, "kidney_medulla", 1, limit=0.45)
    paint(grid.quadric(_jitter(rng, _ORGANS["gallbladder"], 4.0)), "gallbladder", "gallbladder", 0)


def _paint_skeleton_and_vessels(grid: _Grid, rng: np.random.Generator, hu: np.ndarray, label: np.ndarray,
                                body: np.ndarray) -> None:
    """Paint vertebra, ribs, aorta and IVC last, clearing any organ label under them.

    Args:
        grid: Volume coordinates.
        rng: Per-case generator.
        hu: HU volume painted in place.
        label: Label volume painted in place.
        body: Body mask the ribs are confined to.
    """
    dy = rng.uniform(-5, 5)
    # Columns through the whole slab, (x, y, a, b) in mm: vertebral body, neural arch, spinous process, canal.
    for (x, y, a, b), tissue in [((0, 42, 19, 17), "bone"), ((0, 42, 15, 13), "cancellous"),
                                 ((0, 70, 15, 13), "bone"), ((0, 88, 5, 13), "bone"), ((0, 67, 8, 8), "csf"),
                                 ((12, 14, 11, 11), "aorta"), ((-22, 16, 13, 10), "ivc")]:
        mask = grid.quadric(_Blob((x, y + dy, 0.0), (a, b, 1e9))) < 1.0
        hu[mask], label[mask] = _HU[tissue], 0
    # Rib cross-sections in the muscle layer, present in the upper slices only.
    for angle in (-160, -135, -45, -20, 10, 35, 60, 120, 145, 170):
        t = np.radians(angle + rng.uniform(-6, 6))
        center = (128.0 * np.cos(t), 95.0 * np.sin(t), rng.uniform(40, 80))
        mask = (grid.quadric(_Blob(center, (6.0, 5.0, 60.0))) < 1.0) & body
        hu[mask], label[mask] = _HU["bone"] - 100.0, 0


def make_phantom(seed: int, size=(128, 128, 32), spacing=(2.7, 2.7, 5.0),
                 noise_hu: float = 20.0) -> tuple[sitk.Image, sitk.Image]:
    """Return one synthetic abdominal CT (float32 HU) and its organ label map (uint8, CLASS_NAMES order).

    Both images have identity direction, so the array (z, y, x) is canonical LPS:
    patient right at small x, anterior at small y, superior at large z. The
    volume centre sits at the physical origin (0, 0, 0).

    Args:
        seed: Integer seed; the same seed, size and spacing give identical arrays.
        size: Voxels along (x, y, z).
        spacing: Millimetres per voxel along (x, y, z); anatomy is laid out in mm.
        noise_hu: Standard deviation of the additive Gaussian noise in HU (>= 0).

    Example:
        >>> image, label = make_phantom(3, size=(48, 48, 8))
        >>> image.GetSize(), label.GetPixelIDTypeAsString()
        ((48, 48, 8), '8-bit unsigned integer')
    """
    size, spacing = _check_args(seed, size, spacing, noise_hu)
    rng = np.random.default_rng(int(seed))
    grid = _Grid(size, spacing)
    hu = np.full(grid.shape, _HU["air"], np.float32)
    label = np.zeros(grid.shape, np.uint8)
    body, cavity = _paint_body(grid, rng, hu)
    _paint_bowel(grid, rng, hu, cavity)
    _paint_organs(grid, rng, hu, label, cavity)
    _paint_skeleton_and_vessels(grid, rng, hu, label, body)
    hu += np.float32(8.0) * grid.smooth_field(rng) * body  # mild scanner inhomogeneity, tissue only
    hu = ndimage.gaussian_filter(hu, [_BLUR_MM / s for s in spacing[::-1]], mode="nearest")
    hu += rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)
    image, label_image = sitk.GetImageFromArray(hu), sitk.GetImageFromArray(label)
    for img in (image, label_image):
        img.SetSpacing(spacing)
        img.SetOrigin(grid.origin)
    return image, label_image


def _case_plan(seed: int, index: int, spacing) -> tuple[int, tuple[float, float, float]]:
    """Return the make_phantom seed and spacing of case ``index`` of the cohort drawn with ``seed``.

    Args:
        seed: Cohort seed.
        index: Case number.
        spacing: Fixed (x, y, z) spacing, or None to draw an anisotropic one per case.
    """
    rng = np.random.default_rng([seed, index])
    case_seed = int(rng.integers(2**31 - 1))
    in_plane, through_plane = round(float(rng.uniform(2.5, 3.0)), 3), float(rng.choice([3.0, 4.0, 5.0]))
    return case_seed, tuple(spacing) if spacing is not None else (in_plane, in_plane, through_plane)


def _flip_to_ras_storage(image: sitk.Image) -> sitk.Image:
    """Return ``image`` stored with direction diag(-1, -1, 1), the same anatomy in physical space.

    Args:
        image: Canonical image with identity direction.
    """
    flipped = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[:, ::-1, ::-1].copy())
    flipped.SetSpacing(image.GetSpacing())
    flipped.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    # The new first voxel is the old last one along x and y, so its physical point becomes the origin.
    nx, ny, _ = image.GetSize()
    flipped.SetOrigin(image.TransformIndexToPhysicalPoint((nx - 1, ny - 1, 0)))
    return flipped


def _write_atomic(image: sitk.Image, path: str) -> None:
    """Writes a volume through ``atomic.atomic_path`` (the suffix, hence the format, is kept)."""
    with atomic.atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=str(path).endswith(".gz"))


def write_cohort(out_dir, num_cases: int = 12, seed: int = 0, size=(128, 128, 32), spacing=None,
                 noise_hu: float = 20.0) -> list[str]:
    """Write a cohort in the zoo's layout, ``images/case_XXX.nii.gz`` + ``labels/case_XXX.nii.gz``; return case ids.

    Case i is ``make_phantom`` with a seed drawn from ``np.random.default_rng([seed, i])``.
    With ``spacing=None`` each case draws an in-plane spacing in [2.5, 3.0] mm and a
    slice spacing in {3, 4, 5} mm. Odd cases are stored with direction diag(-1, -1, 1)
    (RAS-like, as many NIfTI files are); read them with ``sitk.DICOMOrient(img, "LPS")``
    to get the canonical array.

    Args:
        out_dir: Output folder; created if missing.
        num_cases: Number of cases (>= 1).
        seed: Cohort seed; the same seed gives identical files.
        size: Voxels along (x, y, z).
        spacing: Fixed (x, y, z) spacing in mm, or None to draw one per case.
        noise_hu: Gaussian noise standard deviation in HU.

    Example:
        >>> import tempfile
        >>> write_cohort(tempfile.mkdtemp(), num_cases=2, size=(32, 32, 4))
        ['case_000', 'case_001']
    """
    if not isinstance(num_cases, Integral) or isinstance(num_cases, bool) or num_cases < 1:
        raise ValueError(f"num_cases must be an integer >= 1, got {num_cases!r}")
    size, spacing = _check_args(seed, size, spacing, noise_hu, spacing_optional=True)
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    case_ids = []
    for index in range(num_cases):
        case_seed, case_spacing = _case_plan(seed, index, spacing)
        image, label = make_phantom(case_seed, size, case_spacing, noise_hu)
        if index % 2 == 1:
            image, label = _flip_to_ras_storage(image), _flip_to_ras_storage(label)
        case_id = f"case_{index:03d}"
        _write_atomic(image, os.path.join(out_dir, "images", case_id + ".nii.gz"))
        _write_atomic(label, os.path.join(out_dir, "labels", case_id + ".nii.gz"))
        case_ids.append(case_id)
    # The Decathlon's "labels" (index -> class name), so `zoo prepare` needs no --num-classes.
    atomic.write_json(os.path.join(out_dir, "dataset.json"), {
        "name": "synthetic abdominal CT", "seed": seed,
        "labels": {str(i): name for i, name in enumerate(CLASS_NAMES)},
    })
    return case_ids
