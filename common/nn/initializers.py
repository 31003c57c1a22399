"""PyTorch's default initialisation, for the models whose originals trained in PyTorch or Torch7.

PyTorch draws every ``Conv*d``, ``ConvTranspose*d`` and ``Linear`` weight with
``kaiming_uniform_(a=sqrt(5))``, whose bound ``gain * sqrt(3 / fan_in)`` with
``gain = sqrt(2 / (1 + a**2))`` is ``1 / sqrt(fan_in)``, and every bias from
U(+-1 / sqrt(fan_in)) with the weight's fan_in (``torch/nn/modules/conv.py``
and ``linear.py``, ``reset_parameters``); Torch7's ``reset()`` draws both from
the same bound. Keras draws glorot_uniform weights and zero biases, and counts
a depthwise kernel's fan over all its channels: for a 3x3 depthwise kernel on
128 channels Keras' bound is 0.072, PyTorch's 0.333 (SPEC, "Matching the
original implementation"). Keras has no initializer that counts the fan as
PyTorch does, hence ``torch_fan_in``.

Both are plain ``keras.initializers.RandomUniform`` bounded by the layer's
fan_in, which the builders know from the kernel's shape.

PyTorch's fan_in is ``weight.size(1) * kh * kw``: ``in_channels / groups`` taps
per output for a convolution, but ``out_channels / groups`` for a transposed one
(its weight is stored (in, out / groups, kh, kw)). In Keras' kernel layouts both
are the product of every axis but the last (Conv: (kh, kw, in, out);
Conv2DTranspose: (kh, kw, out, in); Dense: (in, out)); a depthwise kernel
(kh, kw, in, multiplier) has one input channel per group, so kh * kw.
"""

from __future__ import annotations

import math

import keras


def torch_fan_in(kernel_shape, depthwise: bool = False) -> int:
    """PyTorch's fan_in of the layer whose Keras kernel has ``kernel_shape`` (module docstring).

    Example:
    >>> torch_fan_in((3, 3, 128, 64)), torch_fan_in((3, 3, 128, 1), depthwise=True), torch_fan_in((256, 16))
    (1152, 9, 256)
    """
    taps = kernel_shape[:-2] if depthwise else kernel_shape[:-1]
    return math.prod(int(side) for side in taps)


def torch_uniform(fan_in: int, seed=None) -> keras.initializers.RandomUniform:
    """U(+-1 / sqrt(fan_in)): PyTorch's draw for a conv or linear weight, and for its bias, of that fan_in.

    A plain ``keras.initializers.RandomUniform``, so saved models need nothing
    of the zoo to load.

    Example:
    >>> init = torch_uniform(144)
    >>> (round(init.minval, 4), round(init.maxval, 4))
    (-0.0833, 0.0833)
    """
    if isinstance(fan_in, bool) or not isinstance(fan_in, int) or fan_in < 1:
        raise ValueError(f"fan_in must be a positive integer, got {fan_in!r}")
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound, seed=seed)


def torch_defaults(kernel_shape, depthwise: bool = False) -> dict:
    """``kernel_initializer`` and ``bias_initializer`` of a layer whose Keras kernel has ``kernel_shape``, as PyTorch.

    Both are U(+-1/sqrt(fan_in)) with PyTorch's fan_in (``torch_fan_in``). For a
    ``DepthwiseConv2D`` pass ``depthwise=True`` and use the kernel's as its
    ``depthwise_initializer``.

    Example:
    >>> init = torch_defaults((3, 3, 4, 8))
    >>> layer = keras.layers.Conv2D(8, 3, **init)
    >>> round(layer.bias_initializer.maxval, 4)  # fan_in 3 * 3 * 4 = 36
    0.1667
    """
    fan_in = torch_fan_in(kernel_shape, depthwise)
    return {"kernel_initializer": torch_uniform(fan_in), "bias_initializer": torch_uniform(fan_in)}
