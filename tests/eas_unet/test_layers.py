import keras
import numpy as np
import pytest

from eas_unet import ECA, EASPyramid, SeparableConvBNHSwish

RNG = np.random.default_rng(0)


def numpy_eca(x, kernel):
    """ECA written out: channel means, zero-padded cross-correlation across channels, no bias, sigmoid, rescale."""
    k = len(kernel)
    descriptor = x.astype(np.float64).mean(axis=(1, 2))  # (B, C)
    padded = np.pad(descriptor, ((0, 0), (k // 2, k // 2)))
    mixed = np.stack([padded[:, j:j + descriptor.shape[1]] for j in range(k)], axis=-1) @ kernel
    weights = 1.0 / (1.0 + np.exp(-mixed))
    return x * weights[:, None, None, :]


# (channels, expected adaptive kernel size k with gamma=2, b=1)
ECA_CASES = [(16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5)]


@pytest.mark.parametrize("channels, kernel_size", ECA_CASES)
def test_eca_equals_numpy(channels, kernel_size):
    layer = ECA()
    x = RNG.normal(size=(2, 3, 5, channels)).astype("float32")
    layer.build(x.shape)
    assert layer.kernel_size == kernel_size
    assert layer.conv.kernel.shape == (kernel_size, 1, 1)
    assert layer.conv.bias is None
    kernel = RNG.normal(size=kernel_size)  # asymmetric: a flipped (convolution) order would differ
    layer.conv.kernel.assign(kernel.reshape(kernel_size, 1, 1).astype("float32"))
    np.testing.assert_allclose(np.asarray(layer(x)), numpy_eca(x, kernel), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(gamma=0), dict(gamma="2"), dict(b=None)])
def test_eca_rejects_bad_configuration(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ECA(**kwargs)


def test_separable_module_ends_in_hard_swish():
    keras.utils.set_random_seed(0)  # the kernels' draw: both h-swish regimes occur whatever ran before
    layer = SeparableConvBNHSwish(6)
    x = (3 * RNG.normal(size=(2, 7, 9, 4))).astype("float32")
    layer.build(x.shape)
    for bn in (layer.depthwise_bn, layer.pointwise_bn):  # non-trivial inference-mode BN
        bn.gamma.assign(RNG.uniform(0.5, 2.0, bn.gamma.shape).astype("float32"))
        bn.beta.assign(RNG.normal(size=bn.beta.shape).astype("float32"))
        bn.moving_mean.assign(RNG.normal(size=bn.moving_mean.shape).astype("float32"))
    hidden = keras.ops.leaky_relu(layer.depthwise_bn(layer.depthwise(x)), 0.01)
    pre_activation = np.asarray(layer.pointwise_bn(layer.pointwise(hidden)))
    # Both h-swish regimes occur, so ReLU, swish or a hand-written variant would differ.
    assert (np.abs(pre_activation) < 3).mean() > 0.1 and (np.abs(pre_activation) > 3).mean() > 0.01
    expected = np.asarray(keras.activations.hard_swish(pre_activation))
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-6, atol=1e-6)


# (constructor kwargs, input shape, expected output shape)
SEPARABLE_CASES = [
    (dict(filters=8), (2, 16, 12, 3), (2, 16, 12, 8)),
    (dict(filters=4, kernel_size=5), (1, 5, 7, 6), (1, 5, 7, 4)),
    (dict(filters=16, dilation_rate=6), (1, 8, 8, 2), (1, 8, 8, 16)),
]


@pytest.mark.parametrize("kwargs, in_shape, out_shape", SEPARABLE_CASES)
def test_separable_module_shapes_and_weights(kwargs, in_shape, out_shape):
    layer = SeparableConvBNHSwish(**kwargs)
    assert tuple(layer(np.ones(in_shape, "float32")).shape) == out_shape
    k, channels, filters = kwargs.get("kernel_size", 3), in_shape[-1], kwargs["filters"]
    # Depthwise then pointwise, no biases: k*k*C + C*F weights (+ 4 BN vectors each).
    assert layer.depthwise.kernel.shape == (k, k, channels, 1)
    assert layer.pointwise.kernel.shape == (1, 1, channels, filters)
    assert layer.depthwise.bias is None and layer.pointwise.bias is None
    assert layer.depthwise.dilation_rate == (kwargs.get("dilation_rate", 1),) * 2


def test_pyramid_serves_any_size():
    inputs = keras.Input((None, None, 16))
    pyramid = EASPyramid(8)
    model = keras.Model(inputs, pyramid(inputs))  # one graph, sizes read at run time
    for height, width in [(8, 8), (6, 10)]:
        out = np.asarray(model(RNG.random((2, height, width, 16), dtype=np.float32)))
        assert out.shape == (2, height, width, 8)
    assert [block.dilation_rate for block in pyramid.atrous] == [6, 12, 18]
    assert len(pyramid.eca) == 4  # one per conv branch
    assert pyramid.project_conv.kernel.shape == (1, 1, 5 * 8, 8)  # five branches concatenated


ILL_CASES = [
    (SeparableConvBNHSwish, dict(filters=0), "filters"),
    (SeparableConvBNHSwish, dict(filters=4, kernel_size=0), "kernel_size"),
    (SeparableConvBNHSwish, dict(filters=4, dilation_rate=1.5), "dilation_rate"),
    (EASPyramid, dict(filters=-1), "filters"),
    (EASPyramid, dict(filters=8, dilation_rates=[]), "dilation_rates"),
    (EASPyramid, dict(filters=8, dilation_rates=[6, 0, 18]), "dilation rate"),
]


@pytest.mark.parametrize("layer, kwargs, argument", ILL_CASES)
def test_bad_layer_configuration_names_the_argument(layer, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        layer(**kwargs)
