"""Tissue masks: Otsu's threshold on the optical density of a low-magnification thumbnail.

Triplets are sampled, and whole slides predicted, only where there is
tissue: a point of an annotation that lies on glass is redrawn, a tile of
a prediction grid centred on glass is left out. The mask is computed at
``MASK_MAGNIFICATION`` (1.25x, 8 um per pixel on a 40x scan, as HistoQC and
CLAM look for tissue) from the optical density of each pixel's darkest
channel, ``OD = -log10(I / 256)``: white glass and the transparent area that
OpenSlide returns outside the scan are below ~0.05; haematoxylin and eosin
both absorb, so pale stroma is ~0.1 and nuclei above 0.5. Otsu's threshold
is taken on log10(OD), where glass and tissue each span about a decade: on
the density itself the wide spread of a dark slide's tissue pulls the
threshold into the tissue and pale stroma is lost (on the generated slides,
73-89% of mask pixels right against 99.9%). It is bounded below by
``MIN_TISSUE_OD``, so a slide of glass alone stays glass; a thumbnail with no
glass-like class (tissue from edge to edge) is tissue wherever it passes
that floor. A 3x3 opening and closing drop dust and fill pin-holes.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from common.slides.annotations import sample_points
from common.slides.reader import Frame

MASK_MAGNIFICATION = 1.25
MIN_TISSUE_OD = 0.05  # darkest channel 228 of 255: clean glass is 0.0-0.04
GLASS_OD = 0.1  # Otsu's lighter class averages below this (geometrically) when the thumbnail has glass
LOG_OD_RANGE = (-2.5, 0.5)  # log10(OD) from 0.003 (white) to 3 (black), as uint8 codes 0-255 for OpenCV's Otsu
BAND_PIXELS = 1 << 25  # level pixels read at once: a slide without a low-resolution level is read in bands


def _code(od) -> np.ndarray:
    """The uint8 code of optical density ``od`` on the log scale of ``LOG_OD_RANGE``."""
    low, high = LOG_OD_RANGE
    return np.clip((np.log10(np.maximum(od, 10.0 ** low)) - low) / (high - low) * 255, 0, 255).round()


# The code of each 8-bit intensity, as a lookup table.
CODE_TABLE = _code(-np.log10((np.arange(256) + 1) / 256.0)).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class TissueMask:
    """Where a slide has tissue: ``mask`` (rows, cols) over a level-0 region, and the thumbnail it came from.

    Mask pixel (i, j) covers level-0 x in ``origin[0] + [j, j + 1) * scale[0]``
    and y in ``origin[1] + [i, i + 1) * scale[1]``.
    """

    mask: np.ndarray
    origin: tuple[float, float]
    scale: tuple[float, float]
    threshold: float
    thumbnail: np.ndarray

    def contains(self, points) -> np.ndarray:
        """Whether each level-0 point (x, y) lies in tissue; points outside the region are not.

        Example:
            >>> mask = TissueMask(np.array([[True, False]]), (100, 0), (10, 10), 0.1, np.zeros((1, 2, 3)))
            >>> mask.contains([[105, 5], [115, 5], [95, 5]]).tolist()
            [True, False, False]
        """
        points = np.asarray(points, np.float64).reshape(-1, 2)
        cols = np.floor((points[:, 0] - self.origin[0]) / self.scale[0]).astype(np.int64)
        rows = np.floor((points[:, 1] - self.origin[1]) / self.scale[1]).astype(np.int64)
        within = (rows >= 0) & (rows < self.mask.shape[0]) & (cols >= 0) & (cols < self.mask.shape[1])
        result = np.zeros(len(points), bool)
        result[within] = self.mask[rows[within], cols[within]]
        return result

    @property
    def share(self) -> float:
        """The share of the region that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def read_thumbnail(slide, downsample: float, region: Frame) -> tuple[np.ndarray, tuple[float, float]]:
    """RGB uint8 of level-0 ``region`` at ``downsample``, transparent pixels as white glass; and its scale (x, y).

    Read from the pyramid level closest below ``downsample``, in bands of
    rows so that a slide without a low-resolution level never sits whole in memory.
    """
    width, height = max(1, round(region.width / downsample)), max(1, round(region.height / downsample))
    scale = (region.width / width, region.height / height)
    level = slide.get_best_level_for_downsample(max(downsample, 1) + 1e-6)
    level_ds = slide.level_downsamples[level]
    level_width = max(1, round(region.width / level_ds))
    band = max(1, int(BAND_PIXELS / (level_width * scale[1] / level_ds)))  # output rows per read
    thumbnail = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, band):
        bottom = min(height, top + band)
        y0 = region.y + top * scale[1]
        size = (level_width, max(1, round((bottom - top) * scale[1] / level_ds)))
        rgba = np.asarray(slide.read_region((int(region.x), int(round(y0))), level, size), np.float32)
        alpha = rgba[..., 3:] / 255.0  # 0 outside the scan: white glass, as read_tile pads
        rgb = rgba[..., :3] * alpha + 255.0 * (1 - alpha)
        thumbnail[top:bottom] = cv2.resize(rgb, (width, bottom - top), interpolation=cv2.INTER_AREA).round()
    return thumbnail, scale


