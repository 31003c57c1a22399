"""Attention blocks of the U-Transformer (Petit et al., MLMI 2021, section 2).

``PositionalEncoding2D`` and ``MultiHeadSelfAttention2D`` (MHSA, section 2.1,
Fig. 3), ``MultiHeadCrossAttention`` (MHCA, section 2.2, Fig. 4) and, for the
paper's baseline, the Attention U-Net gate ``AttentionGate`` (Oktay et al.
2018; Schlemper et al. 2019, the paper's [11]). Both attention modules compute
eq. 1, ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V = A V``, per head
(``multi_head_attention``); how it is computed within memory bounds lives in
``unet_transformer.ops``.

Decisions where the paper is silent:

- MHSA has no residual connection: Fig. 3 maps X to A V and on through the
  output embedding with no skip around it, as the public re-implementation
  (HXLH50K/U-Net-Transformer) does. The U-Net decoder after it still sees the
  encoder through the skip connections.
- Both modules use Vaswani's multi-head attention: Q/K/V projections with
  bias, heads of width d/heads, heads merged by an output projection W^O
  (section 2.1: "combined through another embedding"). MHCA keeps W^O before
  its 1x1 conv + BN + sigmoid so the two modules share one attention core.
- Attention logits and softmax run in float32 whatever the dtype policy; the
  attention maps returned are float32.
- MHCA's ``token_stride`` average-pools the Y and S tokens after their 1x1
  conv + BN + ReLU (before the positional encoding, so PE indexes the grid
  attention sees) with "same" padding; the gate Z is upsampled bilinearly by
  2 * token_stride and cropped to S, so every input size divisible by the
  U-Net stride still works.
- Bilinear upsampling is written with ``keras.ops``
  (``common.nn.ops.upsample_bilinear``, equal to ``ops.image.resize``):
  ``UpSampling2D(interpolation="bilinear")`` fails on symbolic height/width
  in TensorFlow graphs.
- Positional encodings are computed from each call's dynamic shape: no image
  size is frozen into the graph.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from common.nn.ops import batch_norm, check_positive_int, is_positive_int, upsample_bilinear
from unet_transformer.ops import (
    BLOCKED_ATTENTION_TOKENS,
    add_positional_encoding,
    merge_heads,
    scaled_attention,
    split_heads,
)


def _check_channels(channels, where: str):
    if channels is None or channels % 4:
        raise ValueError(
            f"{where}: positional_encoding needs channels divisible by 4 (sin and cos for x and y), "
            f"got channels={channels}"
        )


def _check_heads(heads, channels, where: str):
    if not isinstance(heads, int) or heads < 1 or channels % heads:
        raise ValueError(f"{where}: heads={heads!r} must be a positive divisor of the attention width {channels}")


def multi_head_attention(q, k, v, heads: int, return_attention: bool = True,
                         blocked_above: int | None = BLOCKED_ATTENTION_TOKENS):
    """Eq. 1 per head, ``softmax(Q K^T / sqrt(d_k)) V = A V``, on (B, N, d) tokens.

    Args:
        q, k, v: the embedded tokens X W_q, X W_k, X W_v, split here into
            ``heads`` heads of width d_k = d / heads.
        return_attention: also return A; the product is then never blocked.
        blocked_above: more query tokens than this compute A V in recomputed
            query blocks (``ops.blocked_attention``; None: never). How A V is
            computed on each backend: ``ops.scaled_attention``.

    Returns:
        The concatenated heads (B, Nq, d) and A (B, heads, Nq, Nk) float32,
        or None for A without ``return_attention``.
    """
    q, k, v = (split_heads(t, heads) for t in (q, k, v))  # (B, N, heads, d_k)
    d_k = q.shape[-1]
    # Logits and softmax run in float32 whatever the policy (float16 logits overflow for wide heads).
    out, attention = scaled_attention(q, k, v, 1.0 / math.sqrt(d_k), return_attention, blocked_above)  # eq. 1
    return merge_heads(out), attention


class _AttentionCore(keras.layers.Layer):
    """Shared by MHSA and MHCA: the W_q, W_k, W_v, W^O projections of width d around eq. 1.

    ``blocked_above``: query-token count above which attention runs in
    recomputed query blocks (``ops.blocked_attention``); None turns blocking off.
    """

    blocked_above = BLOCKED_ATTENTION_TOKENS

    def _set_attention_config(self, heads, positional_encoding):
        """Checks and keeps the constructor's ``heads`` and ``positional_encoding`` (divisibility waits for build)."""
        check_positive_int(heads, "heads", type(self).__name__)
        if not isinstance(positional_encoding, bool):
            raise ValueError(f"{type(self).__name__}: positional_encoding must be True or False, "
                             f"got {positional_encoding!r}")
        self.heads = heads
        self.positional_encoding = positional_encoding

    def _make_projections(self, channels: int):
        # Dense on (B, N, d) tokens is a 1x1 conv with bias on the feature map.
        self.query, self.key, self.value, self.output_projection = (
            layers.Dense(channels, dtype=self.dtype_policy, name=name)
            for name in ("query", "key", "value", "output_projection")
        )
        for dense in (self.query, self.key, self.value, self.output_projection):
            dense.build((None, None, channels))

    def _attend(self, qk_map, v_map, return_attention: bool = False):
        """Eq. 1 with Q, K from ``qk_map`` and V from ``v_map`` (same grid), merged by W^O; A or None."""
        shape = ops.shape(qk_map)
        channels = qk_map.shape[-1]
        qk = ops.reshape(qk_map, (shape[0], -1, channels))
        v = ops.reshape(v_map, (shape[0], -1, channels))
        out, attention = multi_head_attention(self.query(qk), self.key(qk), self.value(v), self.heads,
                                              return_attention, self.blocked_above)
        out = ops.reshape(self.output_projection(out), (shape[0], shape[1], shape[2], channels))
        return out, attention


