"""Blocks of the EAS U-Net (Wang et al., 2024, section II.B).

``SeparableConvBNHSwish`` is the optimised depthwise separable module (Fig. 4),
``ECA`` the efficient channel attention of ECA-Net (Wang et al., CVPR 2020,
the paper's [14]) and ``EASPyramid`` the ECA-ASPP pyramid (Fig. 5) built from
them.

Decisions where the paper is silent:

- LeakyReLU's negative slope is 0.01, PyTorch's default: the authors trained
  in PyTorch 2.0 (section III.A) and name no slope. (Keras' default is 0.2.)
- The pyramid's dilated 3x3 branches are depthwise separable atrous
  convolutions (``SeparableConvBNHSwish`` with a dilation rate), as in
  DeepLabV3+ (the paper's [13], "atrous separable convolution") and in line
  with the paper's aim of replacing standard convolutions by separable ones.
  With dense 3x3 convolutions the pyramid alone would hold 28M parameters at
  base 64, more than the whole U-Net baseline.
- The pyramid's activation is h-swish throughout (reasons in ``EASPyramid``).
- ``BilinearUpsampling2D`` upsamples the side outputs with ``common.nn.ops.upsample_bilinear``:
  ``UpSampling2D(interpolation="bilinear")`` fails on symbolic height/width
  in TensorFlow graphs.
- BatchNormalization is ``common.nn.ops.batch_norm``: PyTorch's momentum 0.1
  (Keras' 0.9) and epsilon 1e-5 (Keras' 1e-3); the authors trained in PyTorch.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from common.nn.initializers import torch_uniform
from common.nn.ops import batch_norm, check_positive_int, upsample_bilinear

LEAKY_RELU_SLOPE = 0.01  # PyTorch's default; see the module docstring
ASPP_RATES = (6, 12, 18)  # Fig. 5 (DeepLabV3's rates for output stride 16)


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA-Net's adaptive 1D kernel size k = psi(C) (eq. 12), always odd."""
    t = int(abs((math.log2(channels) + b) / gamma))
    k = t if t % 2 else t + 1
    return k


@keras.saving.register_keras_serializable(package="eas_unet")
class SeparableConvBNHSwish(keras.layers.Layer):
    """The optimised depthwise separable module (section II.B, Fig. 4).

    Depthwise kxk conv -> BN -> LeakyReLU -> pointwise 1x1 conv -> BN ->
    h-swish. Convolutions have no bias (BN's beta is the bias) and "same"
    padding, so the spatial size is kept.

    Args:
        filters: output channels of the pointwise convolution.
        kernel_size: size of the depthwise kernel (paper: 3).
        dilation_rate: dilation of the depthwise kernel (1 in the U-Net
            blocks; 6, 12, 18 in ``EASPyramid``).

    Example:
    >>> import numpy as np
    >>> tuple(SeparableConvBNHSwish(8)(np.zeros((1, 16, 12, 3), "float32")).shape)
    (1, 16, 12, 8)
    """

    def __init__(self, filters: int, kernel_size: int = 3, dilation_rate: int = 1, **kwargs):
        super().__init__(**kwargs)
        for name, value in [("filters", filters), ("kernel_size", kernel_size), ("dilation_rate", dilation_rate)]:
            check_positive_int(value, name, type(self).__name__)
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate

    def build(self, input_shape):
        channels = input_shape[-1]
        policy = self.dtype_policy
        self.depthwise = layers.DepthwiseConv2D(self.kernel_size, padding="same", dilation_rate=self.dilation_rate,
                                                use_bias=False, dtype=policy, name="depthwise",
                                                depthwise_initializer=torch_uniform(self.kernel_size**2))
        self.depthwise_bn = batch_norm(dtype=policy, name="depthwise_bn")
        self.pointwise = layers.Conv2D(self.filters, 1, use_bias=False, kernel_initializer=torch_uniform(channels),
                                       dtype=policy, name="pointwise")
        self.pointwise_bn = batch_norm(dtype=policy, name="pointwise_bn")
        self.depthwise.build(input_shape)
        self.depthwise_bn.build((None, None, None, channels))
        self.pointwise.build((None, None, None, channels))
        self.pointwise_bn.build((None, None, None, self.filters))

    def call(self, x, training=None):
        x = ops.leaky_relu(self.depthwise_bn(self.depthwise(x), training=training), LEAKY_RELU_SLOPE)
        return keras.activations.hard_swish(self.pointwise_bn(self.pointwise(x), training=training))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "dilation_rate": self.dilation_rate}


