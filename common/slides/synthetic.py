"""Synthetic whole slides: pyramidal tiled TIFFs of five tissue textures with QuPath annotations.

``write_cohort(out, slides_per_lab=3)`` writes::

    OUT/slides.json              {"slides": {slide_id: {"lab": "A"|"B", ...}}, "classes": [...]}
    OUT/<slide_id>.tiff          tiled multi-resolution TIFF (downsamples 1, 4, 16, ...), 40x, 0.25 um/px
    OUT/<slide_id>.geojson       QuPath-style FeatureCollection of classified polygons

Tissue is built in optical density and turned into RGB by Beer-Lambert with
per-laboratory haematoxylin and eosin colour vectors, so lab "B" differs from
lab "A" in stain colour and intensity only: the domain shift TRI-AL adapts to.
Each class has its own texture (round red cells, smudged cauterised tissue,
parallel fibres with long nuclei, wavy sparse fibres, dense nuclei), and the
regions are large enough that the 2.5x tile sees neighbouring tissue.
Annotations are rough polygons inside regions, and not every region is
annotated, as in the paper's protocol (section II.A).

``shift="hard"`` (``zoo synthetic-slides --shift hard``) makes the labs
and the classes harder to tell apart, so that adaptation and the amount of
target data matter (the TRI-AL study): every slide gets its own stain vectors
and strength, every region its own stain concentrations (colour means of
different classes overlap), lab B is scanned slightly out of focus with
sensor noise, and lab B's blood (smaller, paler cells) and muscle (wider,
wavier fibres, as stroma) differ from lab A's while the other classes do not,
so the shift hits some classes more than others. Annotations follow region
boundaries roughly (polygons with jittered vertices that cross into the
neighbouring tissue): the label noise of hand annotation, measured per slide
as the share of annotated area whose true class differs
(``slides.json``: ``label_noise``). Region classes are dealt in turn so every
class covers a similar area of every slide.

Besides the generic TIFF (``write_pyramid``), ``write_aperio`` writes an
Aperio SVS (objective power and mpp as OpenSlide reports them, e.g. a 20x
scan) and ``write_leica`` a Leica SCN whose scanned area is offset in the
slide, so OpenSlide reports ``openslide.bounds-*`` as it does for MRXS.
"""

from __future__ import annotations

import logging
import pathlib

import cv2
import numpy as np
import tifffile

from common import atomic
from common.slides.annotations import CLASSES

logger = logging.getLogger(__name__)

BASE_MAGNIFICATION = 40.0
MPP = 0.25  # micrometres per level-0 pixel: the usual 40x scan
GRID = 16  # the label map is drawn at 1/GRID resolution, then upsampled
# Optical density of one unit of haematoxylin / eosin (RGB) per laboratory.
STAINS = {
    "A": (np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])),
    "B": (np.array([0.45, 0.85, 0.20]), np.array([0.02, 0.75, 0.35])),
}
STAIN_STRENGTH = {"A": 1.0, "B": 1.35}
SHIFTS = ("stain", "hard")
# shift="hard": per-slide stain jitter, per-region concentration range, lab B's focus blur and noise.
SLIDE_STAIN_JITTER = 0.05  # sd added to each stain vector component
SLIDE_STRENGTH_RANGE = (0.85, 1.15)
REGION_DENSITY_RANGE = (0.7, 1.3)
TARGET_BLUR_SIGMA = (0.6, 1.4)  # level-0 pixels
TARGET_NOISE_SD = 4.0  # grey levels
ANNOTATION_JITTER = 1.5  # vertex jitter in label-map cells (GRID pixels) of the rough annotations
# Texture parameters per class; lab B under shift="hard" changes blood and muscle only.
TEXTURES = {"blood": {"radius": 3, "eosin": 1.2}, "muscle": {"period": 14.0, "wobble": 0.5, "elongation": 3.0}}
TARGET_TEXTURES = {"blood": {"radius": 2, "eosin": 0.7}, "muscle": {"period": 19.0, "wobble": 1.5, "elongation": 2.0}}
QUPATH_COLOURS = {"blood": [200, 0, 0], "damaged": [90, 60, 30], "muscle": [230, 120, 160],
                  "stroma": [250, 200, 200], "urothelium": [80, 0, 160]}


