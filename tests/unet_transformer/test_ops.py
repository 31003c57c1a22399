"""The attention machinery behind the layers: heads, each backend's kernel, the query-blocked product and when
each is chosen; every kernel against today's op-by-op attention, outputs and gradients."""

import math

import numpy as np
import pytest
import tensorflow as tf

from unet_transformer import MultiHeadCrossAttention, MultiHeadSelfAttention2D
from unet_transformer import ops as attention_ops
from unet_transformer.layers import multi_head_attention
from unet_transformer.ops import (
    blocked_attention,
    flash_gradient_attention,
    fused_attention,
    merge_heads,
    plain_attention,
    scaled_attention,
    split_heads,
)

RNG = np.random.default_rng(0)


def _qkv(tokens=(40, 40), heads=2, depth=4, dtype="float32"):
    """q (1, Nq, h, d), k and v (1, Nk, h, d), unit normal."""
    nq, nk = tokens
    return [RNG.normal(size=(1, n, heads, depth)).astype(dtype) for n in (nq, nk, nk)]


def todays_attention(q, k, v):
    """Eq. 1 as the layers computed it before this module: Q / sqrt(d_k) in float32, softmax over keys, A V."""
    q, k, v = (tf.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))  # (B, h, N, d)
    q = tf.cast(q, "float32") / math.sqrt(q.shape[-1])
    attention = tf.nn.softmax(tf.matmul(q, tf.cast(k, "float32"), transpose_b=True), axis=-1)
    return tf.transpose(tf.matmul(tf.cast(attention, v.dtype), v), (0, 2, 1, 3))


def _value_and_gradients(function, q, k, v):
    """function(q, k, v) and the gradients of a weighted sum of it (weights not all equal) w.r.t. q, k, v."""
    q, k, v = (tf.convert_to_tensor(t) for t in (q, k, v))
    with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        out = function(q, k, v)
        weights = tf.reshape(tf.cast(tf.range(tf.size(out)) % 5, out.dtype) - 2.0, tf.shape(out))
        loss = tf.reduce_sum(out * weights)
    return [out] + tape.gradient(loss, [q, k, v])


def test_heads_split_channels_in_contiguous_groups_and_merge_back():
    x = RNG.normal(size=(2, 5, 12)).astype("float32")  # (B, N, d), 3 heads of 4
    heads = np.asarray(split_heads(x, 3))
    assert heads.shape == (2, 5, 3, 4)  # (B, T, N, H): keras.ops.dot_product_attention's layout
    np.testing.assert_array_equal(heads[:, :, 1], x[:, :, 4:8])  # head h holds channels [h d_k, (h + 1) d_k)
    np.testing.assert_array_equal(np.asarray(merge_heads(heads)), x)


KERNELS = {
    "flash_gradient": lambda q, k, v: flash_gradient_attention(q, k, v, 0.5),
    "fused": lambda q, k, v: fused_attention(q, k, v, 0.5),
    "blocked": lambda q, k, v: blocked_attention(q, k, v, 0.5, block=16),  # 40 queries: two blocks and a padded one
    "plain": lambda q, k, v: plain_attention(q, k, v, 0.5)[0],
}


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("tokens", [(40, 40), (40, 10)])  # self-attention; cross-attention with fewer keys
def test_every_kernel_equals_todays_attention_with_gradients(kernel, tokens):
    q, k, v = _qkv(tokens)  # d = 4: scale 1 / sqrt(4) = 0.5
    expected = _value_and_gradients(todays_attention, q, k, v)
    got = _value_and_gradients(KERNELS[kernel], q, k, v)
    assert got[0].shape == expected[0].shape == (1, tokens[0], 2, 4)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5, rtol=1e-5)


def test_flash_gradient_equals_autodiff_of_the_formula_under_a_tf_function():
    """Inside a graph, as Keras trains: the identity rowsum(dA * A) = rowsum(dO * O) on large logits too."""
    q, k, v = _qkv((33, 21), heads=3, depth=8)
    q, k = q * 3.0, k * 3.0  # logits up to ~50: a softmax far from uniform
    scale = 1 / math.sqrt(8)
    graph = tf.function(lambda q, k, v: _value_and_gradients(lambda *t: flash_gradient_attention(*t, scale), q, k, v))
    expected = _value_and_gradients(todays_attention, q, k, v)
    got = graph(q, k, v)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("depth, offset, low_rank", [
    (2, 0.0, True), (4, 0.0, True), (6, 0.0, True),
    (4, 20.0, True),  # values far from zero
    (4, 0.0, False), (8, 0.0, False),  # the dense pass: switched off, and above LOW_RANK_GRADIENT_DEPTH
])
def test_both_backward_passes_equal_autodiff_of_the_formula(monkeypatch, depth, offset, low_rank):
    chosen = []
    for name in ("_low_rank_gradient", "_dense_gradient"):
        original = getattr(attention_ops, name)
        monkeypatch.setattr(attention_ops, name,
                            lambda *args, _name=name, _original=original: chosen.append(_name) or _original(*args))
    if not low_rank and depth <= attention_ops.LOW_RANK_GRADIENT_DEPTH:
        monkeypatch.setattr(attention_ops, "LOW_RANK_GRADIENT_DEPTH", 0)
    q, k, v = _qkv((37, 23), heads=3, depth=depth)
    q, k, v = q * 2.0, k * 2.0, v + offset  # logits up to ~30: a softmax far from uniform
    scale = 1 / math.sqrt(depth)
    graph = tf.function(lambda q, k, v: _value_and_gradients(lambda *t: flash_gradient_attention(*t, scale), q, k, v))
    expected = _value_and_gradients(todays_attention, q, k, v)
    got = graph(q, k, v)
    assert chosen == ["_low_rank_gradient" if low_rank else "_dense_gradient"]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5 * (1 + offset), rtol=1e-5)