@keras.saving.register_keras_serializable(package="unet_transformer")
class PositionalEncoding2D(keras.layers.Layer):
    """Adds the fixed 2D sinusoidal encoding to a channels-last feature map.

    PE's first C/2 channels encode the column x, the last C/2 the row y, as
    interleaved sin/cos of p * omega_i, omega_i = exp(-ln(10000) * 2i / (C/2))
    (``ops.sinusoidal_encoding_2d``). No weights; the height and width are
    read from each input, so one layer serves every image size. Channels must
    be divisible by 4.

    Example:
    >>> import numpy as np
    >>> y = PositionalEncoding2D()(np.zeros((1, 2, 3, 4), "float32"))
    >>> [round(float(v), 3) for v in y[0, 1, 2]]  # x = 2 (sin, cos), y = 1 (sin, cos)
    [0.909, -0.416, 0.841, 0.54]
    """

    def build(self, input_shape):
        _check_channels(input_shape[-1], self.name)

    def call(self, x):
        return add_positional_encoding(x)  # X + PE


@keras.saving.register_keras_serializable(package="unet_transformer")
class MultiHeadSelfAttention2D(_AttentionCore):
    """MHSA (section 2.1, Fig. 3): every position of X attends to all others.

    X + PE is embedded by W_q, W_k, W_v (1x1, bias), split into ``heads``
    heads of eq. 1 and merged by an output projection. No residual (module
    docstring). The output has the input's shape.

    Args:
        heads: attention heads; must divide the channels (paper: 8).
        positional_encoding: add ``PositionalEncoding2D`` first (Table 3).

    Call ``layer(x, return_attention=True)`` for ``(y, A)`` with A of shape
    (batch, heads, H*W, H*W), float32.

    Example:
    >>> import numpy as np
    >>> y, a = MultiHeadSelfAttention2D(heads=2)(np.zeros((1, 4, 6, 8), "float32"), return_attention=True)
    >>> tuple(y.shape), tuple(a.shape)
    ((1, 4, 6, 8), (1, 2, 24, 24))
    """

    def __init__(self, heads: int = 8, positional_encoding: bool = True, **kwargs):
        super().__init__(**kwargs)
        self._set_attention_config(heads, positional_encoding)

    def build(self, input_shape):
        channels = input_shape[-1]
        _check_heads(self.heads, channels, self.name)
        if self.positional_encoding:
            _check_channels(channels, self.name)
        self._make_projections(channels)

    def call(self, x, return_attention: bool = False):
        if self.positional_encoding:
            x = add_positional_encoding(x)  # X + PE (section 2.1)
        y, attention = self._attend(x, x, return_attention)  # Q, K, V all from X: eq. 1, Fig. 3
        return (y, attention) if return_attention else y

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "positional_encoding": self.positional_encoding}


