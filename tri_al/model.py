"""TRI-CNN (Wetteland et al. 2020, as adopted by TRI-AL section II.B): three VGG16s, one per magnification."""

from __future__ import annotations

import keras
from keras import layers, ops

from common.nn.built import BuiltModel, register_builder

INPUT_NAMES = ("tile_2_5x", "tile_10x", "tile_40x")  # paper: 2.5x, 10x, 40x tiles of one triplet
# VGG16 (Simonyan & Zisserman, configuration D): convolutions per block and their widths.
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
# ImageNet channel means in BGR order on the 0-255 scale, as keras.applications.vgg16.preprocess_input subtracts.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
# What the VGG16s see: "raw" 0-255 RGB as the original code fed them, or ImageNet's "caffe" preprocessing.
PREPROCESSING = ("raw", "imagenet")
HEAD_UNITS = 4096  # the original's n_neurons_first_layer = n_neurons_second_layer = 4096
DROPOUT = 0.4  # TRI-AL's training script: Dropout(0.4) after each 4096-unit layer


@keras.saving.register_keras_serializable(package="tri_al")
class VGG16Preprocess(layers.Layer):
    """What each VGG16 sees of an RGB tile in [0, 1]: the original's raw pixels, or ImageNet's "caffe" input.

    In the graph, so trained, exported and served inputs all go through it.
    ``mode="raw"``: ``255 x``, the 0-255 RGB the original TRI-CNN was fed (its
    mean subtraction and BGR flip are commented out), so its weights give its
    outputs. ``mode="imagenet"``: ``keras.applications.vgg16.preprocess_input``,
    what the ImageNet VGG16 weights were trained on, ``x_bgr = 255 * x[..., ::-1] - mean_bgr``.

    Args:
        mode: "raw" or "imagenet". The default is "imagenet" because files saved
            before the argument existed carry no ``mode`` and computed that.

    Example:

    >>> import numpy as np
    >>> red = np.array([[[[1.0, 0.0, 0.0]]]], "float32")  # one RGB pixel
    >>> np.asarray(VGG16Preprocess()(red), "float64").round(3).tolist()  # B, G, R minus their means
    [[[[-103.939, -116.779, 131.32]]]]
    >>> np.asarray(VGG16Preprocess(mode="raw")(red), "float64").tolist()  # the original's R, G, B
    [[[[255.0, 0.0, 0.0]]]]
    """

    def __init__(self, mode: str = "imagenet", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING:
            raise ValueError(f"mode must be one of {PREPROCESSING}, got {mode!r}")
        self.mode = mode

    def call(self, x):
        x = x * 255.0
        if self.mode == "raw":
            return x
        bgr = ops.flip(x, axis=-1)  # RGB -> BGR
        return bgr - ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype=bgr.dtype)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


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


def _check(num_classes, tile_size, width, backbone_weights, head_units, dropout, preprocessing) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(tile_size, int) or tile_size < 32 or tile_size % 32:
        raise ValueError(f"tile_size must be a positive multiple of 32 (VGG16's stride), got {tile_size!r}")
    if not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise ValueError(f"width must lie in (0, 1], got {width!r}")
    if backbone_weights is not None and width != 1.0:
        raise ValueError(f"backbone_weights: a VGG16 weights file fits width 1.0 only, got width {width}")
    if not isinstance(head_units, int) or head_units < 1:
        raise ValueError(f"head_units must be a positive integer, got {head_units!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")


def build_model(num_classes: int = 5, tile_size: int = 128, backbone_weights=None, width: float = 1.0,
                head_units: int = HEAD_UNITS, dropout: float = DROPOUT, preprocessing: str = "raw") -> keras.Model:
    """Builds TRI-CNN: three weight-independent VGG16 backbones, concatenated features, softmax classifier.

    Each tile goes through ``VGG16Preprocess(preprocessing)`` and its own VGG16, whose last
    feature map is global-average pooled (512 features); the three are
    concatenated (1536) and classified by the original's head,
    Dense(4096, ReLU) -> dropout -> Dense(4096, ReLU) -> dropout -> softmax.

    Args:
        num_classes: tissue classes (paper: blood, damaged, muscle, stroma, urothelium).
        tile_size: side of each square tile in pixels (paper: 128; divisible by 32).
        backbone_weights: path of a local VGG16 no-top weights file (ImageNet's, as the original
            started from) loaded into each backbone (width 1.0 only); ``None`` initialises randomly.
            Nothing is downloaded.
        width: multiplies every VGG16 width; 1.0 is the exact VGG16 (14.7M parameters
            per backbone), smaller values are a CPU-sized deviation from the paper.
        head_units: units of each of the two hidden dense layers (original: 4096; fewer is a
            CPU-sized deviation).
        dropout: rate of the dropout after each hidden dense layer (TRI-AL's code: 0.4).
        preprocessing: what the VGG16s see of each tile: "raw", ``255 x`` as RGB, what the original
            code fed (so its converted weights give its outputs, ``common.convert.tri_cnn``), or
            "imagenet", ``keras.applications.vgg16.preprocess_input(255 x)`` (BGR, ImageNet mean
            subtracted), for training from ImageNet VGG16 weights as they were trained.

    Inputs ``tile_2_5x``, ``tile_10x``, ``tile_40x``: float32 RGB in [0, 1],
    shape (batch, tile_size, tile_size, 3). Output ``probabilities``: (batch, num_classes).
    A ``common.nn.built.BuiltModel``: its file records "tri_cnn" and these arguments.

    Example:

    >>> model = build_model(tile_size=32, width=1 / 16, head_units=32)
    >>> [tuple(t.shape) for t in model.inputs], model.output_shape
    ([(None, 32, 32, 3), (None, 32, 32, 3), (None, 32, 32, 3)], (None, 5))
    """
    _check(num_classes, tile_size, width, backbone_weights, head_units, dropout, preprocessing)
    inputs = [keras.Input((tile_size, tile_size, 3), name=name) for name in INPUT_NAMES]
    features = []
    for name, tile in zip(INPUT_NAMES, inputs):
        suffix = name.removeprefix("tile_")
        x = VGG16Preprocess(preprocessing, name=f"preprocess_{suffix}")(tile)
        x = backbone(tile_size, float(width), f"vgg16_{suffix}", backbone_weights)(x)
        features.append(layers.GlobalAveragePooling2D(name=f"pool_{suffix}")(x))  # VGG16(pooling="avg")
    x = layers.Concatenate(name="features")(features)
    for index in (1, 2):
        x = layers.Dense(head_units, activation="relu", name=f"head_dense{index}")(x)
        x = layers.Dropout(dropout, name=f"head_dropout{index}")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    # backbone_weights recorded as None: the weights travel in the model's own file, so rebuilding it needs
    # no VGG16 weights file (the one it started from may be gone, or on another machine).
    arguments = dict(num_classes=num_classes, tile_size=tile_size, backbone_weights=None, width=float(width),
                     head_units=head_units, dropout=float(dropout), preprocessing=preprocessing)
    return BuiltModel("tri_cnn", arguments, inputs=inputs, outputs=outputs, name="tri_cnn")


register_builder("tri_cnn", build_model)
