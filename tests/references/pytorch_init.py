"""PyTorch's default initialisation rule, transcribed in NumPy (a reference for tests, sharing no code with the zoo).

``torch.nn.Conv*d`` / ``ConvTranspose*d`` / ``Linear`` ``reset_parameters``: the
weight from ``kaiming_uniform_(w, a=sqrt(5))``, the bias from U(+-1/sqrt(fan_in)),
fan_in from ``torch.nn.init._calculate_fan_in_and_fan_out(weight)``:
``weight.size(1) * prod(weight.shape[2:])`` in PyTorch's own weight layout.
"""

from __future__ import annotations

import math

import keras
import numpy as np


def pytorch_weight_shape(layer, kernel_shape) -> tuple:
    """The shape PyTorch gives the weight of the module equal to Keras ``layer`` with ``kernel_shape``."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # Conv2d(C, C * m, groups=C): (C * m, 1, kh, kw)
        kh, kw, channels, multiplier = kernel_shape
        return (channels * multiplier, 1, kh, kw)
    if isinstance(layer, keras.layers.Conv2DTranspose):  # ConvTranspose2d: (in, out, kh, kw); Keras (kh, kw, out, in)
        kh, kw, out, inp = kernel_shape
        return (inp, out, kh, kw)
    if isinstance(layer, keras.layers.Dense):  # Linear: (out, in)
        return tuple(reversed(kernel_shape))
    *taps, inp, out = kernel_shape  # ConvNd: (out, in, *taps)
    return (out, inp, *taps)


def bound(weight_shape) -> float:
    """kaiming_uniform_(a=sqrt(5)): gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)); the bias' bound equals it."""
    fan_in = weight_shape[1] * int(np.prod(weight_shape[2:]))
    gain = math.sqrt(2.0 / (1 + 5))
    return gain * math.sqrt(3.0 / fan_in)


def check_uniform(values, limit: float, what: str) -> None:
    """Asserts ``values`` look like draws of U(-limit, limit): inside it, and (for enough draws) spread over it."""
    values = np.asarray(values, np.float64).ravel()
    assert np.abs(values).max() <= limit * (1 + 1e-6), f"{what}: max {np.abs(values).max():.4g} > bound {limit:.4g}"
    if values.size >= 200:
        assert np.abs(values).max() >= 0.95 * limit, f"{what}: max {np.abs(values).max():.4g}, bound {limit:.4g}"
        std = values.std()
        assert abs(std - limit / math.sqrt(3)) <= 0.1 * limit / math.sqrt(3), f"{what}: std {std:.4g}, " \
            f"U(+-{limit:.4g}) has {limit / math.sqrt(3):.4g}"


def check_layer(layer, exempt=()) -> int:
    """Checks every kernel and bias of ``layer`` against PyTorch's rule; returns how many were checked."""
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return 0
    limit = bound(pytorch_weight_shape(layer, tuple(kernel.shape)))
    checked = 0
    for variable in (kernel, getattr(layer, "bias", None)):
        if variable is not None and variable.path not in exempt:
            check_uniform(keras.ops.convert_to_numpy(variable), limit, variable.path)
            checked += 1
    return checked