def tissue_pixels(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """Tissue (bool, rows x cols) of an RGB uint8 thumbnail, and the optical density threshold used.

    Example:
        >>> rgb = np.full((8, 8, 3), 245, np.uint8)
        >>> rgb[2:6, 2:6] = (200, 120, 190)  # an eosin-pink square on glass
        >>> mask, threshold = tissue_pixels(rgb)
        >>> int(mask.sum()), bool(mask[3, 3]), bool(mask[0, 0])
        (16, True, False)
    """
    density = np.ascontiguousarray(CODE_TABLE[rgb.min(-1)])
    otsu, _ = cv2.threshold(density, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    lighter = density[density <= otsu]
    floor = float(_code(MIN_TISSUE_OD))
    threshold = max(otsu, floor) if lighter.size and lighter.mean() < _code(GLASS_OD) else floor
    mask = np.pad(density > threshold, 1).astype(np.uint8)  # glass beyond the edge, so a rim of glass stays glass
    kernel = np.ones((3, 3), np.uint8)
    mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)[1:-1, 1:-1]
    low, high = LOG_OD_RANGE
    return mask.astype(bool), float(10.0 ** (low + threshold / 255 * (high - low)))


def tissue_mask(slide, base: float, region: Frame | None = None,
                magnification: float = MASK_MAGNIFICATION) -> TissueMask:
    """The tissue mask of ``region`` (default all of level 0) at ``magnification``, for a slide of ``base``.

    Args:
        slide: an open OpenSlide.
        base: the objective power of level 0 (``reader.base_magnification``).
        region: the level-0 area to mask, e.g. QuPath's frame (``reader.qupath_frame``).
        magnification: that of the thumbnail thresholded (default 1.25x).
    """
    if magnification <= 0:
        raise ValueError(f"magnification must be positive, got {magnification}")
    region = region or Frame(0, 0, *slide.dimensions)
    thumbnail, scale = read_thumbnail(slide, base / magnification, region)
    mask, threshold = tissue_pixels(thumbnail)
    return TissueMask(mask, (float(region.x), float(region.y)), scale, threshold, thumbnail)


def sample_in_tissue(annotations, max_points: int, rng, mask: TissueMask,
                     rounds: int = 20) -> tuple[np.ndarray, np.ndarray, int]:
    """Up to ``max_points`` uniform points in the annotations and in tissue; returns (points, labels, rejected).

    Points on glass are rejected and redrawn (so the points are uniform over
    annotation and tissue together), at most ``rounds`` times; with nothing
    rejected the points are those of ``annotations.sample_points`` itself.
    """
    points, labels, rejected, rate = [np.zeros((0, 2))], [np.zeros(0, np.int64)], 0, 1.0
    for _ in range(rounds):
        wanted = max_points - sum(map(len, points))
        if wanted <= 0:
            break
        drawn, drawn_labels = sample_points(annotations, math.ceil(wanted / max(rate, 0.05)), rng)
        if not len(drawn):
            break
        keep = mask.contains(drawn)
        rejected, rate = rejected + int((~keep).sum()), float(keep.mean())
        points.append(drawn[keep])
        labels.append(drawn_labels[keep])
    points, labels = np.concatenate(points), np.concatenate(labels)
    if len(points) > max_points:  # the last round drew extra: keep a random subset, in drawing order
        chosen = np.sort(rng.choice(len(points), max_points, replace=False))
        points, labels = points[chosen], labels[chosen]
    return points, labels, rejected