@keras.saving.register_keras_serializable(package="unet_transformer")
class MultiHeadCrossAttention(_AttentionCore):
    """MHCA (section 2.2, Fig. 4): gates the skip S by attention paid to Y.

    Inputs ``[S, Y]``: S the skip connection (H, W, C_s), Y the decoder
    feature at half resolution (H/2, W/2, C_y). Y -> 1x1 conv + BN + ReLU to
    C_s; S -> 2x2 max-pool -> 1x1 conv + BN + ReLU; PE added to both; Q and K
    from Y, V from S; multi-head attention; 1x1 conv + BN + sigmoid gives Z,
    upsampled bilinearly to S's grid. Returns Z * S (the decoder concatenates
    it with the upsampled Y).

    Args:
        heads: attention heads; must divide C_s (paper: 8).
        positional_encoding: add the 2D encoding to Y and S (Table 3).
        token_stride: extra average pooling of the Q/K/V token grid, so the
            (H/2s * W/2s)^2 attention stays bounded at high resolution; Z is
            then upsampled by 2 * token_stride.

    Call with ``return_attention=True`` for ``(Z * S, A)``, A of shape
    (batch, heads, Nq, Nk) float32 with N = (H / 2s) * (W / 2s).

    Example:
    >>> import numpy as np
    >>> s, y = np.ones((1, 8, 8, 8), "float32"), np.ones((1, 4, 4, 16), "float32")
    >>> out, a = MultiHeadCrossAttention(heads=2)([s, y], return_attention=True)
    >>> tuple(out.shape), tuple(a.shape)
    ((1, 8, 8, 8), (1, 2, 16, 16))
    """

    def __init__(self, heads: int = 8, positional_encoding: bool = True, token_stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        check_positive_int(token_stride, "token_stride")
        self._set_attention_config(heads, positional_encoding)
        self.token_stride = token_stride

    def _conv_bn(self, channels, in_shape, prefix):
        conv = layers.Conv2D(channels, 1, use_bias=False, dtype=self.dtype_policy, name=f"{prefix}_conv")
        bn = batch_norm(dtype=self.dtype_policy, name=f"{prefix}_bn")
        conv.build(in_shape)
        bn.build((None, None, None, channels))
        return conv, bn

    def build(self, input_shape):
        s_shape, y_shape = input_shape
        channels = s_shape[-1]
        _check_heads(self.heads, channels, self.name)
        if self.positional_encoding:
            _check_channels(channels, self.name)
        self.y_conv, self.y_bn = self._conv_bn(channels, y_shape, "y")
        self.s_conv, self.s_bn = self._conv_bn(channels, s_shape, "s")
        self.z_conv, self.z_bn = self._conv_bn(channels, s_shape, "z")
        self._make_projections(channels)
        stride = self.token_stride
        self.token_pool = None
        if stride > 1:
            self.token_pool = layers.AveragePooling2D(stride, padding="same", dtype=self.dtype_policy)

    def gate(self, inputs, return_attention: bool = False):
        """Z on S's grid (what ``call`` multiplies S by), and the attention A when ``return_attention``, else None.

        For reading the gate of a trained block on its inputs (``common.studies.organ_diagnosis``).
        """
        s, y = inputs
        y_tokens = ops.relu(self.y_bn(self.y_conv(y)))
        s_tokens = ops.relu(self.s_bn(self.s_conv(ops.max_pool(s, 2, 2))))
        if self.token_pool is not None:
            y_tokens, s_tokens = self.token_pool(y_tokens), self.token_pool(s_tokens)
        if self.positional_encoding:
            y_tokens, s_tokens = add_positional_encoding(y_tokens), add_positional_encoding(s_tokens)
        out, attention = self._attend(y_tokens, s_tokens, return_attention)  # Q, K from Y; V from S: eq. 1
        z = ops.sigmoid(self.z_bn(self.z_conv(out)))  # Z, Fig. 4
        # Crop: "same" token pooling rounds up when S / 2 is not a multiple of token_stride.
        shape = ops.shape(s)
        return upsample_bilinear(z, 2 * self.token_stride)[:, : shape[1], : shape[2], :], attention

    def call(self, inputs, return_attention: bool = False):
        z, attention = self.gate(inputs, return_attention)
        return (z * inputs[0], attention) if return_attention else z * inputs[0]  # Z (.) S, Fig. 4

    def compute_output_spec(self, inputs, return_attention: bool = False):
        # Not traced: Keras' JAX backend gives S and Y the same symbolic size, though Y is half of S.
        s_shape = inputs[0].shape
        out = keras.KerasTensor(s_shape, dtype=self.compute_dtype)
        if not return_attention:
            return out
        sides = [None if n is None else -(-n // (2 * self.token_stride)) for n in s_shape[1:3]]
        tokens = None if None in sides else sides[0] * sides[1]
        return out, keras.KerasTensor((s_shape[0], self.heads, tokens, tokens), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "positional_encoding": self.positional_encoding,
                "token_stride": self.token_stride}


@keras.saving.register_keras_serializable(package="unet_transformer")
class AttentionGate(keras.layers.Layer):
    """Additive attention gate of Attention U-Net (Oktay 2018, Schlemper 2019).

    Inputs ``[S, g]``: the skip S (H, W, C_s) and the gating signal g, the
    decoder feature at half resolution. As in the authors' code:
    alpha = sigmoid(psi(relu(theta(S) + phi(g)))) with theta a 2x2 stride-2
    conv (no bias), phi and psi 1x1 convs with bias, psi to one channel;
    alpha is upsampled bilinearly to S and the gated S * alpha goes through a
    1x1 conv + BN (W_y). The output has S's shape.

    Args:
        inter_channels: width of theta/phi; default C_s // 2.

    Call with ``return_attention=True`` for ``(y, alpha)``, alpha of shape
    (batch, H, W, 1) float32.

    Example:
    >>> import numpy as np
    >>> s, g = np.ones((1, 8, 8, 4), "float32"), np.ones((1, 4, 4, 8), "float32")
    >>> tuple(AttentionGate()([s, g]).shape)
    (1, 8, 8, 4)
    """

    def __init__(self, inter_channels: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if inter_channels is not None and not is_positive_int(inter_channels):
            raise ValueError(f"inter_channels must be None or a positive integer, got {inter_channels!r}")
        self.inter_channels = inter_channels

    def build(self, input_shape):
        s_shape, g_shape = input_shape
        channels = s_shape[-1]
        inter = self.inter_channels or max(channels // 2, 1)
        policy = self.dtype_policy
        self.theta = layers.Conv2D(inter, 2, strides=2, use_bias=False, dtype=policy, name="theta")
        self.phi = layers.Conv2D(inter, 1, dtype=policy, name="phi")
        self.psi = layers.Conv2D(1, 1, dtype=policy, name="psi")
        self.out_conv = layers.Conv2D(channels, 1, use_bias=False, dtype=policy, name="out_conv")
        self.out_bn = batch_norm(dtype=policy, name="out_bn")
        self.theta.build(s_shape)
        self.phi.build(g_shape)
        self.psi.build((None, None, None, inter))
        self.out_conv.build(s_shape)
        self.out_bn.build((None, None, None, channels))

    def call(self, inputs, return_attention: bool = False):
        s, g = inputs
        alpha = ops.sigmoid(self.psi(ops.relu(self.theta(s) + self.phi(g))))
        alpha = upsample_bilinear(alpha, 2)
        y = self.out_bn(self.out_conv(s * alpha))
        return (y, ops.cast(alpha, "float32")) if return_attention else y

    def compute_output_spec(self, inputs, return_attention: bool = False):
        # Not traced: Keras' JAX backend gives S and g the same symbolic size, though g is half of S.
        s_shape = inputs[0].shape
        out = keras.KerasTensor(s_shape, dtype=self.compute_dtype)
        if not return_attention:
            return out
        return out, keras.KerasTensor((*s_shape[:3], 1), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "inter_channels": self.inter_channels}
