"""Reading whole slides with OpenSlide: the base magnification and tiles at any magnification.

A triplet (TRI-AL paper II.A) is three tiles at 2.5x, 10x and 40x centred on
the same level-0 point, so the 2.5x tile covers 16 times the side (256 times
the area) of the 40x tile. Tiles are read from the pyramid level closest
below the wanted downsample and resized with area averaging; outside the
slide OpenSlide returns transparent pixels, which are padded as white glass.
"""

from __future__ import annotations

import cv2
import numpy as np

from common.errors import DataError

MAGNIFICATIONS = (2.5, 10.0, 40.0)


def open_slide(path):
    """Opens a whole slide with OpenSlide; an unreadable file raises ``DataError`` naming it."""
    import openslide

    try:
        return openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as error:
        raise DataError(f"{path}: cannot be opened as a whole slide ({error or type(error).__name__})") from None


def base_magnification(slide, path, given: float | None = None) -> float:
    """The objective power of level 0: ``given``, else the slide's properties, else 10 / mpp."""
    if given is not None:
        if given <= 0:
            raise ValueError(f"base magnification must be positive, got {given}")
        return float(given)
    props = slide.properties
    try:
        for key in ("openslide.objective-power", "aperio.AppMag"):
            if props.get(key):
                return float(props[key])
        if props.get("openslide.mpp-x"):
            return round(10.0 / float(props["openslide.mpp-x"]), 2)  # 0.25 um/px is a 40x scan
    except (ValueError, ZeroDivisionError):
        raise DataError(f"{path}: unreadable magnification or mpp property; give the base magnification") from None
    raise DataError(f"{path}: no objective power or mpp in its properties; give the base magnification")


def read_tile(slide, center, magnification: float, base: float, tile_size: int) -> tuple[np.ndarray, tuple]:
    """One RGB uint8 tile at ``magnification`` centred on level-0 point ``center`` (x, y).

    Returns the tile and the level-0 box it covers, (x0, y0, x1, y1).
    """
    downsample = base / magnification
    if downsample < 1:
        raise ValueError(f"magnification {magnification} exceeds the slide's base magnification {base}")
    side = tile_size * downsample  # level-0 pixels
    x0, y0 = center[0] - side / 2, center[1] - side / 2
    level = slide.get_best_level_for_downsample(downsample + 1e-6)
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
    """The 2.5x, 10x and 40x tiles centred on ``center`` and their level-0 boxes."""
    tiles, boxes = zip(*(read_tile(slide, center, m, base, tile_size) for m in MAGNIFICATIONS))
    return list(tiles), list(boxes)
