"""HED stain jitter: shape, dtype and range kept, colours moved by a bounded amount, identity at sigma 0."""

import numpy as np
import pytest
import tensorflow as tf

from common.slides import stain


def _tiles(seed=0, count=3):
    """Float RGB tiles in (0, 1] with pale, pink and purple pixels, as H&E has, and a few dark and white ones."""
    rng = np.random.default_rng(seed)
    tiles = rng.integers(1, 256, (count, 16, 16, 3)).astype(np.float32) / 255.0
    tiles[:, 0, 0] = 1.0
    return tuple(tf.constant(t) for t in tiles)


def _bound(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """|RGB' - RGB| <= RGB (e^b - 1): b bounds |dOD| = |(d alpha HED + d beta) @ RGB_FROM_HED| per channel."""
    hed = (-np.log(np.maximum(rgb, stain.EPS))) @ stain.HED_FROM_RGB
    b = (sigma * np.abs(hed) + sigma) @ np.abs(stain.RGB_FROM_HED)
    return rgb * np.expm1(b)


def test_rgb_to_hed_inverts_and_unmixes_pure_stains():
    rgb = np.stack([np.asarray(t) for t in _tiles()])
    np.testing.assert_allclose(stain.hed_to_rgb(stain.rgb_to_hed(tf.constant(rgb))), rgb, atol=2e-6)
    haematoxylin = np.exp(-stain.RGB_FROM_HED[0] * 0.8)  # 0.8 OD of haematoxylin alone
    np.testing.assert_allclose(stain.rgb_to_hed(tf.constant(haematoxylin, tf.float32)), [0.8, 0, 0], atol=1e-5)


def test_jitter_keeps_shape_dtype_range_and_moves_colours_a_bounded_amount():
    tiles = _tiles()
    out = stain.hed_jitter(tiles, 0.05, tf.constant([3, 7]))
    assert len(out) == 3
    for before, after in zip(tiles, out):
        assert after.shape == before.shape and after.dtype == tf.float32
        after, before = after.numpy(), before.numpy()
        assert after.min() >= 0 and after.max() <= 1
        change = np.abs(after - before)
        assert change.mean() > 1e-3  # it changes colours
        assert (change <= _bound(before, 0.05) + 1e-5).all()
    strong = stain.hed_jitter(tiles, 0.2, tf.constant([3, 7]))
    assert np.abs(strong[0] - tiles[0]).mean() > np.abs(out[0] - tiles[0]).mean()


def test_one_draw_for_the_three_tiles_of_a_triplet_and_one_per_seed():
    tile = _tiles(count=1)[0]
    same = stain.hed_jitter((tile, tile, tile), 0.05, tf.constant([1, 2]))
    np.testing.assert_array_equal(same[0], same[1])
    np.testing.assert_array_equal(same[0], same[2])
    again = stain.hed_jitter((tile,), 0.05, tf.constant([1, 2]))[0]
    other = stain.hed_jitter((tile,), 0.05, tf.constant([1, 3]))[0]
    np.testing.assert_array_equal(again, same[0])
    assert np.abs(other - again).max() > 1e-3


def test_sigma_zero_is_the_identity():
    tiles = _tiles()
    for before, after in zip(tiles, stain.hed_jitter(tiles, 0.0, tf.constant([5, 5]))):
        np.testing.assert_allclose(after, before, atol=2e-6)


def test_negative_sigma_is_refused():
    with pytest.raises(ValueError, match="sigma"):
        stain.hed_jitter(_tiles(), -0.1, tf.constant([0, 0]))
