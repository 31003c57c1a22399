"""How the U-Transformer's attention is computed: the 2D encoding, heads, and eq. 1 within memory bounds.

``unet_transformer.layers`` states the paper's modules; this module holds
what they need to run on every Keras backend and at every image size: the
sinusoidal encoding built from dynamic shapes, splitting and merging heads,
and the product ``softmax(q k^T) v`` of eq. 1 computed either at once or in
query blocks recomputed in the backward pass (``blocked_attention``).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

# Above this many query tokens, attention is computed in query blocks whose
# (block, Nk) logits are recomputed in the backward pass (``blocked_attention``):
# memory then grows linearly in tokens instead of quadratically. 4096 tokens is
# a 64x64 grid; the full (4096, 4096) float32 logits of 8 heads are 512 MiB a sample.
BLOCKED_ATTENTION_TOKENS = 4096
QUERY_BLOCK = 1024


def sinusoidal_encoding_2d(height, width, channels: int):
    """The fixed 2D encoding, (height, width, channels) float32.

    Channels [0, C/2) encode the column x, [C/2, C) the row y, each as
    interleaved sin(p * omega_i), cos(p * omega_i) with
    omega_i = exp(-ln(10000) * 2i / (C/2)). ``height`` and ``width`` may be
    symbolic (``ops.shape`` entries).

    Example:
    >>> [round(float(v), 3) for v in sinusoidal_encoding_2d(2, 3, 4)[1, 2]]  # x = 2 (sin, cos), y = 1 (sin, cos)
    [0.909, -0.416, 0.841, 0.54]
    """
    half = channels // 2
    omega = np.exp(-math.log(10000.0) * np.arange(0, half, 2) / half).astype("float32")

    def encode(length):  # (length, C/2): sin, cos interleaved
        angle = ops.expand_dims(ops.arange(length, dtype="float32"), -1) * omega
        return ops.reshape(ops.stack([ops.sin(angle), ops.cos(angle)], axis=-1), (-1, half))

    pe_x = ops.broadcast_to(ops.expand_dims(encode(width), 0), (height, width, half))
    pe_y = ops.broadcast_to(ops.expand_dims(encode(height), 1), (height, width, half))
    return ops.concatenate([pe_x, pe_y], axis=-1)


def add_positional_encoding(x):
    """X + PE for a channels-last map, the encoding sized from the map's dynamic height and width."""
    shape = ops.shape(x)
    return x + ops.cast(sinusoidal_encoding_2d(shape[1], shape[2], x.shape[-1]), x.dtype)


def split_heads(x, heads: int):
    """(B, N, d) -> (B, heads, N, d / heads)."""
    x = ops.reshape(x, (ops.shape(x)[0], -1, heads, x.shape[-1] // heads))
    return ops.transpose(x, (0, 2, 1, 3))


def merge_heads(x):
    """(B, heads, N, d_head) -> (B, N, heads * d_head), the heads concatenated."""
    x = ops.transpose(x, (0, 2, 1, 3))
    return ops.reshape(x, (ops.shape(x)[0], -1, x.shape[2] * x.shape[3]))


def _attention_weights(q, k_t):
    """softmax(q k^T) in float32 (q already scaled), (B, h, Nq, Nk)."""
    return ops.softmax(ops.matmul(q, k_t), axis=-1)  # A, eq. 1


def _plain_attention(q, k_t, v):
    attention = _attention_weights(q, k_t)
    return ops.matmul(ops.cast(attention, v.dtype), v), attention


def _block_attention(q_block, k_t, v):
    return ops.matmul(ops.cast(_attention_weights(q_block, k_t), v.dtype), v)


_remat_block_attention = keras.remat(_block_attention)


def blocked_attention(q, k_t, v, block: int | None = None):
    """softmax(q k^T) v computed ``block`` queries at a time, each block recomputed in the backward pass.

    Equal to the plain product (the softmax of each query row runs over all
    keys, so nothing is approximated); peak memory holds one (block, Nk)
    logits buffer per head instead of (Nq, Nk). Written by hand because Keras
    has no memory-efficient attention that runs on every backend.

    Args:
        q: (B, h, Nq, d) float32, already scaled by 1/sqrt(d).
        k_t: (B, h, d, Nk) float32.
        v: (B, h, Nk, d_v).
        block: queries per block (default ``QUERY_BLOCK``).

    Returns:
        (B, h, Nq, d_v).
    """
    block = block or QUERY_BLOCK
    shape = ops.shape(q)
    batch, heads, tokens, depth = shape[0], q.shape[1], shape[2], q.shape[3]
    pad = (block - tokens % block) % block
    padded = ops.pad(q, ((0, 0), (0, 0), (0, pad), (0, 0)))
    blocks = ops.reshape(padded, (batch, heads, -1, block, depth))
    blocks = ops.transpose(blocks, (2, 0, 1, 3, 4))  # (blocks, B, h, block, d)
    out = ops.map(lambda q_block: _remat_block_attention(q_block, k_t, v), blocks)
    out = ops.reshape(ops.transpose(out, (1, 2, 0, 3, 4)), (batch, heads, -1, v.shape[-1]))
    return out[:, :, :tokens, :]


def softmax_product(q, k_t, v, return_attention: bool, blocked_above: int | None):
    """(A v, A) with A = softmax(q k^T), q already scaled: eq. 1 after its 1/sqrt(d_k), per head.

    Args:
        q: (B, h, Nq, d) float32; k_t: (B, h, d, Nk) float32; v: (B, h, Nk, d_v).
        return_attention: also return A; the product is then never blocked.
        blocked_above: more query tokens than this switch to ``blocked_attention``
            (None: never). With a token count unknown when the graph is built,
            the choice is made at run time.

    Returns:
        (B, h, Nq, d_v) and A (B, h, Nq, Nk) float32, or None for A without
        ``return_attention``.
    """
    if return_attention or blocked_above is None:
        out, attention = _plain_attention(q, k_t, v)
        return out, attention if return_attention else None
    tokens = q.shape[2] if isinstance(q.shape[2], int) else None  # JAX shape inference gives symbolic dims
    if tokens is not None:
        out = blocked_attention(q, k_t, v) if tokens > blocked_above else _plain_attention(q, k_t, v)[0]
    elif keras.backend.backend() == "tensorflow":  # a graph for any size (SavedModel): decide per call
        out = ops.cond(ops.shape(q)[2] > blocked_above, lambda: blocked_attention(q, k_t, v),
                       lambda: _plain_attention(q, k_t, v)[0])
    else:  # only shape inference: JAX and PyTorch run with concrete sizes
        out = _plain_attention(q, k_t, v)[0]
    return out, None
