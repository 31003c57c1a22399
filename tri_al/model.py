"""TRI-CNN (Wetteland et al. 2020, as adopted by TRI-AL section II.B): three VGG16s, one per magnification."""

from __future__ import annotations

import warnings

import keras
from keras import layers, ops

from common.nn.built import BuiltModel, register_builder

INPUT_NAMES = ("tile_2_5x", "tile_10x", "tile_40x")  # paper: 2.5x, 10x, 40x tiles of one triplet
# VGG16 (Simonyan & Zisserman, configuration D): its first block's width, the one its others are multiples of.
BASE_FILTERS = 64
# Convolutions per block and their widths in multiples of base_filters: 64, 128, 256, 512, 512 at 64.
VGG16_BLOCKS = ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8))
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


def _vgg16_narrow(tile_size: int, base_filters: int, name: str) -> keras.Model:
    """VGG16's convolutional part with ``base_filters`` for its 64: blocks of 1, 2, 4, 8, 8 x ``base_filters``."""
    inputs = keras.Input((tile_size, tile_size, 3))
    x = inputs
    for block, (convs, multiple) in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            x = layers.Conv2D(multiple * base_filters, 3, padding="same", activation="relu",
                              name=f"block{block}_conv{conv}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name=name)


def backbone(tile_size: int, base_filters: int, name: str, weights=None) -> keras.Model:
    """One VGG16 branch: exact ``keras.applications.VGG16`` at ``BASE_FILTERS``, else the narrower copy.

    Built under a name scope of its own, so its variables read ``vgg16_40x/block1_conv1/kernel``
    and the three branches' weights never share a path.
    """
    with keras.name_scope(name):
        if base_filters == BASE_FILTERS:
            return keras.applications.VGG16(include_top=False, weights=weights,
                                             input_shape=(tile_size, tile_size, 3), name=name)
        return _vgg16_narrow(tile_size, base_filters, name)


def base_filters_of_width(width) -> int:
    """``base_filters`` of the multiplier ``width`` that ``build_model`` took before: ``64 x width``, a whole number.

    >>> base_filters_of_width(0.125)
    8
    """
    filters = BASE_FILTERS * width if isinstance(width, (int, float)) and not isinstance(width, bool) else None
    if filters is None or not 0 < width <= 1 or filters != round(filters):
        raise ValueError(f"width must be a multiple of 1/{BASE_FILTERS} in (0, 1] (base_filters = {BASE_FILTERS} x "
                         f"width, a whole number of channels), got {width!r}")
    return round(filters)


def check_base_filters(base_filters) -> None:
    """ValueError unless ``base_filters`` is a whole number of channels up to VGG16's (a study checks it early)."""
    if isinstance(base_filters, bool) or not isinstance(base_filters, int) or not 1 <= base_filters <= BASE_FILTERS:
        raise ValueError(f"base_filters must be an integer in [1, {BASE_FILTERS}] (VGG16's first block at most), "
                         f"got {base_filters!r}")


def _check(num_classes, tile_size, base_filters, backbone_weights, head_units, dropout, preprocessing) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(tile_size, int) or tile_size < 32 or tile_size % 32:
        raise ValueError(f"tile_size must be a positive multiple of 32 (VGG16's stride), got {tile_size!r}")
    check_base_filters(base_filters)
    if backbone_weights is not None and base_filters != BASE_FILTERS:
        raise ValueError(f"backbone_weights: a VGG16 weights file fits base_filters {BASE_FILTERS} only, got "
                         f"base_filters {base_filters}")
    if not isinstance(head_units, int) or head_units < 1:
        raise ValueError(f"head_units must be a positive integer, got {head_units!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")


def _renamed_width(width, base_filters: int) -> int:
    """``base_filters`` for a call that gave the old ``width`` (one release more), with a DeprecationWarning."""
    if base_filters != BASE_FILTERS:
        raise ValueError(f"width: the old name of base_filters (base_filters = {BASE_FILTERS} x width); give "
                         f"base_filters alone, got width {width!r} and base_filters {base_filters!r}")
    filters = base_filters_of_width(width)
    warnings.warn(f"tri_al.build_model: width is deprecated and goes in the next release; use base_filters={filters}",
                  DeprecationWarning, stacklevel=3)
    return filters


def build_model(num_classes: int = 5, tile_size: int = 128, backbone_weights=None, base_filters: int = BASE_FILTERS,
                head_units: int = HEAD_UNITS, dropout: float = DROPOUT, preprocessing: str = "raw", *,
                width: float | None = None) -> keras.Model:
    """Builds TRI-CNN: three weight-independent VGG16 backbones, concatenated features, softmax classifier.

    Each tile goes through ``VGG16Preprocess(preprocessing)`` and its own VGG16, whose last
    feature map is global-average pooled (``8 x base_filters`` features, 512); the three are
    concatenated (1536) and classified by the original's head,
    Dense(4096, ReLU) -> dropout -> Dense(4096, ReLU) -> dropout -> softmax.

    Args:
        num_classes: tissue classes (paper: blood, damaged, muscle, stroma, urothelium).
        tile_size: side of each square tile in pixels (paper: 128; divisible by 32).
        backbone_weights: path of a local VGG16 no-top weights file (ImageNet's, as the original
            started from) loaded into each backbone (``base_filters`` 64 only); ``None`` initialises
            randomly. Nothing is downloaded.
        base_filters: the width of each VGG16's first block, the one its blocks' widths are 1, 2, 4,
            8, 8 times; 64 is VGG16 itself (14.7M parameters per backbone), fewer is a CPU-sized
            deviation from the paper.
        head_units: units of each of the two hidden dense layers (original: 4096; fewer is a
            CPU-sized deviation).
        dropout: rate of the dropout after each hidden dense layer (TRI-AL's code: 0.4).
        preprocessing: what the VGG16s see of each tile: "raw", ``255 x`` as RGB, what the original
            code fed (so its converted weights give its outputs, ``common.convert.tri_cnn``), or
            "imagenet", ``keras.applications.vgg16.preprocess_input(255 x)`` (BGR, ImageNet mean
            subtracted), for training from ImageNet VGG16 weights as they were trained.
        width: deprecated, goes in the next release: the multiplier of every VGG16 width this took
            before, ``base_filters = 64 x width`` (a DeprecationWarning says which). Files saved
            with it still load.

    Inputs ``tile_2_5x``, ``tile_10x``, ``tile_40x``: float32 RGB in [0, 1],
    shape (batch, tile_size, tile_size, 3). Output ``probabilities``: (batch, num_classes).
    A ``common.nn.built.BuiltModel``: its file records "tri_cnn" and these arguments.

    Example:

    >>> model = build_model(tile_size=32, base_filters=4, head_units=32)
    >>> [tuple(t.shape) for t in model.inputs], model.output_shape
    ([(None, 32, 32, 3), (None, 32, 32, 3), (None, 32, 32, 3)], (None, 5))
    >>> model.get_layer("features").output.shape[-1]  # 3 x 8 x base_filters pooled features
    96
    """
    if width is not None:
        base_filters = _renamed_width(width, base_filters)
    _check(num_classes, tile_size, base_filters, backbone_weights, head_units, dropout, preprocessing)
    inputs = [keras.Input((tile_size, tile_size, 3), name=name) for name in INPUT_NAMES]
    features = []
    for name, tile in zip(INPUT_NAMES, inputs):
        suffix = name.removeprefix("tile_")
        x = VGG16Preprocess(preprocessing, name=f"preprocess_{suffix}")(tile)
        x = backbone(tile_size, base_filters, f"vgg16_{suffix}", backbone_weights)(x)
        features.append(layers.GlobalAveragePooling2D(name=f"pool_{suffix}")(x))  # VGG16(pooling="avg")
    x = layers.Concatenate(name="features")(features)
    for index in (1, 2):
        x = layers.Dense(head_units, activation="relu", name=f"head_dense{index}")(x)
        x = layers.Dropout(dropout, name=f"head_dropout{index}")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    # backbone_weights recorded as None: the weights travel in the model's own file, so rebuilding it needs
    # no VGG16 weights file (the one it started from may be gone, or on another machine).
    arguments = dict(num_classes=num_classes, tile_size=tile_size, backbone_weights=None, base_filters=base_filters,
                     head_units=head_units, dropout=float(dropout), preprocessing=preprocessing)
    return BuiltModel("tri_cnn", arguments, inputs=inputs, outputs=outputs, name="tri_cnn")


register_builder("tri_cnn", build_model)
