"""EAS U-Net (Wang et al., 2024): separable U-Net with ECA-ASPP and multi-scale output fusion.

The paper changes the U-Net of its Fig. 1 in three ways (section II.B):
every conv block becomes a pair of depthwise separable modules
(``SeparableConvBNHSwish``, Fig. 4); an ECA-ASPP pyramid (``EASPyramid``,
Fig. 5) is embedded in the encoder; and a deep-supervision module fuses the
outputs of every decoder stage (Fig. 6).

Decisions where the paper is silent:

- Depth: four 2x2 max-poolings (total stride 16) and widths
  ``base_filters * [1, 2, 4, 8, 16]``, the U-Net of the paper's Fig. 1
  (572 -> 32 after four poolings) that it modifies; 2x2 transposed-conv
  upsampling ("deconvolution", section II.A) and skip concatenation as there.
  Only the three modifications above differ from the ``unet_transformer``
  "unet" baseline of the same widths.
- The pyramid sits at the end of the encoder: after the bottleneck's pair
  of separable modules, at the bottleneck's width (section II.B: "we embed
  the EAS module into the encoding side"; DeepLabV3 places ASPP on the
  encoder's output).
- Multi-scale output fusion (Fig. 6): each of the four decoder stages emits
  1x1-conv logits, upsampled bilinearly to the input size; the four are
  concatenated (the paper prefers concatenative to additive fusion) and a
  1x1 conv fuses them into the final logits. Sides are numbered in decoding
  order: "side_1" from the deepest stage (stride 8), "side_4" from the
  full-resolution one.
- ``deep_supervision=False`` keeps the fusion and only drops the side
  outputs, so both settings have the same weights and either loads the
  other's.

Training loss (section II.C, ``Loss = CEloss + Diceloss``): cross-entropy
plus soft Dice on the fused output ("probabilities"), plus the same CE + Dice on every side output with
a smaller weight (deep supervision; 0.4 by default, our choice).
``common.train.recipe.compile_model(model, eas_unet.RECIPE, ...)`` wires it
(``zoo train DATA RUN --model eas_unet`` too): every output gets a
``CEDiceLoss``, with ``loss_weights`` 1 for "probabilities" and
``side_weight`` for each side. The paper's recipe (section III.A: SGD,
learning rate 0.01, momentum 0.9, weight decay 1e-4, batch 32, 50 epochs;
III.B: 256x256 random crops, flips, 90-degree rotations) is
``eas_unet.RECIPE``; its data side (HU window [-200, 250], slices with >= 1.5 %
liver) the "lits" data preset (``zoo prepare --preset lits``). Files saved
before the main output was named "probabilities" keep their "fused".
Exported models (``common.serve.export``) serve the main output only.
"""

from __future__ import annotations

import keras
from keras import layers

from common.nn.built import BuiltModel, register_builder
from common.nn.initializers import torch_defaults
from common.nn.ops import check_input_shape, check_positive_int, is_positive_int
from eas_unet.layers import BilinearUpsampling2D, EASPyramid, SeparableConvBNHSwish
from eas_unet.recipe import RECIPE

DEPTH = 4  # poolings; the total stride is 2**DEPTH
STRIDE = 2**DEPTH


def eas_block(x, filters: int, name: str):
    """Two depthwise separable modules, the EAS U-Net's conv block."""
    for i in (1, 2):
        x = SeparableConvBNHSwish(filters, name=f"{name}_sep{i}")(x)
    return x


def _validate(input_shape, num_classes, base_filters, deep_supervision):
    check_input_shape(input_shape, STRIDE, f"the EAS U-Net pools {DEPTH} times")  # as the U-Net baseline
    if not is_positive_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (background included), got {num_classes!r}")
    check_positive_int(base_filters, "base_filters")
    if not isinstance(deep_supervision, bool):
        raise ValueError(f"deep_supervision must be True or False, got {deep_supervision!r}")


def _logits(x, num_classes: int, name: str):
    """A 1x1 conv to class logits, initialised as PyTorch's ``Conv2d(C, num_classes, 1)``."""
    return layers.Conv2D(num_classes, 1, name=name, **torch_defaults((1, 1, x.shape[-1], num_classes)))(x)


def _softmax(logits, name):
    # float32 so mixed_float16 training stays stable and outputs are float32.
    return layers.Activation("softmax", dtype="float32", name=name)(logits)


def build_model(input_shape=(None, None, 1), num_classes: int = 2, base_filters: int = RECIPE.base_filters,
                deep_supervision: bool = True) -> keras.Model:
    """Builds the EAS U-Net.

    Args:
        input_shape: (height, width, channels); height and width may be None
            (any multiple of 16 then works) or fixed multiples of 16.
        num_classes: output classes, background included (liver: 2).
        base_filters: width of the first level; widths double per level
            (``RECIPE.base_filters``, 32: the paper gives none, see ``eas_unet.recipe``).
        deep_supervision: also output each decoder stage's prediction for
            the side losses (Fig. 6). The architecture is the same either way.

    Returns:
        A functional ``keras.Model`` (``common.nn.built.BuiltModel``: its
        file records "eas_unet" and these arguments) mapping images to
        per-pixel softmax probabilities (float32 whatever the dtype policy). Output
        "probabilities" (the fusion's; named as every segmentation model's main
        output) is the final prediction; with ``deep_supervision`` the model
        returns a list ``[probabilities, side_1, ..., side_4]``, each (batch, H, W,
        num_classes), side_1 from the deepest decoder stage.

    Example:
    >>> model = build_model(input_shape=(64, 64, 1), num_classes=3, base_filters=4)
    >>> model.output_names
    ['probabilities', 'side_1', 'side_2', 'side_3', 'side_4']
    >>> model.output_shape[0]
    (None, 64, 64, 3)
    """
    input_shape = tuple(input_shape)
    _validate(input_shape, num_classes, base_filters, deep_supervision)
    widths = [base_filters * 2**i for i in range(DEPTH + 1)]
    inputs = keras.Input(shape=input_shape, name="image")
    x, skips = inputs, []
    for level, width in enumerate(widths[:-1]):
        x = eas_block(x, width, name=f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = eas_block(x, widths[-1], name="bottleneck")
    x = EASPyramid(widths[-1], name="eas_pyramid")(x)
    sides = []
    for stage, level in enumerate(reversed(range(DEPTH)), start=1):
        # Keras' (kh, kw, out, in) kernel: PyTorch's fan_in counts the outputs, 2 * 2 * out (common.nn.initializers)
        x = layers.Conv2DTranspose(widths[level], 2, strides=2, name=f"up{level}",
                                   **torch_defaults((2, 2, widths[level], x.shape[-1])))(x)
        x = layers.Concatenate(name=f"concat{level}")([skips[level], x])
        x = eas_block(x, widths[level], name=f"dec{level}")
        logits = _logits(x, num_classes, f"side_{stage}_logits")
        sides.append(BilinearUpsampling2D(2**level, name=f"side_{stage}_upsample")(logits))
    fused = _logits(layers.Concatenate(name="side_concat")(sides), num_classes, "fusion")
    outputs = _softmax(fused, "probabilities")
    if deep_supervision:
        outputs = [outputs, *(_softmax(side, f"side_{stage}") for stage, side in enumerate(sides, start=1))]
    arguments = dict(input_shape=list(input_shape), num_classes=num_classes, base_filters=base_filters,
                     deep_supervision=deep_supervision)
    return BuiltModel("eas_unet", arguments, inputs=inputs, outputs=outputs, name="eas_unet")


register_builder("eas_unet", build_model, renamed_outputs={"fused": "probabilities"})  # "fused" until this release
