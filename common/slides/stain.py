"""Stain augmentation: HED jitter (Tellez et al. 2018), one draw for the three tiles of a triplet.

RGB is turned into optical density, ``OD = -ln(RGB)``, and unmixed into
haematoxylin, eosin and DAB by Ruifrok & Johnston's colour deconvolution
(``HED = OD @ HED_FROM_RGB``). Each stain is scaled and shifted,
``HED'_c = alpha_c * HED_c + beta_c`` with ``alpha_c ~ U(1 - sigma, 1 + sigma)``
and ``beta_c ~ U(-sigma, sigma)`` (Tellez et al.; sigma 0.05 is their light
setting), and mixed back, ``RGB' = exp(-HED' @ RGB_FROM_HED)``, clipped to
[0, 1]. The three tiles of a triplet share one draw: the same tissue, stained
once. The paper does not augment; this is the usual baseline against a
two-lab stain shift (``zoo tri-al --stain-augment``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Ruifrok & Johnston (2001): the OD vectors of H, E and DAB as rows. Written out because scikit-image (whose
# rgb_from_hed rounds these to two digits) is not a dependency of the zoo.
RGB_FROM_HED = np.array([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105], [0.268, 0.570, 0.776]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
EPS = 1e-6  # the darkest intensity: keeps ln finite on black pixels (scikit-image's choice)
DEFAULT_SIGMA = 0.05


def rgb_to_hed(rgb):
    """Stain concentrations (..., 3) of float RGB in [0, 1] (colour deconvolution, natural-log OD)."""
    od = -tf.math.log(tf.maximum(rgb, EPS))
    return tf.tensordot(od, tf.constant(HED_FROM_RGB, od.dtype), 1)


def hed_to_rgb(hed):
    """Float RGB in [0, 1] of stain concentrations (the inverse of ``rgb_to_hed`` inside the range)."""
    od = tf.tensordot(hed, tf.constant(RGB_FROM_HED, hed.dtype), 1)
    return tf.clip_by_value(tf.exp(-od), 0.0, 1.0)


def hed_jitter(tiles, sigma: float, seed):
    """The tiles (float32 RGB in [0, 1]) with one random per-stain scale and shift applied to all of them.

    Args:
        tiles: a tuple of float RGB tensors (..., 3), e.g. the 2.5x, 10x and 40x tiles of one triplet.
        sigma: the jitter's size, >= 0 (0: identity, up to float rounding).
        seed: a stateless seed, shape (2,) integers: the same seed, the same colours.

    Example:

    >>> tile = tf.fill((4, 4, 3), 0.5)
    >>> out = hed_jitter((tile, tile), 0.05, tf.constant([1, 2]))
    >>> bool(tf.reduce_all(out[0] == out[1]))
    True
    """
    if not sigma >= 0:
        raise ValueError(f"sigma must be non-negative, got {sigma}")
    u = tf.random.stateless_uniform((2, 3), seed, -1.0, 1.0)
    alpha, beta = 1.0 + sigma * u[0], sigma * u[1]
    jittered = hed_to_rgb(rgb_to_hed(tf.stack(tiles)) * alpha + beta)  # the tiles stacked: one op chain for all
    return tuple(tf.unstack(jittered))
