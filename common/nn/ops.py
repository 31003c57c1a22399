"""Ops and conventions that more than one model package uses.

Bilinear upsampling on symbolic sizes (MHCA's and the attention gate's Z,
the EAS U-Net's side outputs), the input-shape and integer checks every
``build_model`` runs, and the BatchNormalization momentum and epsilon of the
PyTorch- and Torch-trained originals (``batch_norm``). One home, so that no model package imports another.
"""

from __future__ import annotations

from keras import ops

# BatchNormalization momentum in Keras' convention (new = momentum * old +
# (1 - momentum) * batch), PyTorch's 0.1 (SPEC, "Matching the original"): with
# Keras' 0.99 the running statistics lagged so far behind the weights in a
# 500-step CPU run that inference-mode Dice was 0.09 while training-mode Dice
# was 0.93 on the same batches.
BN_MOMENTUM = 0.9
# BatchNormalization epsilon of PyTorch's BatchNorm2d and Torch7's SpatialBatchNormalization; Keras' 1e-3
# would add 1e-3 to every variance, a silent difference for channels of small variance.
BN_EPSILON = 1e-5


def batch_norm(**kwargs):
    """``keras.layers.BatchNormalization`` with the PyTorch/Torch originals' momentum and epsilon.

    >>> layer = batch_norm(name="bn")
    >>> (layer.momentum, layer.epsilon)
    (0.9, 1e-05)
    """
    from keras import layers

    return layers.BatchNormalization(**{"momentum": BN_MOMENTUM, "epsilon": BN_EPSILON, **kwargs})


def is_positive_int(value) -> bool:
    """True for an int >= 1; False for bools (``True`` is an int to Python, not a size)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_positive_int(value, name: str, where: str | None = None) -> None:
    """Raises ValueError naming ``name`` (and ``where``, a layer) unless ``value`` is an int >= 1.

    Example:
    >>> check_positive_int(3, "filters")
    >>> check_positive_int(0, "filters", "EASPyramid")
    Traceback (most recent call last):
    ValueError: EASPyramid: filters must be a positive integer, got 0
    """
    if not is_positive_int(value):
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must be a positive integer, got {value!r}")


def check_input_shape(input_shape, stride: int, reason: str) -> None:
    """Raises ValueError unless ``input_shape`` is (H, W, C) with C set and H, W None or multiples of ``stride``.

    ``reason`` says where the stride comes from; the message quotes it.

    Example:
    >>> check_input_shape((None, 48, 1), 16, "the U-Net pools 4 times")
    >>> check_input_shape((60, 48, 1), 16, "the U-Net pools 4 times")
    Traceback (most recent call last):
    ValueError: input_shape (60, 48, 1): height and width must be multiples of 16 (the U-Net pools 4 times)
    """
    if len(input_shape) != 3 or input_shape[-1] is None:
        raise ValueError(f"input_shape must be (height, width, channels) with channels set, got {input_shape}")
    for side in input_shape[:2]:
        if side is not None and (side <= 0 or side % stride):
            raise ValueError(
                f"input_shape {tuple(input_shape)}: height and width must be multiples of {stride} ({reason})"
            )


def _along(x, axis: int, index):
    key = [slice(None)] * 4
    key[axis] = index
    return x[tuple(key)]


def _upsample_axis(x, factor: int, axis: int):
    # Output r of input cell i samples position i + (r + 0.5) / factor - 0.5,
    # between x[i] and its neighbour on that side; edges clamped.
    padded = ops.concatenate([_along(x, axis, slice(0, 1)), x, _along(x, axis, slice(-1, None))], axis=axis)
    previous, following = _along(padded, axis, slice(0, -2)), _along(padded, axis, slice(2, None))
    phases = []
    for r in range(factor):
        offset = (r + 0.5) / factor - 0.5
        neighbour = previous if offset < 0 else following
        phases.append(x + abs(offset) * (neighbour - x))
    shape = ops.shape(x)
    new_shape = [shape[0], shape[1], shape[2], x.shape[-1]]
    new_shape[axis] = -1
    return ops.reshape(ops.stack(phases, axis=axis + 1), new_shape)


def upsample_bilinear(x, factor: int):
    """Bilinear upsampling of (B, H, W, C) by an integer factor.

    Matches ``ops.image.resize(x, (H * factor, W * factor))`` (half-pixel
    centres, edges clamped), but also on symbolic H, W:
    ``UpSampling2D(interpolation="bilinear")`` needs static sizes under
    TensorFlow graphs.

    Example:
    >>> import numpy as np
    >>> x = np.array([0.0, 4.0], "float32").reshape(1, 1, 2, 1)
    >>> np.asarray(upsample_bilinear(x, 2)).ravel().tolist()
    [0.0, 1.0, 3.0, 4.0, 0.0, 1.0, 3.0, 4.0]
    """
    return x if factor == 1 else _upsample_axis(_upsample_axis(x, factor, 1), factor, 2)