@pytest.mark.parametrize("kernel", ["flash_gradient", "fused", "plain"])
def test_kernels_keep_the_value_dtype_under_mixed_precision(kernel):
    q, k, v = _qkv(dtype="float16")  # what float16 projections hand over under mixed_float16
    out = KERNELS[kernel](q, k, v)
    assert out.dtype == tf.float16
    np.testing.assert_allclose(np.asarray(out, "float32"), todays_attention(q, k, v).numpy().astype("float32"),
                               atol=2e-3)


def test_attention_maps_only_on_request():
    q, k, v = _qkv((6, 6))
    out, attention = scaled_attention(q, k, v, 0.5, return_attention=True, blocked_above=None)
    assert tuple(attention.shape) == (1, 2, 6, 6)
    np.testing.assert_allclose(np.asarray(attention).sum(-1), 1.0, atol=1e-6)
    without, none = scaled_attention(q, k, v, 0.5, return_attention=False, blocked_above=None)
    assert none is None
    np.testing.assert_allclose(np.asarray(without), np.asarray(out), atol=1e-6)


def test_tensorflow_trains_through_the_flash_gradient(monkeypatch):
    calls = []

    def spy(q, k, v, scale):
        calls.append(scale)
        return flash_gradient_attention(q, k, v, scale)

    monkeypatch.setattr(attention_ops, "flash_gradient_attention", spy)
    q, k, v = (RNG.normal(size=(1, 12, 8)).astype("float32") for _ in range(3))
    multi_head_attention(q, k, v, 2, return_attention=False)
    assert calls == [0.5]  # 2 heads of 4: 1 / sqrt(4)
    multi_head_attention(q, k, v, 2, return_attention=True)  # the maps come from the op-by-op product
    assert calls == [0.5]


@pytest.mark.parametrize("tokens, blocked", [(50, True), (16, False), (9, False)])
def test_blocking_is_chosen_above_the_threshold(monkeypatch, tokens, blocked):
    calls = []

    def spy(q, k, v, scale, block=None):
        calls.append(q.shape)
        return blocked_attention(q, k, v, scale, block)

    monkeypatch.setattr(attention_ops, "blocked_attention", spy)
    q, k, v = (RNG.normal(size=(1, tokens, 8)).astype("float32") for _ in range(3))
    out, _ = multi_head_attention(q, k, v, 2, return_attention=False, blocked_above=16)
    assert bool(calls) == blocked
    expected, _ = multi_head_attention(q, k, v, 2)  # with the maps: never blocked
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-6)


def _outputs_and_gradients(layer, inputs, return_attention=False):
    """The layer's output and the gradients of a weighted mean of it w.r.t. its weights and inputs.

    ``return_attention``: call the layer for its maps too, which computes eq. 1 op by op (autodiff's gradient).
    """
    inputs = [tf.constant(x) for x in inputs]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = layer(inputs if len(inputs) > 1 else inputs[0], training=True, return_attention=return_attention)
        out = out[0] if return_attention else out
        loss = tf.reduce_mean(out * tf.reshape(tf.cast(tf.range(tf.size(out)) % 7, out.dtype), tf.shape(out)))
    grads = tape.gradient(loss, layer.trainable_weights + inputs)
    return [out.numpy()] + [g.numpy() for g in grads]


@pytest.mark.parametrize("make, shapes", [
    (lambda: MultiHeadSelfAttention2D(heads=2), [(2, 12, 10, 8)]),                       # 120 tokens
    (lambda: MultiHeadCrossAttention(heads=2), [(1, 24, 20, 8), (1, 12, 10, 16)]),      # 120 tokens
])
def test_blocked_attention_equals_op_by_op_attention_with_gradients(make, shapes):
    inputs = [RNG.normal(size=s).astype("float32") for s in shapes]
    plain = make()
    plain.blocked_above = None
    blocked = make()
    blocked.blocked_above = 16
    plain(inputs if len(inputs) > 1 else inputs[0])
    blocked(inputs if len(inputs) > 1 else inputs[0])
    blocked.set_weights(plain.get_weights())
    original = attention_ops.QUERY_BLOCK
    attention_ops.QUERY_BLOCK = 32  # 120 tokens: three full blocks and a padded one
    try:
        expected = _outputs_and_gradients(plain, inputs, return_attention=True)
        got = _outputs_and_gradients(blocked, inputs)
    finally:
        attention_ops.QUERY_BLOCK = original
    assert len(expected) == len(got) > 8
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


def test_blocked_attention_is_chosen_at_run_time_for_unknown_sizes():
    q, k, v = (RNG.normal(size=(1, 50, 8)).astype("float32") for _ in range(3))
    spec = tf.TensorSpec((None, None, 8))
    dynamic = tf.function(lambda q, k, v: multi_head_attention(q, k, v, 2, return_attention=False,
                                                               blocked_above=16)[0], input_signature=[spec] * 3)
    expected, attention = multi_head_attention(q, k, v, 2)
    np.testing.assert_allclose(dynamic(q, k, v).numpy(), expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(dynamic(q[:, :9], k[:, :9], v[:, :9]).numpy(),
                               multi_head_attention(q[:, :9], k[:, :9], v[:, :9], 2)[0].numpy(), atol=1e-6)
    assert tuple(attention.shape) == (1, 2, 50, 50)
    heads = [t.reshape(1, 50, 2, 4) for t in (q, k, v)]
    np.testing.assert_allclose(expected.numpy(), todays_attention(*heads).numpy().reshape(1, 50, 8), atol=1e-6)