@keras.saving.register_keras_serializable(package="eas_unet")
class ECA(keras.layers.Layer):
    """Efficient channel attention (ECA-Net, the paper's [14]).

    Global average pooling gives one descriptor per channel; a 1D convolution
    across the channel axis (zero padding, no bias) with the adaptive kernel
    size k = psi(C) mixes each channel with its k - 1 neighbours; a sigmoid
    turns the result into channel weights that rescale the input.

    Args:
        gamma: the gamma of psi(C) = |(log2(C) + b) / gamma|_odd (ECA-Net: 2).
        b: the b of psi(C) (ECA-Net: 1).

    Example:
    >>> import numpy as np
    >>> layer = ECA()
    >>> tuple(layer(np.ones((1, 4, 4, 128), "float32")).shape), layer.kernel_size
    ((1, 4, 4, 128), 5)
    """

    def __init__(self, gamma: float = 2, b: float = 1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma <= 0:
            raise ValueError(f"ECA: gamma must be a positive number, got {gamma!r}")
        if isinstance(b, bool) or not isinstance(b, (int, float)):
            raise ValueError(f"ECA: b must be a number, got {b!r}")
        self.gamma = gamma
        self.b = b

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel_size = eca_kernel_size(channels, self.gamma, self.b)
        self.conv = layers.Conv1D(1, self.kernel_size, padding="same", use_bias=False, dtype=self.dtype_policy,
                                  kernel_initializer=torch_uniform(self.kernel_size), name="conv")
        self.conv.build((None, channels, 1))

    def call(self, x):
        descriptor = ops.expand_dims(ops.mean(x, axis=(1, 2)), -1)  # (B, C, 1): channels as a 1D sequence
        weights = ops.sigmoid(self.conv(descriptor))
        return x * ops.reshape(weights, (-1, 1, 1, x.shape[-1]))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "b": self.b}


