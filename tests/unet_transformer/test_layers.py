import math

import keras
import numpy as np
import pytest
from keras import ops

from tests import helpers
from unet_transformer import AttentionGate, MultiHeadCrossAttention, MultiHeadSelfAttention2D, PositionalEncoding2D

RNG = np.random.default_rng(0)


def numpy_encoding(height, width, channels):
    """The SPEC's formula written out: x in channels [0, C/2), y in [C/2, C), sin/cos interleaved."""
    pe = np.zeros((height, width, channels))
    half = channels // 2
    for i in range(channels // 4):
        omega = math.exp(-math.log(10000.0) * 2 * i / half)
        for x in range(width):
            pe[:, x, 2 * i] = math.sin(x * omega)
            pe[:, x, 2 * i + 1] = math.cos(x * omega)
        for y in range(height):
            pe[y, :, half + 2 * i] = math.sin(y * omega)
            pe[y, :, half + 2 * i + 1] = math.cos(y * omega)
    return pe


def test_positional_encoding_matches_formula_on_any_size():
    inputs = keras.Input((None, None, 16))
    model = keras.Model(inputs, PositionalEncoding2D()(inputs))  # one graph, sizes read at run time
    for height, width in [(3, 5), (7, 2)]:
        x = RNG.random((2, height, width, 16), dtype=np.float32)
        expected = x + numpy_encoding(height, width, 16)
        np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-5)


def _keras_mha_like(layer, heads, channels):
    """A keras.layers.MultiHeadAttention holding ``layer``'s weights."""
    mha = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=channels // heads)
    probe = np.zeros((1, 3, channels), "float32")
    mha(probe, probe)
    pairs = [(mha._query_dense, layer.query), (mha._key_dense, layer.key), (mha._value_dense, layer.value),
             (mha._output_dense, layer.output_projection)]
    for einsum, dense in pairs:
        einsum.kernel.assign(np.reshape(dense.kernel.numpy(), einsum.kernel.shape))
        einsum.bias.assign(np.reshape(dense.bias.numpy(), einsum.bias.shape))
    return mha


@pytest.mark.parametrize("positional_encoding", [False, True])
def test_self_attention_equals_keras_multi_head_attention(positional_encoding):
    batch, height, width, channels, heads = 2, 4, 6, 16, 4
    layer = MultiHeadSelfAttention2D(heads=heads, positional_encoding=positional_encoding)
    x = RNG.normal(size=(batch, height, width, channels)).astype("float32")
    y, attention = layer(x, return_attention=True)
    mha = _keras_mha_like(layer, heads, channels)
    if positional_encoding:  # the same layer on x + PE
        x = x + numpy_encoding(height, width, channels).astype("float32")
    tokens = x.reshape(batch, height * width, channels)
    expected, expected_attention = mha(tokens, tokens, return_attention_scores=True)
    np.testing.assert_allclose(np.asarray(y).reshape(tokens.shape), np.asarray(expected), atol=1e-5)
    np.testing.assert_allclose(np.asarray(attention), np.asarray(expected_attention), atol=1e-5)


def test_self_attention_parameter_count_at_paper_width():
    layer = MultiHeadSelfAttention2D()
    layer.build((None, None, None, 1024))
    assert layer.count_params() == 4 * (1024 * 1024 + 1024)  # W_q, W_k, W_v, W^O with biases


CROSS_CASES = [
    # (MultiHeadCrossAttention kwargs, S shape, Y shape, attention shape)
    (dict(heads=2), (2, 8, 8, 8), (2, 4, 4, 16), (2, 2, 16, 16)),
    (dict(heads=4, positional_encoding=False), (1, 16, 8, 4), (1, 8, 4, 6), (1, 4, 32, 32)),
    (dict(heads=2, token_stride=2), (1, 16, 24, 8), (1, 8, 12, 8), (1, 2, 24, 24)),
    (dict(heads=1, token_stride=2), (1, 12, 20, 4), (1, 6, 10, 4), (1, 1, 15, 15)),  # S/2 odd: pooled grid rounds up
    (dict(heads=8, token_stride=4), (1, 32, 32, 8), (1, 16, 16, 32), (1, 8, 16, 16)),
]


