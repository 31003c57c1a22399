"""PyTorch's default initialisation, for the models whose originals trained in PyTorch or Torch7.

PyTorch draws every ``Conv*d``, ``ConvTranspose*d`` and ``Linear`` weight with
``kaiming_uniform_(a=sqrt(5))``, whose bound ``gain * sqrt(3 / fan_in)`` with
``gain = sqrt(2 / (1 + a**2))`` is ``1 / sqrt(fan_in)``, and every bias from
U(+-1 / sqrt(fan_in)) with the weight's fan_in (``torch/nn/modules/conv.py``
and ``linear.py``, ``reset_parameters``); Torch7's ``reset()`` draws both from
the same bound. Keras draws glorot_uniform weights and zero biases, and counts
a depthwise kernel's fan over all its channels: for a 3x3 depthwise kernel on
128 channels Keras' bound is 0.072, PyTorch's 0.333 (SPEC, "Matching the
original implementation"). ``keras.initializers`` has no initializer that takes
the fan from PyTorch's weight layout, hence this one.

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


@keras.saving.register_keras_serializable(package="common")
class TorchUniform(keras.initializers.RandomUniform):
    """U(+-1 / sqrt(fan_in)): PyTorch's default for conv and linear weights and biases.

    Args:
        fan_in: the fan a bias needs (its own shape does not tell it: pass the
            layer's, ``torch_fan_in(kernel_shape)``). None: taken from the shape
            drawn, which must then be the kernel's.
        depthwise: the kernel is a ``DepthwiseConv2D``'s (fan kh * kw).
        seed: as ``keras.initializers.RandomUniform``'s.

    Example:
    >>> import numpy as np
    >>> w = np.asarray(TorchUniform(seed=0)((3, 3, 16, 8)))
    >>> bool(np.abs(w).max() <= 1 / 12)  # fan_in 3 * 3 * 16 = 144
    True
    """

    def __init__(self, fan_in: int | None = None, depthwise: bool = False, seed=None):
        if fan_in is not None and (isinstance(fan_in, bool) or not isinstance(fan_in, int) or fan_in < 1):
            raise ValueError(f"TorchUniform: fan_in must be a positive integer or None, got {fan_in!r}")
        self.fan_in = fan_in
        self.depthwise = bool(depthwise)
        super().__init__(minval=-1.0, maxval=1.0, seed=seed)

    def __call__(self, shape, dtype=None):
        fan_in = self.fan_in or torch_fan_in(shape, self.depthwise)
        bound = 1.0 / math.sqrt(fan_in)
        return keras.random.uniform(shape, minval=-bound, maxval=bound, seed=self.seed, dtype=dtype)

    def get_config(self):
        return {"fan_in": self.fan_in, "depthwise": self.depthwise, "seed": super().get_config()["seed"]}


def torch_defaults(fan_in: int, depthwise: bool = False) -> dict:
    """``kernel_initializer`` and ``bias_initializer`` of a layer as PyTorch initialises it.

    ``fan_in`` is the layer's (``torch_fan_in`` of its kernel shape); the
    kernel takes its own from its shape, the bias uses ``fan_in``.

    Example:
    >>> layer = keras.layers.Conv2D(8, 3, **torch_defaults(torch_fan_in((3, 3, 4, 8))))
    >>> layer.bias_initializer.fan_in
    36
    """
    return {"kernel_initializer": TorchUniform(depthwise=depthwise), "bias_initializer": TorchUniform(fan_in)}
