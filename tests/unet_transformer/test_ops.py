"""The attention machinery behind the layers: heads, the query-blocked product and when it is chosen."""

import numpy as np
import pytest
from keras import ops

from unet_transformer import MultiHeadCrossAttention, MultiHeadSelfAttention2D
from unet_transformer import ops as attention_ops
from unet_transformer.layers import multi_head_attention
from unet_transformer.ops import blocked_attention, merge_heads, softmax_product, split_heads

RNG = np.random.default_rng(0)


def test_heads_split_channels_in_contiguous_groups_and_merge_back():
    x = RNG.normal(size=(2, 5, 12)).astype("float32")  # (B, N, d), 3 heads of 4
    heads = np.asarray(split_heads(x, 3))
    assert heads.shape == (2, 3, 5, 4)
    np.testing.assert_array_equal(heads[:, 1], x[:, :, 4:8])  # head h holds channels [h d_k, (h + 1) d_k)
    np.testing.assert_array_equal(np.asarray(merge_heads(heads)), x)


def test_attention_maps_only_on_request():
    q, k_t, v = RNG.normal(size=(1, 2, 6, 4)), RNG.normal(size=(1, 2, 4, 6)), RNG.normal(size=(1, 2, 6, 4))
    q, k_t, v = (t.astype("float32") for t in (q, k_t, v))
    out, attention = softmax_product(q, k_t, v, return_attention=True, blocked_above=None)
    np.testing.assert_allclose(np.asarray(attention).sum(-1), 1.0, atol=1e-6)
    without, none = softmax_product(q, k_t, v, return_attention=False, blocked_above=None)
    assert none is None
    np.testing.assert_allclose(np.asarray(without), np.asarray(out), atol=1e-6)


@pytest.mark.parametrize("tokens, blocked", [(50, True), (16, False), (9, False)])
def test_blocking_is_chosen_above_the_threshold(monkeypatch, tokens, blocked):
    calls = []

    def spy(q, k_t, v, block=None):
        calls.append(q.shape)
        return blocked_attention(q, k_t, v, block)

    monkeypatch.setattr(attention_ops, "blocked_attention", spy)
    q, k, v = (RNG.normal(size=(1, tokens, 8)).astype("float32") for _ in range(3))
    out, _ = multi_head_attention(q, k, v, 2, return_attention=False, blocked_above=16)
    assert bool(calls) == blocked
    expected, _ = multi_head_attention(q, k, v, 2)  # with the maps: never blocked
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-6)


def _outputs_and_gradients(layer, inputs):
    """The layer's output and the gradients of a weighted mean of it w.r.t. its weights and inputs."""
    import tensorflow as tf

    inputs = [tf.constant(x) for x in inputs]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = layer(inputs if len(inputs) > 1 else inputs[0], training=True)
        loss = tf.reduce_mean(out * tf.reshape(tf.cast(tf.range(tf.size(out)) % 7, out.dtype), tf.shape(out)))
    grads = tape.gradient(loss, layer.trainable_weights + inputs)
    return [out.numpy()] + [g.numpy() for g in grads]


@pytest.mark.parametrize("make, shapes", [
    (lambda: MultiHeadSelfAttention2D(heads=2), [(2, 12, 10, 8)]),                       # 120 tokens
    (lambda: MultiHeadCrossAttention(heads=2), [(1, 24, 20, 8), (1, 12, 10, 16)]),      # 120 tokens
])
def test_blocked_attention_equals_plain_attention_with_gradients(make, shapes):
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
        expected, got = _outputs_and_gradients(plain, inputs), _outputs_and_gradients(blocked, inputs)
    finally:
        attention_ops.QUERY_BLOCK = original
    assert len(expected) == len(got) > 8
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


def test_blocked_attention_is_chosen_at_run_time_for_unknown_sizes():
    import tensorflow as tf

    q, k, v = (RNG.normal(size=(1, 50, 8)).astype("float32") for _ in range(3))
    spec = tf.TensorSpec((None, None, 8))
    dynamic = tf.function(lambda q, k, v: multi_head_attention(q, k, v, 2, return_attention=False,
                                                               blocked_above=16)[0], input_signature=[spec] * 3)
    expected, attention = multi_head_attention(q, k, v, 2)
    np.testing.assert_allclose(dynamic(q, k, v).numpy(), expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(dynamic(q[:, :9], k[:, :9], v[:, :9]).numpy(),
                               multi_head_attention(q[:, :9], k[:, :9], v[:, :9], 2)[0].numpy(), atol=1e-6)
    assert tuple(attention.shape) == (1, 2, 50, 50)
    scaled = np.transpose(q.reshape(1, 50, 2, 4), (0, 2, 1, 3)) / 2.0
    k_t = np.transpose(k.reshape(1, 50, 2, 4), (0, 2, 3, 1))
    v_heads = np.transpose(v.reshape(1, 50, 2, 4), (0, 2, 1, 3))
    direct = ops.matmul(ops.softmax(ops.matmul(scaled, k_t), axis=-1), v_heads)
    np.testing.assert_allclose(np.asarray(blocked_attention(scaled, k_t, v_heads, block=16)), np.asarray(direct),
                               atol=1e-6)