def _smooth_noise(rng, shape, scale: int) -> np.ndarray:
    """Noise in [0, 1] varying over about ``scale`` pixels."""
    small = rng.random((max(2, shape[0] // scale + 2), max(2, shape[1] // scale + 2)), dtype=np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _blobs(rng, shape, count: int, radius: int, elongation: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """``count`` ellipses of ``radius`` at random places, as a float map in [0, 1]."""
    canvas = np.zeros(shape, np.float32)
    ys, xs = rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)
    canvas[ys, xs] = 1.0
    axes = (max(1, int(radius * elongation)), radius)
    size = 2 * max(axes) + 1
    kernel = np.zeros((size, size), np.uint8)
    cv2.ellipse(kernel, (size // 2, size // 2), axes, angle, 0, 360, 1, -1)
    return cv2.dilate(canvas, kernel)


def _stripes(rng, shape, period: float, angle: float, wobble: float) -> np.ndarray:
    """Parallel fibres (0..1) at ``angle`` radians, bent by smooth noise of amplitude ``wobble``."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    along = xx * np.sin(angle) - yy * np.cos(angle) + wobble * _smooth_noise(rng, shape, 64) * period
    return (0.5 + 0.5 * np.sin(2 * np.pi * along / period)) ** 3


def _class_density(rng, name: str, shape, textures=TEXTURES) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and eosin concentration maps of one tissue class over ``shape``."""
    area = shape[0] * shape[1]
    noise = _smooth_noise(rng, shape, 8)
    if name == "blood":
        cells = _blobs(rng, shape, area // 60, textures["blood"]["radius"])
        return 0.05 + 0.1 * noise, 0.9 + textures["blood"]["eosin"] * cells
    if name == "damaged":
        smear = cv2.GaussianBlur(_blobs(rng, shape, area // 150, 4), (0, 0), 6) * 4
        return 0.6 + 0.5 * smear.clip(0, 1) + 0.3 * noise, 0.7 + 0.4 * _smooth_noise(rng, shape, 32)
    if name == "muscle":
        muscle = textures["muscle"]
        angle = rng.uniform(0, np.pi)
        fibres = _stripes(rng, shape, muscle["period"], angle, muscle["wobble"])
        nuclei = _blobs(rng, shape, area // 900, 2, elongation=muscle["elongation"], angle=np.degrees(angle) + 90)
        return 0.1 + 1.3 * nuclei, 0.5 + 0.9 * fibres + 0.2 * noise
    if name == "stroma":
        fibres = _stripes(rng, shape, 22.0, rng.uniform(0, np.pi), 3.0)
        nuclei = _blobs(rng, shape, area // 1500, 2, elongation=2.0, angle=rng.uniform(0, 180))
        return 0.05 + 1.1 * nuclei, 0.15 + 0.6 * fibres + 0.1 * noise
    nuclei = _blobs(rng, shape, area // 70, 3)  # urothelium: packed nuclei, little cytoplasm
    return 0.3 + 1.2 * nuclei + 0.2 * noise, 0.25 + 0.2 * noise


def _label_map(rng, small_shape, regions: int, balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Class index per GRID cell (255 = glass) and region index per cell: wavy Voronoi regions in an ellipse.

    ``balanced`` deals the classes to the regions in turn (every class gets
    ``regions / 5`` regions); otherwise each class gets one and the rest are drawn.
    """
    h, w = small_shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    seeds = rng.random((regions, 2)) * [h, w]
    classes = np.concatenate([np.arange(len(CLASSES)), rng.integers(0, len(CLASSES), max(0, regions - len(CLASSES)))])
    if balanced:
        classes = np.arange(regions) % len(CLASSES)
    distance = np.stack([np.hypot(yy - sy, xx - sx) for sy, sx in seeds])
    distance += 0.25 * min(h, w) * np.stack([_smooth_noise(rng, small_shape, 6) for _ in seeds])
    region = distance.argmin(0)
    labels = classes[region].astype(np.uint8)
    radius = np.hypot((yy - h / 2) / (0.48 * h), (xx - w / 2) / (0.48 * w)) + 0.25 * _smooth_noise(rng, small_shape, 8)
    labels[radius > 1.05] = 255
    return labels, region


def annotation_features(rng, labels: np.ndarray, fraction: float = 1.0, jitter: float = 0.0) -> list[dict]:
    """Rough QuPath-style polygons in each region of a GRID label map (a random ``fraction`` of them).

    With ``jitter`` 0 the polygons lie well inside their regions; otherwise
    they follow the region's boundary with vertices moved by ``jitter`` cells
    (sd), crossing into the neighbouring tissue as hand annotations do.
    Coordinates are pixels of the slide the label map was drawn for (``render_slide``), i.e. QuPath's frame.
    """
    features = []
    for index, name in enumerate(CLASSES):
        mask = cv2.erode((labels == index).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=1 if jitter else 2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            if cv2.contourArea(contour) < 6 or rng.random() > fraction:
                continue
            ring = cv2.approxPolyDP(contour, 1.0, True)[:, 0, :].astype(float)
            if jitter:  # moved vertices stay on the slide
                ring = np.clip(ring + rng.normal(0, jitter, ring.shape), 0, np.array(labels.shape[::-1]) - 1)
            ring = ring * GRID + GRID / 2
            ring = [[round(x, 1), round(y, 1)] for x, y in ring]
            features.append({
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
                "properties": {"objectType": "annotation",
                               "classification": {"name": name.capitalize(), "color": QUPATH_COLOURS[name]}},
            })
    return features


def render_slide(rng, size: tuple[int, int], lab: str, regions: int = 14,
                 shift: str = "stain") -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 slide of ``size`` (height, width) and its GRID-resolution label map.

    ``shift``: "stain" (the labs differ in stain colour and intensity only) or
    "hard" (see the module docstring).
    """
    if lab not in STAINS:
        raise ValueError(f"lab must be one of {sorted(STAINS)}, got {lab!r}")
    if shift not in SHIFTS:
        raise ValueError(f"shift must be one of {SHIFTS}, got {shift!r}")
    height, width = size
    if height % GRID or width % GRID or min(size) < 8 * GRID:
        raise ValueError(f"size must be multiples of {GRID} of at least {8 * GRID}, got {size}")
    hard = shift == "hard"
    labels, region = _label_map(rng, (height // GRID, width // GRID), regions, balanced=hard)
    full = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
    textures = TARGET_TEXTURES if hard and lab == "B" else TEXTURES
    h_map = np.zeros(size, np.float32)
    e_map = np.zeros(size, np.float32)
    for index, name in enumerate(CLASSES):
        inside = full == index
        if inside.any():
            h, e = _class_density(rng, name, size, textures)
            h_map[inside], e_map[inside] = h[inside], e[inside]
    haematoxylin, eosin, strength = *STAINS[lab], STAIN_STRENGTH[lab]
    if hard:
        h_map, e_map = _region_densities(rng, region, h_map, e_map)
        haematoxylin, eosin, strength = _slide_stains(rng, haematoxylin, eosin, strength)
    density = strength * (h_map[..., None] * haematoxylin + e_map[..., None] * eosin)
    rgb = 255.0 * np.exp(-density) * (1 - 0.04 * _smooth_noise(rng, size, 4)[..., None])
    if hard and lab == "B":
        rgb = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), rng.uniform(*TARGET_BLUR_SIGMA))
        rgb = rgb + rng.normal(0, TARGET_NOISE_SD, rgb.shape).astype(np.float32)
    return rgb.clip(0, 255).astype(np.uint8), labels


def _region_densities(rng, region: np.ndarray, h_map: np.ndarray, e_map: np.ndarray):
    """Each region's haematoxylin and eosin scaled by its own factors in ``REGION_DENSITY_RANGE``."""
    factors = rng.uniform(*REGION_DENSITY_RANGE, (region.max() + 1, 2)).astype(np.float32)
    size = h_map.shape[::-1]
    h_factor = cv2.resize(factors[region, 0], size, interpolation=cv2.INTER_NEAREST)
    e_factor = cv2.resize(factors[region, 1], size, interpolation=cv2.INTER_NEAREST)
    return h_map * h_factor, e_map * e_factor


def _slide_stains(rng, haematoxylin, eosin, strength):
    """One slide's stain vectors (each component moved by ``SLIDE_STAIN_JITTER`` sd) and strength."""
    def jitter(vector):
        return np.clip(vector + rng.normal(0, SLIDE_STAIN_JITTER, 3), 0.01, None)
    return jitter(haematoxylin), jitter(eosin), strength * rng.uniform(*SLIDE_STRENGTH_RANGE)


def label_noise(features: list[dict], labels: np.ndarray) -> float:
    """Share of the annotated area (GRID cells, in QuPath's frame) whose true class differs from the annotation's.

    Overlapping polygons count once per polygon; glass under a polygon counts as noise.
    """
    wrong = total = 0
    for feature in features:
        index = CLASSES.index(feature["properties"]["classification"]["name"].lower())
        ring = (np.asarray(feature["geometry"]["coordinates"][0]) - GRID / 2) / GRID
        mask = np.zeros(labels.shape, np.uint8)
        cv2.fillPoly(mask, [np.round(ring).astype(np.int32)], 1)
        inside = mask.astype(bool)
        total += inside.sum()
        wrong += (labels[inside] != index).sum()
    return float(wrong / total) if total else 0.0


def _levels(rgb: np.ndarray):
    """(downsample, image) of a pyramid at downsamples 1, 4, 16, ... down to about 64 pixels."""
    level, downsample = rgb, 1
    while True:
        yield downsample, level
        if min(level.shape[:2]) // 4 < 64:
            return
        downsample *= 4
        level = cv2.resize(rgb, (rgb.shape[1] // downsample, rgb.shape[0] // downsample), interpolation=cv2.INTER_AREA)


def write_pyramid(path, rgb: np.ndarray, mpp: float = MPP, magnification: float = BASE_MAGNIFICATION,
                  tile: int = 256) -> None:
    """Writes a tiled TIFF with levels at downsamples 1, 4, 16, ... (OpenSlide's generic-tiff layout).

    Levels are successive full-resolution directories (not SubIFDs); the
    resolution tags give OpenSlide ``openslide.mpp-x`` (so a 20x slide is
    ``mpp=0.5``); generic TIFFs carry no objective power for OpenSlide, the
    description records it for people reading the file.
    """
    resolution = 1e4 / mpp
    with atomic.atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tif:
        for downsample, level in _levels(rgb):
            tif.write(level, tile=(tile, tile), photometric="rgb", compression="zlib", metadata=None,
                      subfiletype=0 if downsample == 1 else 1,
                      resolution=(resolution / downsample, resolution / downsample), resolutionunit="CENTIMETER",
                      description=f"medzoo synthetic slide; objective-power={magnification:g}; mpp={mpp:g}"
                      if downsample == 1 else None)


def write_aperio(path, rgb: np.ndarray, mpp: float = MPP, magnification: float = BASE_MAGNIFICATION,
                 tile: int = 256) -> None:
    """Writes an Aperio-style SVS that OpenSlide reads as vendor "aperio", with ``AppMag`` and ``MPP``.

    ``write_aperio(path, rgb, mpp=0.5, magnification=20)`` is an AppMag 20
    scan; unequal values make a slide whose objective power and mpp disagree.
    """
    height, width = rgb.shape[:2]
    description = (f"Aperio Image Library v12.0.0 medzoo synthetic\r\n{width}x{height} [0,0 {width}x{height}] "
                   f"({tile}x{tile}) ZLIB|AppMag = {magnification:g}|MPP = {mpp:g}")
    with atomic.atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tif:
        for downsample, level in _levels(rgb):
            tif.write(level, tile=(tile, tile), photometric="rgb", compression="zlib", metadata=None,
                      description=description if downsample == 1 else None)


def write_leica(path, rgb: np.ndarray, origin: tuple[int, int], canvas: tuple[int, int], mpp: float = MPP,
                magnification: float = BASE_MAGNIFICATION, tile: int = 256) -> None:
    """Writes a Leica SCN whose scanned area ``rgb`` lies at level-0 ``origin`` (x, y) of a ``canvas`` (W, H).

    OpenSlide reports the area as ``openslide.bounds-x/y/width/height`` and
    returns transparent pixels around it, as for MRXS: the bounded slide that
    QuPath shows (and annotates) from ``origin``.
    """
    nm = mpp * 1000  # Leica sizes and offsets are in nanometres
    height, width = rgb.shape[:2]
    if origin[0] < 0 or origin[1] < 0 or origin[0] + width > canvas[0] or origin[1] + height > canvas[1]:
        raise ValueError(f"the scanned area {width}x{height} at origin {origin} must fit in canvas {canvas}")
    levels = list(_levels(rgb))
    dimensions = "".join(f'<dimension sizeX="{level.shape[1]}" sizeY="{level.shape[0]}" r="{i}" ifd="{i}"/>'
                         for i, (_, level) in enumerate(levels))
    xml = (f'<?xml version="1.0" encoding="utf-8"?><scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">'
           f'<collection name="medzoo" uuid="0" sizeX="{round(canvas[0] * nm)}" sizeY="{round(canvas[1] * nm)}">'
           f'<image name="main" uuid="1"><creationDate>2024-01-01T00:00:00.00Z</creationDate>'
           f'<device model="medzoo synthetic" version="1"/><pixels sizeX="{width}" sizeY="{height}">{dimensions}'
           f'</pixels><view sizeX="{round(width * nm)}" sizeY="{round(height * nm)}" offsetX="{round(origin[0] * nm)}"'
           f' offsetY="{round(origin[1] * nm)}" spacingZ="0"/><scanSettings><objectiveSettings><objective>'
           f'{magnification:g}</objective></objectiveSettings><illuminationSettings><illuminationSource>brightfield'
           f'</illuminationSource></illuminationSettings></scanSettings></image></collection></scn>')
    with atomic.atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for downsample, level in levels:
            tif.write(level, tile=(tile, tile), photometric="rgb", compression="zlib", metadata=None,
                      resolution=(1e4 / (mpp * downsample),) * 2, resolutionunit="CENTIMETER",
                      description=xml if downsample == 1 else None)


def write_cohort(out, slides_per_lab: int = 3, seed: int = 0, size: tuple[int, int] = (2048, 2048),
                 labs=("A", "B"), annotated_fraction: float = 0.8, shift: str = "stain",
                 target_slides: int | None = None) -> list[str]:
    """Writes ``slides_per_lab`` slides for each lab, their annotations and ``slides.json``.

    ``target_slides`` sets lab B's count instead (e.g. more target slides to
    adapt on); ``shift`` is ``render_slide``'s; a line per slide is logged.
    Returns the slide ids, e.g. ``["labA_000", ..., "labB_002"]``.
    """
    counts = {lab: target_slides if lab == "B" and target_slides is not None else slides_per_lab for lab in labs}
    for name, count in (("slides_per_lab", slides_per_lab), ("target_slides", counts.get("B", 1))):
        if count < 1:
            raise ValueError(f"{name} must be at least 1, got {count}")
    if shift not in SHIFTS:
        raise ValueError(f"shift must be one of {SHIFTS}, got {shift!r}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"classes": list(CLASSES), "base_magnification": BASE_MAGNIFICATION, "mpp": MPP, "shift": shift,
                "slides": {}}
    jitter = ANNOTATION_JITTER if shift == "hard" else 0.0
    for lab_index, lab in enumerate(labs):
        for i in range(counts[lab]):
            slide_id = f"lab{lab}_{i:03d}"
            rng = np.random.default_rng([seed, lab_index, i])
            rgb, labels = render_slide(rng, tuple(size), lab, regions=15 if shift == "hard" else 14, shift=shift)
            write_pyramid(out / f"{slide_id}.tiff", rgb)
            features = annotation_features(rng, labels, annotated_fraction, jitter=jitter)
            atomic.write_json(out / f"{slide_id}.geojson", {"type": "FeatureCollection", "features": features})
            manifest["slides"][slide_id] = {"lab": lab, "slide": f"{slide_id}.tiff",
                                            "annotations": f"{slide_id}.geojson",
                                            "label_noise": round(label_noise(features, labels), 4)}
            logger.info(f"{slide_id}: {len(features)} annotations, label noise "
                        f"{manifest['slides'][slide_id]['label_noise']:.1%}")
    atomic.write_json(out / "slides.json", manifest)
    return list(manifest["slides"])
