import keras
import numpy as np
import pytest

from common.nn.initializers import torch_defaults, torch_fan_in, torch_uniform
from tests.references import pytorch_init

# (layer, input channels): one per layer type the PyTorch-born packages use, wide enough for the statistics.
LAYER_CASES = [
    (lambda init: keras.layers.Conv2D(256, 3, **init), 8),
    (lambda init: keras.layers.Conv2D(256, 7, strides=2, **init), 3),
    (lambda init: keras.layers.Conv1D(256, 5, **init), 4),
    (lambda init: keras.layers.Dense(256, **init), 64),
    (lambda init: keras.layers.Conv2DTranspose(256, 2, strides=2, **init), 32),
    (lambda init: keras.layers.DepthwiseConv2D(3, **{"depthwise_initializer": init.get("kernel_initializer"),
                                                     "bias_initializer": init.get("bias_initializer", "zeros")}
                                                  if init else {}), 256),
]
LAYER_IDS = ["conv3x3", "conv7x7_stride2", "conv1d", "dense", "transposed", "depthwise"]


def _built(make, channels, init):
    layer = make(init)
    probe = make({})  # the same layer type with Keras' defaults, to read its kernel's shape
    rank = 1 if isinstance(probe, keras.layers.Conv1D) else 0 if isinstance(probe, keras.layers.Dense) else 2
    layer.build((None, *([16] * rank), channels))
    return layer


@pytest.mark.parametrize("make, channels", LAYER_CASES, ids=LAYER_IDS)
def test_every_layer_type_draws_pytorchs_bound_and_spread(make, channels):
    probe = _built(make, channels, {})
    kernel = probe.kernel
    depthwise = isinstance(probe, keras.layers.DepthwiseConv2D)
    layer = _built(make, channels, torch_defaults(tuple(kernel.shape), depthwise))
    assert pytorch_init.check_layer(layer) == 2  # kernel and bias


@pytest.mark.parametrize("make, channels", LAYER_CASES, ids=LAYER_IDS)
def test_the_check_fails_with_keras_defaults(make, channels):
    with pytest.raises(AssertionError):  # glorot_uniform and zero biases are not PyTorch's draws
        pytorch_init.check_layer(_built(make, channels, {}))


def test_fan_in_follows_pytorchs_weight_layout():
    assert torch_fan_in((3, 3, 128, 1), depthwise=True) == 9  # Conv2d(128, 128, 3, groups=128)
    assert torch_fan_in((2, 2, 64, 128)) == 2 * 2 * 64  # ConvTranspose2d(128, 64, 2): weight (128, 64, 2, 2)
    assert torch_fan_in((7, 7, 3, 64)) == 147
    assert torch_fan_in((5, 1, 1)) == 5  # ECA's Conv1d(1, 1, 5)


def test_each_layer_draws_its_own_values_and_saves_as_plain_keras():
    a, b = torch_defaults((3, 3, 16, 16))["kernel_initializer"], torch_defaults((3, 3, 16, 16))["kernel_initializer"]
    assert not np.array_equal(np.asarray(a((3, 3, 16, 16))), np.asarray(b((3, 3, 16, 16))))
    config = keras.initializers.serialize(torch_uniform(36))  # loads where the zoo is not imported
    assert config["module"] == "keras.initializers" and config["class_name"] == "RandomUniform"
    assert (config["config"]["minval"], config["config"]["maxval"]) == pytest.approx((-1 / 6, 1 / 6))


@pytest.mark.parametrize("fan_in", [0, -3, 2.5, True, "9"])
def test_bad_fan_in_names_it(fan_in):
    with pytest.raises(ValueError, match="fan_in"):
        torch_uniform(fan_in)
