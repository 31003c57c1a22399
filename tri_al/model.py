"""TRI-CNN (Wetteland et al. 2020, as adopted by TRI-AL section II.B): three VGG16s, one per magnification."""

from __future__ import annotations

import keras
from keras import layers

INPUT_NAMES = ("tile_2_5x", "tile_10x", "tile_40x")  # paper: 2.5x, 10x, 40x tiles of one triplet
# VGG16 (Simonyan & Zisserman, configuration D): convolutions per block and their widths.
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
# ImageNet channel means on the 0-255 scale, as VGG16 was trained with.
IMAGENET_MEAN = (123.68, 116.779, 103.939)
HEAD_UNITS = 1024


def _vgg16_scaled(tile_size: int, width: float, name: str) -> keras.Model:
    """VGG16's convolutional part with every width multiplied by ``width`` (a CPU-sized deviation)."""
    inputs = keras.Input((tile_size, tile_size, 3))
    x = inputs
    for block, (convs, filters) in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            x = layers.Conv2D(max(1, round(filters * width)), 3, padding="same", activation="relu",
                              name=f"block{block}_conv{conv}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name=name)


def backbone(tile_size: int, width: float, name: str, weights=None) -> keras.Model:
    """One VGG16 branch: exact ``keras.applications.VGG16`` at width 1.0, else the scaled copy.

    Built under a name scope of its own, so its variables read ``vgg16_40x/block1_conv1/kernel``
    and the three branches' weights never share a path.
    """
    with keras.name_scope(name):
        if width == 1.0:
            return keras.applications.VGG16(include_top=False, weights=weights,
                                             input_shape=(tile_size, tile_size, 3), name=name)
        return _vgg16_scaled(tile_size, width, name)


def build_model(num_classes: int = 5, tile_size: int = 128, backbone_weights=None, width: float = 1.0,
                dropout: float = 0.5) -> keras.Model:
    """Builds TRI-CNN: three weight-independent VGG16 backbones, concatenated features, softmax classifier.

    Args:
        num_classes: tissue classes (paper: blood, damaged, muscle, stroma, urothelium).
        tile_size: side of each square tile in pixels (paper: 128; divisible by 32).
        backbone_weights: path of a local VGG16 no-top weights file loaded into each
            backbone (width 1.0 only); ``None`` initialises randomly. Nothing is downloaded.
        width: multiplies every VGG16 width; 1.0 is the exact VGG16 (14.7M parameters
            per backbone), smaller values are a CPU-sized deviation from the paper.
        dropout: dropout rate before each dense layer of the classifier.

    Inputs ``tile_2_5x``, ``tile_10x``, ``tile_40x``: float32 RGB in [0, 1],
    shape (batch, tile_size, tile_size, 3). Output ``probabilities``: (batch, num_classes).

    Example:

    >>> model = build_model(tile_size=32, width=1 / 16)
    >>> [tuple(t.shape) for t in model.inputs]
    [(None, 32, 32, 3), (None, 32, 32, 3), (None, 32, 32, 3)]
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(tile_size, int) or tile_size < 32 or tile_size % 32:
        raise ValueError(f"tile_size must be a positive multiple of 32 (VGG16's stride), got {tile_size!r}")
    if not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise ValueError(f"width must lie in (0, 1], got {width!r}")
    if backbone_weights is not None and width != 1.0:
        raise ValueError(f"backbone_weights: a VGG16 weights file fits width 1.0 only, got width {width}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    inputs = [keras.Input((tile_size, tile_size, 3), name=name) for name in INPUT_NAMES]
    features = []
    for name, tile in zip(INPUT_NAMES, inputs):
        suffix = name.removeprefix("tile_")
        x = layers.Rescaling(255.0, name=f"scale_{suffix}")(tile)
        x = layers.Normalization(mean=IMAGENET_MEAN, variance=(1.0, 1.0, 1.0), name=f"center_{suffix}")(x)
        x = backbone(tile_size, float(width), f"vgg16_{suffix}", backbone_weights)(x)
        features.append(layers.GlobalAveragePooling2D(name=f"pool_{suffix}")(x))
    x = layers.Concatenate(name="features")(features)
    x = layers.Dropout(dropout, name="head_dropout1")(x)
    x = layers.Dense(max(8, round(HEAD_UNITS * width)), activation="relu", name="head_dense")(x)
    x = layers.Dropout(dropout, name="head_dropout2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="tri_cnn")
