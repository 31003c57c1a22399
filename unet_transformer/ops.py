"""How the U-Transformer's attention is computed: the 2D encoding, heads, and eq. 1 within memory bounds.

``unet_transformer.layers`` states the paper's modules; this module holds
what they need to run on every Keras backend and at every image size: the
sinusoidal encoding built from dynamic shapes, splitting and merging heads,
and ``softmax(scale q k^T) v`` of eq. 1 (``scaled_attention``), computed

- with the maps (``return_attention``): op by op, A returned (``plain_attention``);
- on TensorFlow: with a hand-written gradient that uses FlashAttention's
  identity rowsum(dA * A) = rowsum(dO * O) (``flash_gradient_attention``):
  TensorFlow has no fused attention kernel and, outside XLA, fuses no
  elementwise ops, so autodiff of ``keras.ops.dot_product_attention`` (the
  same einsum and softmax there) moves the (Nq, Nk) matrix through memory
  more often; for heads up to ``LOW_RANK_GRADIENT_DEPTH`` channels wide the
  backward pass never forms dS at all (``_low_rank_gradient``);
- on the other backends: ``keras.ops.dot_product_attention`` (JAX: cuDNN's
  fused kernel on a GPU where the head size allows, XLA elsewhere);
- above ``BLOCKED_ATTENTION_TOKENS`` query tokens: in query blocks of
  ``QUERY_BLOCK``, each block through the backend's kernel above and
  recomputed in the backward pass (``blocked_attention``), since neither
  kernel bounds the (Nq, Nk) buffers on the CPU.
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
# Heads up to this many channels wide backpropagate attention through two products with A instead of
# writing dS (``_low_rank_gradient``). Its time over the dense pass's on this project's CPU, 8 x 8 heads of
# 1024 x 1024 (``python -m benchmarks attention-gradient``, docs/performance.md): 0.63 at width 2, 0.67 at 4,
# 0.79 at 6, 1.00 at 8.
LOW_RANK_GRADIENT_DEPTH = 6


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
    """(B, N, d) -> (B, N, heads, d / heads): ``keras.ops.dot_product_attention``'s layout (B, T, N, H)."""
    return ops.reshape(x, (ops.shape(x)[0], -1, heads, x.shape[-1] // heads))


def merge_heads(x):
    """(B, N, heads, d_head) -> (B, N, heads * d_head), the heads concatenated."""
    return ops.reshape(x, (ops.shape(x)[0], -1, x.shape[2] * x.shape[3]))


def _heads_first(x):
    """(B, N, h, d) <-> (B, h, N, d): batched matrix products run per head on the last two axes."""
    return ops.transpose(x, (0, 2, 1, 3))


def _last_two_swapped(x):
    return ops.swapaxes(x, -1, -2)


def _attention_weights(q, k):
    """A = softmax(q k^T) over the keys, (B, h, Nq, Nk); q (already scaled) and k (B, h, N, d) float32."""
    return ops.softmax(ops.matmul(q, _last_two_swapped(k)), axis=-1)  # A, eq. 1


def plain_attention(q, k, v, scale: float):
    """(A V, A) op by op with A = softmax(scale q k^T) float32: the attention maps' path.

    Args:
        q, k: (B, N, h, d); v: (B, Nk, h, d_v). Logits and softmax in float32.

    Returns:
        (B, Nq, h, d_v) in v's dtype and A (B, h, Nq, Nk) float32.
    """
    q = _heads_first(ops.cast(q, "float32")) * scale  # scaled before the product: one (Nq, Nk) buffer fewer
    attention = _attention_weights(q, _heads_first(ops.cast(k, "float32")))
    return _heads_first(ops.matmul(ops.cast(attention, v.dtype), _heads_first(v))), attention


def _dense_gradient(q, k, v, attention, out, d_out):
    """(dQ, dK, dV) of O = A V through dS = A * (dA - D), the (Nq, Nk) matrix dS written out once."""
    # FlashAttention (Dao et al. 2022, appendix B.2): dS = A * (dA - D), D = rowsum(dA * A) = rowsum(dO * O);
    # [dO, -D] [V, 1]^T gives dA - D from one product, so the subtraction costs no (Nq, Nk) pass.
    rowsum = ops.sum(d_out * out, axis=-1, keepdims=True)  # D
    ones = ops.ones_like(v[..., :1])
    shifted = ops.matmul(ops.concatenate([d_out, -rowsum], axis=-1),
                         _last_two_swapped(ops.concatenate([v, ones], axis=-1)))  # dA - D, dA = dO V^T
    d_logits = attention * shifted  # dS
    # Products arranged so that only (N, d) operands are transposed, never an (Nq, Nk) one.
    d_q = ops.matmul(d_logits, k)  # dS K
    d_k = _last_two_swapped(ops.matmul(_last_two_swapped(q), d_logits))  # dS^T Q
    d_v = _last_two_swapped(ops.matmul(_last_two_swapped(d_out), attention))  # A^T dO
    return d_q, d_k, d_v


def _low_rank_gradient(q, k, v, attention, out, d_out):
    """(dQ, dK, dV) of O = A V without forming dS: two products with A, for heads a few channels wide.

    dA - D = [dO, -D] [V, 1]^T has rank r = d + 1, so dS = A * (dA - D) is a
    sum of r terms diag(u_i) A diag(w_i), and
    dQ = sum_i u_i * (A (w_i K)), dK = sum_i w_i * (A^T (u_i Q)), dV = A^T dO:
    one product of A with the (Nk, r d) stack of w_i K and one of A^T with the
    (Nq, (r + 1) d) stack of u_i Q and dO. Each reads A once; the dense pass
    writes two (Nq, Nk) matrices and reads five. The products grow as d^2, so
    this pays for narrow heads only (``LOW_RANK_GRADIENT_DEPTH``). V is
    centred over the keys first (dA - D = dO (V_j - O_i) does not change), so
    that a common offset of V is not summed and cancelled in float32.
    """
    mean = ops.mean(v, axis=-2, keepdims=True)
    rowsum = ops.sum(d_out * (out - mean), axis=-1, keepdims=True)  # D with V centred
    u = ops.concatenate([d_out, -rowsum], axis=-1)  # (B, h, Nq, r)
    w = ops.concatenate([v - mean, ops.ones_like(v[..., :1])], axis=-1)  # (B, h, Nk, r)
    rank, depth = u.shape[-1], q.shape[-1]
    # Plain products of A with flattened (N, r d) stacks: faster on TensorFlow than the same as einsums.
    key_terms = _flatten_last_two(w[..., :, None] * k[..., None, :])  # w_i K
    query_terms = ops.concatenate([_flatten_last_two(u[..., :, None] * q[..., None, :]), d_out], axis=-1)  # u_i Q, dO
    from_keys = _unflatten_last(ops.matmul(attention, key_terms), rank, depth)  # A (w_i K)
    from_queries = _last_two_swapped(ops.matmul(_last_two_swapped(query_terms), attention))  # A^T (u_i Q), A^T dO
    d_q = ops.sum(from_keys * u[..., None], axis=-2)
    d_k = ops.sum(_unflatten_last(from_queries[..., :-depth], rank, depth) * w[..., None], axis=-2)
    return d_q, d_k, from_queries[..., -depth:]


def _flatten_last_two(x):
    shape = ops.shape(x)
    return ops.reshape(x, (*shape[:-2], x.shape[-2] * x.shape[-1]))


def _unflatten_last(x, rows: int, columns: int):
    return ops.reshape(x, (*ops.shape(x)[:-1], rows, columns))


@ops.custom_gradient
def _softmax_product(q, k, v):
    """softmax(q k^T) v on (B, h, N, d) float32, q already scaled, with FlashAttention's backward pass."""
    attention = _attention_weights(q, k)
    out = ops.matmul(attention, v)  # O = A V
    narrow = q.shape[-1] == v.shape[-1] and q.shape[-1] <= LOW_RANK_GRADIENT_DEPTH
    gradient = _low_rank_gradient if narrow else _dense_gradient

    def grad(*args, upstream=None):  # Keras' backend-agnostic signature (upstream: PyTorch)
        d_out = args[0] if upstream is None else upstream  # dO
        # A scope of its own: TensorFlow runs these ops outside the layer's, and profiles should name them.
        with keras.name_scope("attention_gradient"):
            return gradient(q, k, v, attention, out, d_out)

    return out, grad


def flash_gradient_attention(q, k, v, scale: float):
    """softmax(scale q k^T) v in float32 with FlashAttention's backward pass; (B, Nq, h, d_v) in v's dtype.

    Written by hand because Keras' attention on TensorFlow is autodiff of an
    einsum and a softmax, whose softmax gradient makes four passes over
    (Nq, Nk) tensors (multiply, sum, subtract, multiply) where this one makes
    one (the multiply, ``_dense_gradient``), or none for narrow heads
    (``_low_rank_gradient``: two products that read A). A is kept from the
    forward pass: recomputing it here would not lower the peak and costs a
    product and a softmax; the query blocks of ``blocked_attention`` are
    recomputed instead. Measured on this project's CPU (docs/performance.md):
    the U-Transformer (base 16, 128x128, batch 8) trains about 1.1x as fast
    with a fifth less peak memory through the dense pass.
    """
    q = _heads_first(ops.cast(q, "float32")) * scale
    k, v_heads = (_heads_first(ops.cast(t, "float32")) for t in (k, v))
    return ops.cast(_heads_first(_softmax_product(q, k, v_heads)), v.dtype)


def fused_attention(q, k, v, scale: float):
    """``keras.ops.dot_product_attention``: softmax(scale q k^T) v on (B, N, h, d); (B, Nq, h, d_v) in v's dtype.

    In float32, except on JAX with 16-bit values (mixed precision): JAX then
    takes q, k, v in that dtype (cuDNN's fused kernel needs it) and still
    accumulates the logits and runs the softmax in float32, as the SPEC asks.
    """
    sixteen_bit = keras.backend.backend() == "jax" and keras.backend.standardize_dtype(v.dtype) in (
        "float16", "bfloat16")
    dtype = v.dtype if sixteen_bit else "float32"
    out = ops.dot_product_attention(ops.cast(q, dtype), ops.cast(k, dtype), ops.cast(v, dtype), scale=scale)
    return ops.cast(out, v.dtype)


def _unblocked_attention(q, k, v, scale: float):
    """The backend's kernel: ``flash_gradient_attention`` on TensorFlow, ``fused_attention`` elsewhere."""
    kernel = flash_gradient_attention if keras.backend.backend() == "tensorflow" else fused_attention
    return kernel(q, k, v, scale)


# One query block of the blocked product, recomputed in the backward pass instead of stored.
_rematerialized_flash_gradient_attention = keras.remat(flash_gradient_attention)
_rematerialized_fused_attention = keras.remat(fused_attention)


def blocked_attention(q, k, v, scale: float, block: int | None = None):
    """softmax(scale q k^T) v computed ``block`` queries at a time, each block recomputed in the backward pass.

    Equal to the unblocked product (the softmax of each query row runs over all
    keys, so nothing is approximated); peak memory holds one (block, Nk)
    logits buffer per head instead of (Nq, Nk). Each block runs the backend's
    kernel (``flash_gradient_attention`` on TensorFlow, ``fused_attention``
    elsewhere): neither bounds that buffer on the CPU by itself.

    Args:
        q: (B, Nq, h, d); k: (B, Nk, h, d); v: (B, Nk, h, d_v).
        scale: the logits' factor, 1 / sqrt(d).
        block: queries per block (default ``QUERY_BLOCK``).

    Returns:
        (B, Nq, h, d_v) in v's dtype.
    """
    block = block or QUERY_BLOCK
    tensorflow = keras.backend.backend() == "tensorflow"
    kernel = _rematerialized_flash_gradient_attention if tensorflow else _rematerialized_fused_attention
    shape = ops.shape(q)
    batch, tokens, heads, depth = shape[0], shape[1], q.shape[2], q.shape[3]
    pad = (block - tokens % block) % block
    padded = ops.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
    blocks = ops.reshape(padded, (batch, -1, block, heads, depth))
    blocks = ops.transpose(blocks, (1, 0, 2, 3, 4))  # (blocks, B, block, h, d)
    out = ops.map(lambda q_block: kernel(q_block, k, v, scale), blocks)
    out = ops.reshape(ops.transpose(out, (1, 0, 2, 3, 4)), (batch, -1, heads, v.shape[-1]))
    return out[:, :tokens]


def scaled_attention(q, k, v, scale: float, return_attention: bool, blocked_above: int | None):
    """(A V, A) with A = softmax(scale q k^T): eq. 1 per head, with scale = 1 / sqrt(d_k).

    Args:
        q, k: (B, N, h, d); v: (B, Nk, h, d_v); any float dtype (logits and
            softmax run in float32).
        return_attention: also return A; the product is then computed op by
            op (``plain_attention``) and never blocked.
        blocked_above: more query tokens than this switch to ``blocked_attention``
            (None: never). With a token count unknown when the graph is built,
            the choice is made at run time.

    Returns:
        (B, Nq, h, d_v) in v's dtype, and A (B, h, Nq, Nk) float32 or None
        without ``return_attention``.
    """
    if return_attention:
        return plain_attention(q, k, v, scale)
    tokens = q.shape[1] if isinstance(q.shape[1], int) else None  # JAX shape inference gives symbolic dims
    if blocked_above is None or (tokens is not None and tokens <= blocked_above):
        return _unblocked_attention(q, k, v, scale), None
    if tokens is not None:
        return blocked_attention(q, k, v, scale), None
    if keras.backend.backend() == "tensorflow":  # a graph for any size (SavedModel): decide per call
        return ops.cond(ops.shape(q)[1] > blocked_above, lambda: blocked_attention(q, k, v, scale),
                        lambda: _unblocked_attention(q, k, v, scale)), None
    return _unblocked_attention(q, k, v, scale), None  # only shape inference: JAX and PyTorch run with concrete sizes
