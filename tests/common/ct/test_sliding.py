import numpy as np
import pytest

from common.ct import sliding
from tests import helpers


@pytest.fixture(scope="module")
def pixelwise():
    return helpers.conv_model(helpers.THRESHOLD_KERNEL, helpers.THRESHOLD_BIAS)


@pytest.fixture(scope="module")
def left_looking():
    """Class 1's logit is 8x the left neighbour's value: not symmetric under a left-right flip."""
    kernel = np.zeros((3, 3, 1, 2), np.float32)
    kernel[1, 0, 0, 1] = 8.0
    return helpers.conv_model(kernel, np.array([2.0, 0.0]))


class TileStub:
    """A free-size "model" whose class-1 probability over a tile is the tile's top-left pixel value."""

    input_shape = (None, None, None, 1)

    def __init__(self):
        self.shapes = []

    def predict_on_batch(self, tiles):
        self.shapes.append(tiles.shape)
        first = np.broadcast_to(tiles[:, :1, :1, :], tiles.shape)
        return np.concatenate([1 - first, first], axis=-1)


def test_gaussian_is_nnunets_sigma_tile_over_8_with_maximum_1():
    tile = (16, 32)
    weights = sliding.gaussian_importance(tile)
    y, x = np.mgrid[:16, :32]
    expected = np.exp(-((y - 8) ** 2 / (2 * 2.0 ** 2) + (x - 16) ** 2 / (2 * 4.0 ** 2)))
    # scipy truncates the kernel at 4 sigma: inside that radius it is the Gaussian itself.
    inside = (abs(y - 8) <= 8) & (abs(x - 16) <= 16)
    np.testing.assert_allclose(weights[inside], expected[inside], rtol=1e-5)
    assert weights.max() == 1.0 and weights.min() > 0 and weights.dtype == np.float32


@pytest.mark.parametrize("size, tile, step, starts", [
    (64, 64, 0.5, [0]),
    (100, 64, 0.5, [0, 18, 36]),     # ceil(36 / 32) + 1 = 3 tiles, the last at the border
    (128, 64, 0.5, [0, 32, 64]),
    (130, 64, 0.5, [0, 22, 44, 66]),  # ceil(66 / 32) + 1 = 4 tiles, evenly spread
    (128, 64, 1.0, [0, 64]),
    (128, 64, 0.25, [0, 16, 32, 48, 64]),
])
def test_tile_starts_cover_the_axis_as_nnunet(size, tile, step, starts):
    assert sliding.tile_starts(size, tile, step) == starts


def test_sliding_window_equals_whole_slices_for_a_translation_equivariant_model(pixelwise):
    image = np.random.default_rng(0).random((3, 50, 70), dtype=np.float32)
    whole = sliding.predict_slice_probabilities(pixelwise, image, batch_size=2)
    tiled = sliding.predict_slice_probabilities(pixelwise, image, tile=(32, 48), step=0.5, batch_size=2)
    assert tiled.shape == whole.shape == (3, 50, 70, 3)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    np.testing.assert_allclose(tiled.sum(-1), 1.0, atol=1e-5)


def test_overlaps_are_the_gaussian_weighted_mean_of_the_tiles():
    image = np.tile(np.arange(16, dtype=np.float32) / 16, (1, 8, 1))  # pixel value = x / 16
    stub = TileStub()
    result = sliding.predict_slice_probabilities(stub, image, tile=(8, 8), step=0.5, stride=8)
    assert [s[1:3] for s in stub.shapes] == [(8, 8)] * 3  # tiles at x = 0, 4, 8
    g = sliding.gaussian_importance((8, 8))[0]  # any row: the map is separable with the same rows up to a factor
    values = {0: 0.0, 4: 4 / 16, 8: 8 / 16}  # each tile's class-1 probability: its top-left pixel
    expected = np.zeros(16)
    for x in range(16):
        covering = [s for s in values if s <= x < s + 8]
        expected[x] = sum(values[s] * g[x - s] for s in covering) / sum(g[x - s] for s in covering)
    np.testing.assert_allclose(result[0, 3, :, 1], expected, rtol=1e-5)


def test_slices_smaller_than_the_tile_are_zero_padded(pixelwise):
    image = np.full((1, 20, 24), 0.9, np.float32)
    stub = TileStub()
    sliding.predict_slice_probabilities(stub, image, tile=(32, 32))
    assert stub.shapes == [(1, 32, 32, 1)]
    probabilities = sliding.predict_slice_probabilities(pixelwise, image, tile=(32, 32))
    assert probabilities.shape == (1, 20, 24, 3) and (probabilities.argmax(-1) == 2).all()


def test_mirroring_a_symmetric_model_changes_nothing(pixelwise):
    image = np.random.default_rng(1).random((2, 32, 32), dtype=np.float32)
    plain = sliding.predict_slice_probabilities(pixelwise, image)
    mirrored = sliding.predict_slice_probabilities(pixelwise, image, tta="mirror")
    np.testing.assert_allclose(mirrored, plain, atol=1e-6)


def test_mirroring_averages_the_four_flips(left_looking):
    image = np.random.default_rng(2).random((2, 32, 48), dtype=np.float32)
    mirrored = sliding.predict_slice_probabilities(left_looking, image, tta="mirror")
    x = image[..., None]
    expected = np.mean([np.asarray(left_looking(x)),
                        np.asarray(left_looking(x[:, :, ::-1].copy()))[:, :, ::-1],
                        np.asarray(left_looking(x[:, ::-1].copy()))[:, ::-1],
                        np.asarray(left_looking(x[:, ::-1, ::-1].copy()))[:, ::-1, ::-1]], axis=0)
    np.testing.assert_allclose(mirrored, expected, atol=1e-6)
    plain = sliding.predict_slice_probabilities(left_looking, image)
    assert np.abs(mirrored - plain).max() > 0.1  # the flips do matter for this model


def test_tiles_the_model_cannot_take(pixelwise):
    import unet_transformer

    with pytest.raises(ValueError, match="tile: 40x48, but the model needs sides that are multiples of 16"):
        sliding.check_tile(pixelwise, (40, 48), 16)
    fixed = unet_transformer.build_model("unet", input_shape=(32, 32, 1), num_classes=2, base_filters=2)
    with pytest.raises(ValueError, match="tile: 64x64, but the model takes 32x32 inputs only"):
        sliding.check_tile(fixed, (64, 64), 16)
    sliding.check_tile(fixed, (32, 32), 16)
    with pytest.raises(ValueError, match="step"):
        sliding.predict_slice_probabilities(pixelwise, np.zeros((1, 16, 16), np.float32), step=0)
