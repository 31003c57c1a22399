"""Ops shared by the model packages: bilinear upsampling, the configuration checks, BN momentum."""

import keras
import numpy as np
import pytest
from keras import ops

from common.nn.ops import (
    BN_MOMENTUM,
    batch_norm,
    check_input_shape,
    check_positive_int,
    is_positive_int,
    upsample_bilinear,
)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upsample_bilinear_matches_image_resize(factor):
    x = RNG.random((2, 5, 7, 3), dtype=np.float32)
    expected = ops.image.resize(x, (5 * factor, 7 * factor), interpolation="bilinear")
    np.testing.assert_allclose(np.asarray(upsample_bilinear(x, factor)), np.asarray(expected), atol=1e-6)


def test_upsample_bilinear_by_one_is_the_identity():
    x = RNG.random((1, 3, 4, 2), dtype=np.float32)
    assert upsample_bilinear(x, 1) is x


def test_upsample_bilinear_on_sizes_unknown_when_the_graph_is_built():
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: upsample_bilinear(t, 2))(inputs))
    for height, width in [(3, 5), (4, 2)]:
        x = RNG.random((1, height, width, 2), dtype=np.float32)
        expected = ops.image.resize(x, (2 * height, 2 * width), interpolation="bilinear")
        np.testing.assert_allclose(np.asarray(model(x)), np.asarray(expected), atol=1e-6)


# (input_shape, stride): accepted
GOOD_SHAPES = [((None, None, 1), 16), ((64, 48, 3), 16), ((None, 128, 1), 64), ((16, 16, 2), 16)]
# (input_shape, stride, text the message must contain)
BAD_SHAPES = [
    ((100, 100, 1), 16, "multiples of 16 (why)"),
    ((64, 40, 1), 16, "multiples of 16"),
    ((0, 64, 1), 16, "multiples of 16"),
    ((64, 64), 16, "channels set"),
    ((64, 64, None), 16, "channels set"),
    ((128, 96, 3), 64, "multiples of 64"),
]


@pytest.mark.parametrize("input_shape, stride", GOOD_SHAPES)
def test_input_shape_accepted(input_shape, stride):
    check_input_shape(input_shape, stride, "why")


@pytest.mark.parametrize("input_shape, stride, text", BAD_SHAPES)
def test_bad_input_shape_names_the_argument(input_shape, stride, text):
    with pytest.raises(ValueError, match="input_shape") as error:
        check_input_shape(input_shape, stride, "why")
    assert text in str(error.value)


@pytest.mark.parametrize("value, expected", [(1, True), (64, True), (0, False), (-3, False), (True, False),
                                             (2.0, False), ("2", False), (None, False)])
def test_is_positive_int(value, expected):
    assert is_positive_int(value) is expected


def test_check_positive_int_names_the_argument_and_the_layer():
    check_positive_int(3, "filters")
    with pytest.raises(ValueError, match=r"^filters must be a positive integer, got True$"):
        check_positive_int(True, "filters")
    with pytest.raises(ValueError, match=r"^ECA: kernel_size must be a positive integer, got 0$"):
        check_positive_int(0, "kernel_size", "ECA")


def test_bn_momentum_is_pytorch_default_rule():
    # PyTorch (momentum 0.1): running = (1 - 0.1) * running + 0.1 * batch statistic.
    bn = keras.layers.BatchNormalization(momentum=BN_MOMENTUM)
    x = RNG.normal(3.0, 2.0, size=(16, 4)).astype("float32")
    bn(x, training=True)
    expected = (1 - 0.1) * 0.0 + 0.1 * x.mean(0)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), expected, rtol=1e-5)


def test_batch_norm_normalises_as_pytorch_batchnorm2d():
    # PyTorch, training mode: y = (x - mean) / sqrt(biased var + 1e-5) * gamma + beta, and the running
    # statistics move by 0.1 towards the batch's (the unbiased variance).
    bn = batch_norm()
    x = RNG.normal(0.0, 0.01, size=(8, 3, 3, 2)).astype("float32")  # small variance: epsilon matters
    y = np.asarray(bn(x, training=True))
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
    assert not np.allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-2)  # Keras' default epsilon
    np.testing.assert_allclose(np.asarray(bn.moving_mean), 0.1 * mean, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("build", [
    lambda: __import__("unet_transformer").build_model("u_transformer", base_filters=4, heads=2),
    lambda: __import__("eas_unet").build_model(base_filters=4),
])
def test_every_batch_norm_of_the_pytorch_originals_uses_their_epsilon(build):
    model = build()
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and {(layer.momentum, layer.epsilon) for layer in norms} == {(0.9, 1e-5)}