@keras.saving.register_keras_serializable(package="eas_unet")
class EASPyramid(keras.layers.Layer):
    """ECA-ASPP, the paper's pyramid module based on attention (Fig. 5).

    Five parallel branches on the input: a 1x1 conv, three 3x3 atrous
    separable convs with dilation 6, 12 and 18, and image pooling (global
    average pool -> 1x1 conv -> BN -> activation, broadcast back to the
    input's dynamic height and width). Each conv branch is conv + BN +
    activation followed by ``ECA``; the five are concatenated and projected
    by a 1x1 conv + BN + activation to ``filters`` channels.

    Activation: h-swish everywhere. The paper replaces ReLU by h-swish as the
    network's activation (section II.B, Fig. 4) and names no other for the
    pyramid; its atrous branches, being separable modules, end in h-swish
    already, so the 1x1, pooling and projection paths use it too instead of
    DeepLabV3's ReLU. The image-pooling branch gets no ECA: its feature is
    already one global descriptor per channel, which is what ECA pools to.

    Args:
        filters: channels of every branch and of the output.
        dilation_rates: the three atrous rates (Fig. 5: 6, 12, 18).

    Example:
    >>> import numpy as np
    >>> tuple(EASPyramid(16)(np.zeros((2, 8, 6, 32), "float32")).shape)
    (2, 8, 6, 16)
    """

    def __init__(self, filters: int, dilation_rates=ASPP_RATES, **kwargs):
        super().__init__(**kwargs)
        check_positive_int(filters, "filters", "EASPyramid")
        if not isinstance(dilation_rates, (list, tuple)) or not dilation_rates:
            raise ValueError(f"EASPyramid: dilation_rates must be a non-empty list of positive integers, "
                             f"got {dilation_rates!r}")
        for rate in dilation_rates:
            check_positive_int(rate, "every dilation rate", "EASPyramid")
        self.filters = filters
        self.dilation_rates = tuple(dilation_rates)

    def _conv_bn(self, in_channels: int, name: str):
        """A 1x1 conv (PyTorch's init: fan_in = in_channels) and its BN."""
        policy = self.dtype_policy
        conv = layers.Conv2D(self.filters, 1, use_bias=False, kernel_initializer=torch_uniform(in_channels),
                             dtype=policy, name=f"{name}_conv")
        bn = batch_norm(dtype=policy, name=f"{name}_bn")
        return conv, bn

    def build(self, input_shape):
        channels, policy = input_shape[-1], self.dtype_policy
        branch_shape = (None, None, None, self.filters)
        self.pointwise_conv, self.pointwise_bn = self._conv_bn(channels, "pointwise")
        self.atrous = [SeparableConvBNHSwish(self.filters, 3, rate, dtype=policy, name=f"atrous{rate}")
                       for rate in self.dilation_rates]
        self.eca = [ECA(dtype=policy, name=f"eca{i}") for i in range(len(self.dilation_rates) + 1)]
        self.pool_conv, self.pool_bn = self._conv_bn(channels, "pool")
        branches = len(self.dilation_rates) + 2
        self.project_conv, self.project_bn = self._conv_bn(self.filters * branches, "project")
        for conv in (self.pointwise_conv, self.pool_conv):
            conv.build((None, None, None, channels))
        for block in self.atrous:
            block.build(input_shape)
        for layer in (self.pointwise_bn, self.pool_bn, self.project_bn, *self.eca):
            layer.build(branch_shape)
        self.project_conv.build((None, None, None, self.filters * (len(self.dilation_rates) + 2)))

    def call(self, x, training=None):
        hard_swish = keras.activations.hard_swish
        branches = [hard_swish(self.pointwise_bn(self.pointwise_conv(x), training=training))]
        branches += [block(x, training=training) for block in self.atrous]
        branches = [eca(branch) for eca, branch in zip(self.eca, branches)]
        pooled = ops.mean(x, axis=(1, 2), keepdims=True)
        pooled = hard_swish(self.pool_bn(self.pool_conv(pooled), training=training))
        shape = ops.shape(x)
        branches.append(ops.broadcast_to(pooled, (shape[0], shape[1], shape[2], self.filters)))
        y = self.project_conv(ops.concatenate(branches, axis=-1))
        return hard_swish(self.project_bn(y, training=training))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "dilation_rates": list(self.dilation_rates)}


@keras.saving.register_keras_serializable(package="eas_unet")
class BilinearUpsampling2D(keras.layers.Layer):
    """Bilinear upsampling by an integer factor that also works on symbolic sizes (the side outputs, Fig. 6).

    Half-pixel centres, as PyTorch's ``align_corners=False`` and ``tf.image.resize``
    (``common.nn.ops.upsample_bilinear``).

    Args:
        factor: the integer upsampling factor.

    Example:
    >>> import numpy as np
    >>> tuple(BilinearUpsampling2D(4)(np.zeros((1, 2, 3, 5), "float32")).shape)
    (1, 8, 12, 5)
    """

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int(factor, "factor", type(self).__name__)
        self.factor = factor

    def call(self, x):
        return upsample_bilinear(x, self.factor)

    def compute_output_shape(self, input_shape):
        height, width = (None if side is None else side * self.factor for side in input_shape[1:3])
        return (input_shape[0], height, width, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="eas_unet", name="_BilinearUpsampling2D")
class _LegacyBilinearUpsampling2D(BilinearUpsampling2D):
    """The name files saved before ``BilinearUpsampling2D`` was public carry; they load as it."""
