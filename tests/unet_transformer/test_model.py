
import keras
import numpy as np
import pytest

import unet_transformer
from tests import helpers
from tests.references import pytorch_init

SHAPE_CASES = [
    # (build_model kwargs, input shape, expected output shape)
    (dict(variant="unet", input_shape=(None, None, 1), num_classes=2, base_filters=4), (2, 64, 64, 1), (2, 64, 64, 2)),
    (dict(variant="unet", input_shape=(None, None, 1), num_classes=8, base_filters=4), (1, 48, 80, 1), (1, 48, 80, 8)),
    (dict(variant="unet", input_shape=(32, 32, 3), num_classes=3, base_filters=2), (3, 32, 32, 3), (3, 32, 32, 3)),
    (dict(variant="attention_unet", num_classes=3, base_filters=4), (2, 32, 48, 1), (2, 32, 48, 3)),
    (dict(variant="attention_unet", input_shape=(64, 64, 2), base_filters=6), (1, 64, 64, 2), (1, 64, 64, 2)),
    (dict(variant="mhsa", num_classes=4, base_filters=4, heads=8), (2, 32, 32, 1), (2, 32, 32, 4)),
    (dict(variant="mhsa", base_filters=3, heads=6, positional_encoding=False), (1, 48, 32, 1), (1, 48, 32, 2)),
    (dict(variant="mhca", num_classes=3, base_filters=8, heads=8), (2, 32, 32, 1), (2, 32, 32, 3)),
    (dict(variant="mhca", base_filters=4, heads=4, mhca_levels=4, token_stride=[2, 2, 1, 1]), (1, 64, 48, 1),
     (1, 64, 48, 2)),
    (dict(variant="mhca", base_filters=4, heads=2, mhca_levels=1), (1, 32, 64, 1), (1, 32, 64, 2)),
    (dict(variant="u_transformer", num_classes=3, base_filters=4, heads=4), (2, 64, 64, 1), (2, 64, 64, 3)),
    (dict(variant="u_transformer", input_shape=(48, 48, 1), base_filters=8, token_stride=2), (1, 48, 48, 1),
     (1, 48, 48, 2)),
    (dict(variant="u_transformer", base_filters=4, heads=4, mhca_levels=0, positional_encoding=False),
     (1, 32, 32, 1), (1, 32, 32, 2)),
]


@pytest.mark.parametrize("kwargs, in_shape, out_shape", SHAPE_CASES)
def test_output_shapes_and_softmax(kwargs, in_shape, out_shape):
    model = unet_transformer.build_model(**kwargs)
    out = np.asarray(model(np.random.rand(*in_shape).astype("float32")))
    assert out.shape == out_shape
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


ILL_CASES = [
    (dict(variant="segformer"), "variant"),
    (dict(input_shape=(100, 100, 1)), "input_shape"),
    (dict(input_shape=(64, 64)), "input_shape"),
    (dict(input_shape=(64, 64, None)), "input_shape"),
    (dict(num_classes=1), "num_classes"),
    (dict(base_filters=0), "base_filters"),
    (dict(mhca_levels=5), "mhca_levels"),
    (dict(mhca_levels=-1), "mhca_levels"),
    (dict(heads=3), "heads"),  # 3 does not divide the widths 128..1024
    (dict(variant="mhsa", base_filters=4, heads=0), "heads"),
    (dict(variant="mhca", base_filters=4, heads=8, mhca_levels=4), "heads"),  # top skip has 4 channels
    (dict(variant="mhca", base_filters=3, heads=2), "positional_encoding"),  # 6 channels at skip level 1
    (dict(token_stride=0), "token_stride"),
    (dict(token_stride=[1, 2]), "token_stride"),
    (dict(token_stride=[1, 1, 1, 2.0]), "token_stride"),
    (dict(variant="unet", return_attention=True), "return_attention"),
    (dict(variant="mhca", mhca_levels=0, return_attention=True), "return_attention"),
]


@pytest.mark.parametrize("kwargs, argument", ILL_CASES)
def test_bad_configuration_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        unet_transformer.build_model(**kwargs)


def test_paper_size_parameter_counts():
    # Paper section 3 (base 64, 512x512, 8 classes): U-Net ~30M, MHSA ~5M, each MHCA ~2.5M.
    kwargs = dict(input_shape=(512, 512, 1), num_classes=8, base_filters=64)
    unet = unet_transformer.build_model("unet", **kwargs).count_params()
    model = unet_transformer.build_model("u_transformer", **kwargs)
    mhsa = model.get_layer("mhsa").count_params()
    mhca = {level: model.get_layer(f"mhca{level}").count_params() for level in (3, 2, 1)}
    print(f"U-Net {unet:,}; MHSA {mhsa:,}; MHCA by level {mhca}; U-Transformer {model.count_params():,}")
    assert 28e6 <= unet <= 33e6
    assert 3.5e6 <= mhsa <= 6e6
    assert 1.5e6 <= mhca[3] <= 3.5e6
    assert model.count_params() == unet + mhsa + sum(mhca.values())  # the blocks add to the backbone


