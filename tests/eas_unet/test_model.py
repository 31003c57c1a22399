
import keras
import numpy as np
import pytest

import eas_unet
import unet_transformer
from eas_unet.model import DEPTH
from tests import helpers
from tests.references import pytorch_init

SIDES = ["side_1", "side_2", "side_3", "side_4"]

SHAPE_CASES = [
    # (build_model kwargs, input shape, expected shape of every output)
    (dict(num_classes=2, base_filters=4), (2, 64, 64, 1), (2, 64, 64, 2)),
    (dict(num_classes=3, base_filters=4), (1, 48, 80, 1), (1, 48, 80, 3)),
    (dict(input_shape=(48, 80, 2), base_filters=2, deep_supervision=False), (1, 48, 80, 2), (1, 48, 80, 2)),
    (dict(num_classes=4, base_filters=4, deep_supervision=False), (2, 64, 64, 1), (2, 64, 64, 4)),
]


@pytest.mark.parametrize("kwargs, in_shape, out_shape", SHAPE_CASES)
def test_output_shapes_names_and_softmax(kwargs, in_shape, out_shape):
    model = eas_unet.build_model(**kwargs)
    outputs = model(np.random.rand(*in_shape).astype("float32"))
    if kwargs.get("deep_supervision", True):
        assert model.output_names == ["probabilities", *SIDES]
    else:
        assert model.output_names == ["probabilities"]
        outputs = [outputs]
    for output in outputs:
        assert tuple(output.shape) == out_shape
        np.testing.assert_allclose(np.asarray(output).sum(-1), 1.0, atol=1e-5)
    # Fig. 6: the four stages' full-resolution logits are concatenated and fused by a 1x1 conv.
    classes = out_shape[-1]
    assert model.get_layer("fusion").kernel.shape == (1, 1, 4 * classes, classes)


def test_one_model_serves_several_sizes():
    model = eas_unet.build_model(base_filters=2, num_classes=3)
    for height, width in [(64, 64), (48, 80)]:
        outputs = model(np.random.rand(1, height, width, 1).astype("float32"))
        assert [tuple(o.shape) for o in outputs] == [(1, height, width, 3)] * 5


def test_mixed_precision_outputs_float32():
    with helpers.dtype_policy("mixed_float16"):
        model = eas_unet.build_model(base_filters=4)
        outputs = model(np.random.rand(1, 32, 48, 1).astype("float32"))
    assert model.get_layer("eas_pyramid").compute_dtype == "float16"
    for output in outputs:
        assert keras.ops.dtype(output) == "float32"
        np.testing.assert_allclose(np.asarray(output).sum(-1), 1.0, atol=1e-3)


@pytest.mark.parametrize("base_filters", [32, 64])
def test_fewer_parameters_than_unet_of_same_widths(base_filters):
    kwargs = dict(input_shape=(256, 256, 1), num_classes=2, base_filters=base_filters)
    unet = unet_transformer.build_model("unet", **kwargs).count_params()
    eas = eas_unet.build_model(**kwargs).count_params()
    print(f"base {base_filters}: U-Net {unet:,}; EAS U-Net {eas:,} ({eas / unet:.0%})")
    assert eas < unet


ILL_CASES = [
    (dict(input_shape=(100, 100, 1)), "input_shape"),
    (dict(input_shape=(64, 40, 1)), "input_shape"),
    (dict(input_shape=(64, 64)), "input_shape"),
    (dict(input_shape=(64, 64, None)), "input_shape"),
    (dict(num_classes=1), "num_classes"),
    (dict(num_classes=2.0), "num_classes"),
    (dict(base_filters=0), "base_filters"),
    (dict(base_filters=True), "base_filters"),
    (dict(deep_supervision="yes"), "deep_supervision"),
]


@pytest.mark.parametrize("kwargs, argument", ILL_CASES)
def test_bad_configuration_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        eas_unet.build_model(**kwargs)


def test_both_settings_share_weights():
    x = np.random.rand(1, 32, 32, 1).astype("float32")
    supervised = eas_unet.build_model(base_filters=2)
    plain = eas_unet.build_model(base_filters=2, deep_supervision=False)
    plain.set_weights(supervised.get_weights())
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(supervised(x)[0]), atol=1e-6)


def test_both_settings_reload_in_fresh_process(tmp_path):
    x = np.random.default_rng(0).random((2, 32, 48, 1), dtype=np.float32)
    models = {str(setting): eas_unet.build_model(num_classes=3, base_filters=4, deep_supervision=setting)
              for setting in (True, False)}
    report = helpers.reload_in_fresh_process(tmp_path, models, x, "eas_unet")
    assert report["True"]["outputs"] == ["probabilities", *SIDES]
    assert report["False"]["outputs"] == ["probabilities"]

def test_stride_is_two_to_the_number_of_poolings():
    assert eas_unet.STRIDE == 2**DEPTH == 16
    model = eas_unet.build_model(input_shape=(None, None, 1), base_filters=2, deep_supervision=False)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == DEPTH


def test_every_convolution_starts_as_pytorch_initialises_it():
    """The authors trained in PyTorch 2.0: every kernel and bias from U(+-1/sqrt(fan_in)), depthwise fan kh * kw."""
    model = eas_unet.build_model(input_shape=(64, 64, 1), num_classes=3, base_filters=16)
    kinds = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose)
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, kinds)]
    assert {type(layer) for layer in convs} == set(kinds)
    checked = sum(pytorch_init.check_layer(layer) for layer in convs)
    assert checked == len(convs) + sum(layer.use_bias for layer in convs)
