"""Reading whole slides with OpenSlide: QuPath's frame, the base magnification, and tiles at any magnification.

A triplet (TRI-AL paper II.A) is three tiles at 2.5x, 10x and 40x centred on
the same level-0 point, so the 2.5x tile covers 16 times the side (256 times
the area) of the 40x tile. Tiles are read from the pyramid level closest
below the wanted downsample and resized with area averaging; a slide scanned
below a tile's magnification (a 20x scan, the 40x tile) is read at level 0
and upsampled. Outside the slide OpenSlide returns transparent pixels, which
are padded as white glass.

A tile OpenSlide cannot decode (a damaged slide) raises ``DataError`` naming
the slide and the region read (``Slide``), whichever step read it.

QuPath opens bounded formats (MRXS, Leica SCN, Ventana) through OpenSlide
with the scanned area's bounds applied, so its coordinates start at
(``openslide.bounds-x``, ``openslide.bounds-y``) of level 0: ``qupath_frame``
says where, and annotations are shifted by it before any tile is read.
"""

from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np
import openslide

from common.errors import DataError

logger = logging.getLogger(__name__)

MAGNIFICATIONS = (2.5, 10.0, 40.0)
# Objective power x microns per pixel: 40x scans are ~0.25 um/px, 20x ~0.5 (Aperio, Hamamatsu, Leica, Philips).
POWER_TIMES_MPP = 10.0
POWER_MPP_TOLERANCE = 0.25


@dataclasses.dataclass(frozen=True)
class Frame:
    """The part of level 0 that QuPath shows: origin (x, y) in level-0 pixels, and its width and height."""

    x: int
    y: int
    width: int
    height: int


class Slide(openslide.OpenSlide):
    """An OpenSlide that knows its file, so that a damaged tile is one ``DataError`` naming the slide and region.

    OpenSlide raises ``OpenSlideError`` (e.g. libtiff's "ZIPDecode: Decoding
    error") for a tile it cannot decode, and every later read of the handle
    fails the same way; whatever read it, the triplets or a prediction, the
    slide cannot be used past that point, so the error is the user's to see.
    """

    def __init__(self, path):
        super().__init__(str(path))
        self.path = path

    def read_region(self, location, level, size):
        try:
            return super().read_region(location, level, size)
        except openslide.OpenSlideError as error:
            cause = " ".join(str(error).split()) or type(error).__name__
            raise DataError(f"{self.path}: damaged tile in the region level {level}, x {location[0]}, y {location[1]} "
                            f"(level-0 coordinates), size {size[0]}x{size[1]}: {cause}") from None


def open_slide(path) -> Slide:
    """Opens a whole slide with OpenSlide; an unreadable file raises ``DataError`` naming it, as does a damaged tile."""
    try:
        return Slide(path)
    except (openslide.OpenSlideError, OSError) as error:
        raise DataError(f"{path}: cannot be opened as a whole slide ({error or type(error).__name__})") from None


def qupath_frame(slide, path) -> Frame:
    """QuPath's coordinate frame of ``slide``: its ``openslide.bounds-*`` when present, else all of level 0.

    A point (x, y) of QuPath's GeoJSON is level-0 point (x + frame.x, y + frame.y).
    """
    props, (width, height) = slide.properties, slide.dimensions
    try:
        x, y = int(props.get("openslide.bounds-x", 0)), int(props.get("openslide.bounds-y", 0))
        width = int(props.get("openslide.bounds-width", width - x))
        height = int(props.get("openslide.bounds-height", height - y))
    except ValueError:
        raise DataError(f"{path}: unreadable openslide.bounds-* properties") from None
    return Frame(x, y, width, height)


def _number(props, key, path) -> float | None:
    if not props.get(key):
        return None
    try:
        value = float(props[key])
    except ValueError:
        value = 0.0
    if not value > 0:
        raise DataError(f"{path}: unreadable {key} {props[key]!r}; give the base magnification (--magnification)")
    return value