def test_one_model_serves_several_sizes():
    model = unet_transformer.build_model(base_filters=4, heads=4, return_attention=True)
    for height, width in [(128, 128), (192, 256)]:
        probabilities, mhsa, *mhca = model(np.random.rand(1, height, width, 1).astype("float32"))
        tokens = (height // 16) * (width // 16)
        assert probabilities.shape == (1, height, width, 2)
        assert mhsa.shape == (1, 4, tokens, tokens)
        assert [a.shape[-1] for a in mhca] == [tokens, 4 * tokens, 16 * tokens]  # levels 3, 2, 1


def test_token_stride_shrinks_the_cross_attention_maps():
    x = np.random.rand(1, 64, 64, 1).astype("float32")
    kwargs = dict(base_filters=4, heads=4, mhca_levels=4, return_attention=True)
    plain = unet_transformer.build_model(**kwargs)
    strided = unet_transformer.build_model(token_stride=2, **kwargs)
    per_level = unet_transformer.build_model(token_stride=[4, 2, 1, 1], **kwargs)
    assert strided.output_names == plain.output_names
    shapes = {name: [o.shape for o in m(x)] for name, m in [("plain", plain), ("2", strided), ("list", per_level)]}
    assert shapes["plain"][0] == shapes["2"][0] == shapes["list"][0] == (1, 64, 64, 2)
    assert shapes["plain"][1] == shapes["2"][1] == (1, 4, 16, 16)  # MHSA is not pooled
    # MHCA at levels 3..0: (S / 2)^2 tokens, divided by token_stride^2.
    assert [s[-1] for s in shapes["plain"][2:]] == [16, 64, 256, 1024]
    assert [s[-1] for s in shapes["2"][2:]] == [4, 16, 64, 256]
    assert [s[-1] for s in shapes["list"][2:]] == [16, 64, 64, 64]


def test_mixed_precision_outputs_float32():
    with helpers.dtype_policy("mixed_float16"):
        model = unet_transformer.build_model(base_filters=4, heads=4, return_attention=True)
        outputs = model(np.random.rand(1, 32, 32, 1).astype("float32"))
    assert model.get_layer("mhsa").compute_dtype == "float16"
    for output in outputs:
        assert keras.ops.dtype(output) == "float32"
    np.testing.assert_allclose(np.asarray(outputs[0]).sum(-1), 1.0, atol=1e-3)
    for attention in outputs[1:]:
        np.testing.assert_allclose(np.asarray(attention).sum(-1), 1.0, atol=1e-5)


def test_every_variant_reloads_in_fresh_process(tmp_path):
    x = np.random.default_rng(0).random((2, 32, 48, 1), dtype=np.float32)
    models = {variant: unet_transformer.build_model(variant, num_classes=3, base_filters=4, heads=4,
                                                    token_stride=2 if variant == "mhca" else None,
                                                    return_attention=variant != "unet")
              for variant in unet_transformer.VARIANTS}
    names = {variant: report["outputs"] for variant, report in
             helpers.reload_in_fresh_process(tmp_path, models, x, "unet_transformer").items()}
    assert names["u_transformer"] == ["probabilities", "mhsa_attention", "mhca_attention_3", "mhca_attention_2",
                                      "mhca_attention_1"]
    assert names["attention_unet"][1:] == [f"gate_attention_{level}" for level in (3, 2, 1, 0)]
    assert names["unet"] == ["probabilities"]


def test_keeps_tensorflows_initialisation():
    """The paper trained in TensorFlow: Keras' glorot_uniform kernels and zero biases, not PyTorch's draws."""
    model = unet_transformer.build_model("u_transformer", input_shape=(64, 64, 1), base_filters=8, heads=2)
    kernels = [layer for layer in model._flatten_layers() if getattr(layer, "kernel", None) is not None]
    assert len(kernels) > 20
    for layer in kernels:
        shape = tuple(layer.kernel.shape)
        taps = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        limit = np.sqrt(6.0 / (taps * (shape[-2] + shape[-1])))  # glorot_uniform
        assert np.abs(np.asarray(layer.kernel)).max() <= limit * (1 + 1e-6), layer.kernel.path
        if getattr(layer, "bias", None) is not None:
            assert not np.asarray(layer.bias).any(), layer.bias.path


def test_the_plain_unet_can_start_as_pytorch_initialises_it():
    """A baseline for PyTorch papers (the EAS U-Net's): every kernel and bias from U(+-1/sqrt(fan_in)), PyTorch's
    fan_in (a transposed conv's counts its outputs); recorded in the model's file."""
    model = unet_transformer.build_model("unet", input_shape=(64, 64, 1), num_classes=3, base_filters=16,
                                         initialization="torch")
    kinds = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, kinds)]
    assert {type(layer) for layer in convs} == set(kinds)
    checked = sum(pytorch_init.check_layer(layer) for layer in convs)
    assert checked == len(convs) + sum(layer.use_bias for layer in convs) == 19 + 4 + 5
    assert model.get_config()["arguments"]["initialization"] == "torch"


@pytest.mark.parametrize("variant, initialization, message", [
    ("unet", "pytorch", r"initialization must be one of \('keras', 'torch'\), got 'pytorch'"),
    ("u_transformer", "torch", "'u_transformer' follows the U-Transformer's TensorFlow original"),
])
def test_initialization_is_checked(variant, initialization, message):
    with pytest.raises(ValueError, match=message):
        unet_transformer.build_model(variant, base_filters=4, heads=2, initialization=initialization)