@pytest.mark.parametrize("kwargs, s_shape, y_shape, attention_shape", CROSS_CASES)
def test_cross_attention_gates_the_skip(kwargs, s_shape, y_shape, attention_shape):
    s = RNG.random(s_shape, dtype=np.float32) + 0.1
    y = RNG.normal(size=y_shape).astype("float32")
    block = MultiHeadCrossAttention(**kwargs)
    out, attention = block([s, y], return_attention=True)
    out, attention = np.asarray(out), np.asarray(attention)
    assert out.shape == s_shape and attention.shape == attention_shape
    z, again = (np.asarray(t) for t in block.gate([s, y], return_attention=True))
    np.testing.assert_array_equal(out, z * s)  # the output is Z * S with the sigmoid gate Z in [0, 1]
    assert z.shape == s_shape and np.all((z >= 0) & (z <= 1)) and z.std() > 0
    np.testing.assert_array_equal(again, attention)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)


def test_attention_gate_shapes_and_alpha():
    s = RNG.random((2, 8, 12, 6), dtype=np.float32)
    g = RNG.normal(size=(2, 4, 6, 10)).astype("float32")
    gate = AttentionGate()
    out, alpha = gate([s, g], return_attention=True)
    assert out.shape == s.shape and alpha.shape == (2, 8, 12, 1)
    assert np.all((np.asarray(alpha) > 0) & (np.asarray(alpha) < 1))
    assert gate.theta.kernel.shape == (2, 2, 6, 3)  # 2x2 strided W_x to C_s // 2 channels


def test_attention_in_float32_under_mixed_precision():
    with helpers.dtype_policy("mixed_float16"):
        x = RNG.normal(size=(1, 4, 4, 16)).astype("float32")
        y, a_self = MultiHeadSelfAttention2D(heads=2)(x, return_attention=True)
        s, g = RNG.random((1, 8, 8, 8), dtype=np.float32), RNG.normal(size=(1, 4, 4, 16)).astype("float32")
        z, a_cross = MultiHeadCrossAttention(heads=2)([s, g], return_attention=True)
        _, alpha = AttentionGate()([s, g], return_attention=True)
    assert ops.dtype(y) == "float16" and ops.dtype(z) == "float16"  # features stay in the compute dtype
    for attention in (a_self, a_cross, alpha):
        assert ops.dtype(attention) == "float32"
    for attention in (a_self, a_cross):
        np.testing.assert_allclose(np.asarray(attention).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("layer", [
    PositionalEncoding2D(),
    MultiHeadSelfAttention2D(heads=3, positional_encoding=False),
    MultiHeadCrossAttention(heads=2, token_stride=2),
    AttentionGate(inter_channels=5),
])
def test_config_round_trip(layer):
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    assert keras.saving.get_registered_name(type(layer)) == f"unet_transformer>{type(layer).__name__}"


ILL_CASES = [
    # (constructor, call inputs' shapes, argument the ValueError names)
    (lambda: PositionalEncoding2D(), [(1, 4, 4, 6)], "channels"),
    (lambda: MultiHeadSelfAttention2D(heads=3), [(1, 4, 4, 16)], "heads"),
    (lambda: MultiHeadSelfAttention2D(heads=3, positional_encoding=True), [(1, 4, 4, 6)], "positional_encoding"),
    (lambda: MultiHeadCrossAttention(heads=3), [(1, 8, 8, 8), (1, 4, 4, 8)], "heads"),
    (lambda: MultiHeadCrossAttention(token_stride=0), [], "token_stride"),
    (lambda: MultiHeadCrossAttention(token_stride=1.5), [], "token_stride"),
    (lambda: AttentionGate(inter_channels=0), [], "inter_channels"),
]


@pytest.mark.parametrize("make, shapes, argument", ILL_CASES)
def test_bad_configuration_names_the_argument(make, shapes, argument):
    with pytest.raises(ValueError, match=argument):
        layer = make()
        inputs = [np.zeros(shape, "float32") for shape in shapes]
        layer(inputs if len(inputs) > 1 else inputs[0])