def base_magnification(slide, path, given: float | None = None) -> float:
    """The objective power of level 0: ``given``, else the slide's, checked against its mpp, else 10 / mpp.

    A 40x scan has ~0.25 um/px, so objective power x mpp is ~10; a slide whose
    two disagree by more than 25% raises ``DataError`` naming the file and
    both values, since tiles would come out at the wrong scale.
    """
    if given is not None:
        if given <= 0:
            raise ValueError(f"base magnification must be positive, got {given}")
        return float(given)
    props = slide.properties
    power = _number(props, "openslide.objective-power", path) or _number(props, "aperio.AppMag", path)
    mpp = _number(props, "openslide.mpp-x", path)
    if power is None and mpp is None:
        raise DataError(f"{path}: no objective power or mpp in its properties; give the base magnification "
                        "(--magnification)")
    if power is None:
        return round(POWER_TIMES_MPP / mpp, 2)
    if mpp is not None and abs(power * mpp / POWER_TIMES_MPP - 1) > POWER_MPP_TOLERANCE:
        raise DataError(f"{path}: objective power {power:g}x and {mpp:g} um/px disagree (a {power:g}x scan has "
                        f"~{POWER_TIMES_MPP / power:.2g} um/px); give the base magnification (--magnification "
                        f"{POWER_TIMES_MPP / mpp:.3g} to go by the pixel size, {power:g} by the objective)")
    return power


def check_magnification(path, base: float, upsample: bool = True) -> bool:
    """Whether ``path``'s tiles above its ``base`` magnification must be upsampled; says so, or refuses.

    With ``upsample`` False a slide scanned below the highest tile
    magnification raises ``DataError`` naming the file and ``--no-upsample``.
    """
    highest = max(MAGNIFICATIONS)
    if base >= highest:
        return False
    if not upsample:
        raise DataError(f"{path}: scanned at {base:g}x, below the {highest:g}x tiles; drop --no-upsample to "
                        f"upsample them from {base:g}x, or leave the slide out")
    logger.info(f"{path}: scanned at {base:g}x, below the {highest:g}x tiles: reading them at {base:g}x and "
                f"upsampling {highest / base:g}x")
    return True


def read_tile(slide, center, magnification: float, base: float, tile_size: int) -> tuple[np.ndarray, tuple]:
    """One RGB uint8 tile at ``magnification`` centred on level-0 point ``center`` (x, y).

    Above the ``base`` magnification the tile is read at level 0 and
    upsampled (bilinear). Returns the tile and the level-0 box it covers, (x0, y0, x1, y1).
    """
    if magnification <= 0:
        raise ValueError(f"magnification must be positive, got {magnification}")
    downsample = base / magnification
    side = tile_size * downsample  # level-0 pixels
    x0, y0 = center[0] - side / 2, center[1] - side / 2
    level = slide.get_best_level_for_downsample(max(downsample, 1) + 1e-6)
    level_ds = slide.level_downsamples[level]
    read = max(1, int(round(side / level_ds)))
    rgba = np.asarray(slide.read_region((int(round(x0)), int(round(y0))), level, (read, read)), np.float32)
    alpha = rgba[..., 3:] / 255.0  # 0 outside the slide: pad with white glass
    rgb = rgba[..., :3] * alpha + 255.0 * (1 - alpha)
    if read != tile_size:
        rgb = cv2.resize(rgb, (tile_size, tile_size), interpolation=cv2.INTER_AREA if read > tile_size
                         else cv2.INTER_LINEAR)
    return rgb.round().astype(np.uint8), (x0, y0, x0 + side, y0 + side)


def read_triplet(slide, center, base: float, tile_size: int = 128) -> tuple[list[np.ndarray], list[tuple]]:
    """The 2.5x, 10x and 40x tiles centred on level-0 point ``center`` and their level-0 boxes."""
    tiles, boxes = zip(*(read_tile(slide, center, m, base, tile_size) for m in MAGNIFICATIONS))
    return list(tiles), list(boxes)
