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

Besides the generic TIFF (``write_pyramid``), ``write_aperio`` writes an
Aperio SVS (objective power and mpp as OpenSlide reports them, e.g. a 20x
scan) and ``write_leica`` a Leica SCN whose scanned area is offset in the
slide, so OpenSlide reports ``openslide.bounds-*`` as it does for MRXS.
"""

from __future__ import annotations

import pathlib

import cv2
import numpy as np
import tifffile

from common import atomic
from common.slides.annotations import CLASSES

BASE_MAGNIFICATION = 40.0
MPP = 0.25  # micrometres per level-0 pixel: the usual 40x scan
GRID = 16  # the label map is drawn at 1/GRID resolution, then upsampled
# Optical density of one unit of haematoxylin / eosin (RGB) per laboratory.
STAINS = {
    "A": (np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])),
    "B": (np.array([0.45, 0.85, 0.20]), np.array([0.02, 0.75, 0.35])),
}
STAIN_STRENGTH = {"A": 1.0, "B": 1.35}
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


def _class_density(rng, name: str, shape) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and eosin concentration maps of one tissue class over ``shape``."""
    area = shape[0] * shape[1]
    noise = _smooth_noise(rng, shape, 8)
    if name == "blood":
        cells = _blobs(rng, shape, area // 60, 3)
        return 0.05 + 0.1 * noise, 0.9 + 1.2 * cells
    if name == "damaged":
        smear = cv2.GaussianBlur(_blobs(rng, shape, area // 150, 4), (0, 0), 6) * 4
        return 0.6 + 0.5 * smear.clip(0, 1) + 0.3 * noise, 0.7 + 0.4 * _smooth_noise(rng, shape, 32)
    if name == "muscle":
        angle = rng.uniform(0, np.pi)
        fibres = _stripes(rng, shape, 14.0, angle, 0.5)
        nuclei = _blobs(rng, shape, area // 900, 2, elongation=3.0, angle=np.degrees(angle) + 90)
        return 0.1 + 1.3 * nuclei, 0.5 + 0.9 * fibres + 0.2 * noise
    if name == "stroma":
        fibres = _stripes(rng, shape, 22.0, rng.uniform(0, np.pi), 3.0)
        nuclei = _blobs(rng, shape, area // 1500, 2, elongation=2.0, angle=rng.uniform(0, 180))
        return 0.05 + 1.1 * nuclei, 0.15 + 0.6 * fibres + 0.1 * noise
    nuclei = _blobs(rng, shape, area // 70, 3)  # urothelium: packed nuclei, little cytoplasm
    return 0.3 + 1.2 * nuclei + 0.2 * noise, 0.25 + 0.2 * noise


def _label_map(rng, small_shape, regions: int) -> np.ndarray:
    """Class index per GRID cell (255 = glass): wavy Voronoi regions inside an elliptic tissue section."""
    h, w = small_shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    seeds = rng.random((regions, 2)) * [h, w]
    classes = np.concatenate([np.arange(len(CLASSES)), rng.integers(0, len(CLASSES), max(0, regions - len(CLASSES)))])
    distance = np.stack([np.hypot(yy - sy, xx - sx) for sy, sx in seeds])
    distance += 0.25 * min(h, w) * np.stack([_smooth_noise(rng, small_shape, 6) for _ in seeds])
    labels = classes[distance.argmin(0)].astype(np.uint8)
    radius = np.hypot((yy - h / 2) / (0.48 * h), (xx - w / 2) / (0.48 * w)) + 0.25 * _smooth_noise(rng, small_shape, 8)
    labels[radius > 1.05] = 255
    return labels


def annotation_features(rng, labels: np.ndarray, fraction: float = 1.0) -> list[dict]:
    """Rough QuPath-style polygons well inside each region of a GRID label map (a random ``fraction`` of them).

    Coordinates are pixels of the slide the label map was drawn for (``render_slide``), i.e. QuPath's frame.
    """
    features = []
    for index, name in enumerate(CLASSES):
        mask = cv2.erode((labels == index).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            if cv2.contourArea(contour) < 6 or rng.random() > fraction:
                continue
            ring = cv2.approxPolyDP(contour, 1.0, True)[:, 0, :].astype(float) * GRID + GRID / 2
            ring = [[round(x, 1), round(y, 1)] for x, y in ring]
            features.append({
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
                "properties": {"objectType": "annotation",
                               "classification": {"name": name.capitalize(), "color": QUPATH_COLOURS[name]}},
            })
    return features


def render_slide(rng, size: tuple[int, int], lab: str, regions: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 slide of ``size`` (height, width) and its GRID-resolution label map."""
    if lab not in STAINS:
        raise ValueError(f"lab must be one of {sorted(STAINS)}, got {lab!r}")
    height, width = size
    if height % GRID or width % GRID or min(size) < 8 * GRID:
        raise ValueError(f"size must be multiples of {GRID} of at least {8 * GRID}, got {size}")
    labels = _label_map(rng, (height // GRID, width // GRID), regions)
    full = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
    h_map = np.zeros(size, np.float32)
    e_map = np.zeros(size, np.float32)
    for index, name in enumerate(CLASSES):
        inside = full == index
        if inside.any():
            h, e = _class_density(rng, name, size)
            h_map[inside], e_map[inside] = h[inside], e[inside]
    haematoxylin, eosin = STAINS[lab]
    density = STAIN_STRENGTH[lab] * (h_map[..., None] * haematoxylin + e_map[..., None] * eosin)
    rgb = 255.0 * np.exp(-density) * (1 - 0.04 * _smooth_noise(rng, size, 4)[..., None])
    return rgb.clip(0, 255).astype(np.uint8), labels


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
                 labs=("A", "B"), annotated_fraction: float = 0.8) -> list[str]:
    """Writes ``slides_per_lab`` slides for each lab, their annotations and ``slides.json``.

    Returns the slide ids, e.g. ``["labA_000", ..., "labB_002"]``.
    """
    if slides_per_lab < 1:
        raise ValueError(f"slides_per_lab must be at least 1, got {slides_per_lab}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"classes": list(CLASSES), "base_magnification": BASE_MAGNIFICATION, "mpp": MPP, "slides": {}}
    for lab_index, lab in enumerate(labs):
        for i in range(slides_per_lab):
            slide_id = f"lab{lab}_{i:03d}"
            rng = np.random.default_rng([seed, lab_index, i])
            rgb, labels = render_slide(rng, tuple(size), lab)
            write_pyramid(out / f"{slide_id}.tiff", rgb)
            collection = {"type": "FeatureCollection", "features": annotation_features(rng, labels, annotated_fraction)}
            atomic.write_json(out / f"{slide_id}.geojson", collection)
            manifest["slides"][slide_id] = {"lab": lab, "slide": f"{slide_id}.tiff",
                                            "annotations": f"{slide_id}.geojson"}
    atomic.write_json(out / "slides.json", manifest)
    return list(manifest["slides"])
