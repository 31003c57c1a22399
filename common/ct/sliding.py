"""Slice-wise prediction as nnU-Net's: Gaussian-weighted sliding window and test-time mirroring.

The math, kept plain so that an in-graph pipeline can reproduce it:

- Tiles: along each axis of a slice (padded bottom/right with 0, the
  windowed image's 0, up to at least the tile, as training's ``pad_to``),
  ``n = ceil((size - tile) / (step * tile)) + 1`` tiles start at
  ``round(i * (size - tile) / (n - 1))``, so the first and last tiles touch
  the borders and neighbours overlap by at least ``1 - step`` of a tile
  (nnU-Net's ``compute_steps_for_sliding_window``).
- Weights: ``gaussian_importance(tile)``, a Gaussian of sigma ``tile / 8``
  per axis centred on the tile, normalised so its maximum is 1, zeros
  clamped to the smallest non-zero value (nnU-Net's ``compute_gaussian``);
  a constant of the tile size.
- A pixel's probabilities are ``sum_t w_t p_t / sum_t w_t`` over the tiles
  ``t`` that cover it.
- Mirroring: each tile is predicted as it is and flipped along the given
  axes; each prediction is flipped back and the mean taken (nnU-Net's
  ``_internal_maybe_mirror_and_predict``).

Without a tile, each slice is one tile (padded to the model's stride) of
weight 1: the zoo's plain slice-by-slice prediction.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

# Axes of a (batch, y, x) tile stack flipped by each test-time augmentation: "mirror" adds the
# flips that training's "flip" and "flip-rot" augmentations draw (left-right, up-down, both).
MIRRORS = {"none": ((),), "mirror": ((), (2,), (1,), (1, 2))}
SIGMA_SCALE = 1 / 8  # nnU-Net's sigma = patch / 8


def gaussian_importance(tile) -> np.ndarray:
    """The (H, W) float32 weight of each tile pixel: nnU-Net's Gaussian, maximum 1, no zeros.

    Example:
        >>> w = gaussian_importance((8, 16))
        >>> w.shape, float(w.max()), bool(w.min() > 0), bool(w[4, 8] == w.max())
        ((8, 16), 1.0, True, True)
    """
    delta = np.zeros(tile, np.float64)
    delta[tuple(side // 2 for side in tile)] = 1.0
    weights = ndimage.gaussian_filter(delta, [side * SIGMA_SCALE for side in tile], mode="constant", cval=0.0)
    weights /= weights.max()
    weights[weights == 0] = weights[weights > 0].min()
    return weights.astype(np.float32)


def tile_starts(size: int, tile: int, step: float) -> list[int]:
    """Where the tiles start along one axis of ``size`` pixels (``size >= tile``), nnU-Net's rule.

    Example:
        >>> tile_starts(16, 8, 0.5), tile_starts(20, 8, 0.5), tile_starts(8, 8, 0.5)
        ([0, 4, 8], [0, 4, 8, 12], [0])
    """
    if size <= tile:
        return [0]
    count = math.ceil((size - tile) / (step * tile)) + 1
    spacing = (size - tile) / (count - 1)
    return [int(round(i * spacing)) for i in range(count)]


def predict_tiles(model, tiles: np.ndarray, mirror_axes=((),)) -> np.ndarray:
    """The model's probabilities of (B, h, w) tiles, averaged over the flips ``mirror_axes`` (each flipped back).

    Returns:
        (B, h, w, C) float32.
    """
    total = None
    for axes in mirror_axes:
        flipped = np.flip(tiles, axes) if axes else tiles
        probabilities = model.predict_on_batch(np.ascontiguousarray(flipped[..., None]))
        probabilities = probabilities[0] if isinstance(probabilities, (list, tuple)) else probabilities
        probabilities = np.asarray(probabilities, np.float32)
        probabilities = np.flip(probabilities, axes) if axes else probabilities
        total = probabilities if total is None else total + probabilities
    return total / len(mirror_axes)


def check_tile(model, tile, stride: int) -> None:
    """Raises ValueError if the model cannot take ``tile``-sized inputs (fixed size, or not a stride multiple)."""
    fixed = tuple(model.input_shape[1:3])
    if fixed[0] is not None or fixed[1] is not None:
        if tuple(tile) != fixed:
            raise ValueError(f"tile: {tile[0]}x{tile[1]}, but the model takes {fixed[0]}x{fixed[1]} inputs only")
    elif any(side < stride or side % stride for side in tile):
        raise ValueError(f"tile: {tile[0]}x{tile[1]}, but the model needs sides that are multiples of {stride}")


def predict_slice_probabilities(model, image: np.ndarray, tile=None, step: float = 0.5, tta: str = "none",
                                batch_size: int = 8, stride: int = 16) -> np.ndarray:
    """The class probabilities of every slice of a windowed canonical volume.

    Args:
        model: maps (B, h, w, 1) images to (B, h, w, C) probabilities.
        image: (z, y, x) float32, windowed to [0, 1].
        tile: (h, w) of the sliding window, or None: whole slices (free-size models get
            them zero-padded to a multiple of ``stride``).
        step: the distance between tiles as a fraction of the tile, in (0, 1].
        tta: "none" or "mirror" (``MIRRORS``).
        batch_size: slices per forward pass.
        stride: the model's total stride.

    Returns:
        (z, y, x, C) float32.
    """
    if not 0 < step <= 1:
        raise ValueError(f"step must lie in (0, 1], got {step}")
    if tta not in MIRRORS:
        raise ValueError(f"tta must be one of {tuple(MIRRORS)}, got {tta!r}")
    depth, height, width = image.shape
    if tile is None:
        fixed = model.input_shape[1] is not None
        tile = (height + (0 if fixed else -height % stride), width + (0 if fixed else -width % stride))
        weights = np.ones(tile, np.float32)
    else:
        check_tile(model, tile, stride)
        weights = gaussian_importance(tile)
    size = (max(height, tile[0]), max(width, tile[1]))
    padded = np.pad(image, ((0, 0), (0, size[0] - height), (0, size[1] - width)))
    starts = [(y, x) for y in tile_starts(size[0], tile[0], step) for x in tile_starts(size[1], tile[1], step)]
    coverage = np.zeros(size, np.float32)
    for y, x in starts:
        coverage[y:y + tile[0], x:x + tile[1]] += weights
    result = None
    for first in range(0, depth, batch_size):
        chunk = padded[first:first + batch_size]
        total = None
        for y, x in starts:
            probabilities = predict_tiles(model, chunk[:, y:y + tile[0], x:x + tile[1]], MIRRORS[tta])
            if total is None:
                total = np.zeros((len(chunk), *size, probabilities.shape[-1]), np.float32)
            total[:, y:y + tile[0], x:x + tile[1]] += probabilities * weights[..., None]
        if result is None:
            result = np.empty((depth, height, width, total.shape[-1]), np.float32)
        result[first:first + batch_size] = (total / coverage[..., None])[:, :height, :width]
    return result
