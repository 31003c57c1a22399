"""U-Net backbone of the U-Transformer paper (Petit et al., MLMI 2021, section 3).

The classic 2D U-Net (Ronneberger 2015) the paper builds on and compares
against: four 2x2 max-poolings, widths ``base_filters * [1, 2, 4, 8, 16]``,
double 3x3 conv + BN + ReLU blocks and 2x2 transposed-conv upsampling. At
``base_filters=64`` it has about 31M parameters (paper: "~30M").
"""

from __future__ import annotations

import keras
from keras import layers

VARIANTS = ("unet",)
DEPTH = 4  # poolings; the total stride is 2**DEPTH
STRIDE = 2**DEPTH


# BN running statistics with momentum 0.9 (PyTorch's 0.1): with Keras' 0.99 they
# lagged so far behind the weights in a 500-step CPU run that inference-mode
# Dice was 0.09 while training-mode Dice was 0.93 on the same batches.
BN_MOMENTUM = 0.9


def conv_block(x, filters: int, name: str):
    """Two 3x3 conv + BN + ReLU (bias-free convs: BN's beta is the bias)."""
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def _validate(variant, input_shape, num_classes, base_filters):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if len(input_shape) != 3 or input_shape[-1] is None:
        raise ValueError(f"input_shape must be (height, width, channels) with channels set, got {input_shape}")
    for side in input_shape[:2]:
        if side is not None and (side <= 0 or side % STRIDE):
            raise ValueError(
                f"input_shape {tuple(input_shape)}: height and width must be multiples of {STRIDE} "
                f"(the U-Net pools {DEPTH} times)"
            )
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
    if base_filters < 1:
        raise ValueError(f"base_filters must be >= 1, got {base_filters}")


def build_model(variant: str = "unet", input_shape=(None, None, 1), num_classes: int = 2,
                base_filters: int = 64) -> keras.Model:
    """Builds a segmentation network of the U-Transformer family.

    Args:
        variant: "unet", the classic U-Net backbone.
        input_shape: (height, width, channels); height and width may be None
            (any multiple of 16 then works) or fixed multiples of 16.
        num_classes: output classes, background included.
        base_filters: width of the first level; the paper uses 64.

    Returns:
        A functional ``keras.Model`` mapping images to per-pixel softmax
        probabilities (float32 whatever the dtype policy).

    Example:
    >>> model = build_model("unet", input_shape=(64, 64, 1), num_classes=3, base_filters=4)
    >>> model.output_shape
    (None, 64, 64, 3)
    """
    _validate(variant, tuple(input_shape), num_classes, base_filters)
    widths = [base_filters * 2**i for i in range(DEPTH + 1)]
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x, skips = inputs, []
    for level, width in enumerate(widths[:-1]):
        x = conv_block(x, width, name=f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = conv_block(x, widths[-1], name="bottleneck")
    for level in reversed(range(DEPTH)):
        x = layers.Conv2DTranspose(widths[level], 2, strides=2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"concat{level}")([skips[level], x])
        x = conv_block(x, widths[level], name=f"dec{level}")
    logits = layers.Conv2D(num_classes, 1, name="logits")(x)
    # Softmax in float32 so mixed_float16 training stays stable and outputs are float32.
    probabilities = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name=variant)
