"""U-Transformer (Petit et al., MLMI 2021) and the baselines it compares with.

Variants (section 3, Table 1): "unet", the classic 2D U-Net (Ronneberger 2015)
the paper builds on; "attention_unet", the same backbone with Attention
U-Net gates (the paper's [11]) on every skip; "mhsa", self-attention at the
bottleneck (section 2.1); "mhca", cross-attention in the skip connections
(section 2.2); "u_transformer", both (Fig. 2). The backbone has four 2x2
max-poolings, widths ``base_filters * [1, 2, 4, 8, 16]``, double 3x3 conv +
BN + ReLU blocks and 2x2 transposed-conv upsampling; at ``base_filters=64``
it has about 31M parameters (paper: "~30M"), MHSA 4.2M ("~5M"), the deepest
MHCA 2.1M ("~2.5M").

Decisions where the paper is silent:

- MHSA follows the bottleneck's conv block and replaces its output (no
  residual, see ``layers``); its width is ``16 * base_filters``.
- MHCA and the attention gates take the skip S and the decoder feature Y
  before its transposed-conv upsampling (Fig. 4's half-resolution Y); the
  gated skip is concatenated with the upsampled Y, as in Fig. 2.
- ``mhca_levels`` counts from the deepest skip (paper, "multi-level": the
  three deepest, plain concat on the top one; Table 3's single level is
  ``mhca_levels=1``, the deepest).
- ``return_attention`` on "attention_unet" returns the gates' alpha maps
  ("gate_attention_<level>"); on a model without attention it is an error.
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from common.nn.built import BuiltModel, register_builder
from common.nn.initializers import torch_defaults
from common.nn.ops import batch_norm, check_input_shape, check_positive_int, is_positive_int
from unet_transformer.layers import AttentionGate, MultiHeadCrossAttention, MultiHeadSelfAttention2D
from unet_transformer.recipe import RECIPE

VARIANTS = ("unet", "attention_unet", "mhsa", "mhca", "u_transformer")
# "keras": Keras' glorot_uniform weights and zero biases, as the U-Transformer's TensorFlow original; "torch":
# PyTorch's U(+-1/sqrt(fan_in)) for weights and biases, for the plain U-Net as the baseline of papers whose
# originals trained in PyTorch (the EAS U-Net's), so that both arms of such a comparison start alike.
INITIALIZATIONS = ("keras", "torch")
DEPTH = 4  # poolings; the total stride is 2**DEPTH
STRIDE = 2**DEPTH


def _initializers(initialization: str, kernel_shape) -> dict:
    """The ``kernel_initializer`` and ``bias_initializer`` of ``initialization`` (``INITIALIZATIONS``)."""
    return torch_defaults(kernel_shape) if initialization == "torch" else {}


def conv_block(x, filters: int, name: str, initialization: str = "keras"):
    """Two 3x3 conv + BN + ReLU (bias-free convs: BN's beta is the bias)."""
    for i in (1, 2):
        init = _initializers(initialization, (3, 3, x.shape[-1], filters))
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}", **init)(x)
        x = batch_norm(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def _token_strides(token_stride) -> list[int]:
    """None, an int, or one int per skip level (level 0 = highest resolution)."""
    if token_stride is None:
        return [1] * DEPTH
    if is_positive_int(token_stride):
        return [token_stride] * DEPTH
    per_level = isinstance(token_stride, (list, tuple)) and len(token_stride) == DEPTH
    if per_level and all(map(is_positive_int, token_stride)):
        return list(token_stride)
    raise ValueError(
        f"token_stride must be None, a positive integer or {DEPTH} positive integers (one per skip level, "
        f"level 0 the highest resolution), got {token_stride!r}"
    )


def _validate_backbone(variant, input_shape, num_classes, base_filters, initialization):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if initialization not in INITIALIZATIONS:
        raise ValueError(f"initialization must be one of {INITIALIZATIONS}, got {initialization!r}")
    if initialization == "torch" and variant != "unet":
        raise ValueError(f"initialization='torch' is for the plain U-Net (a baseline of PyTorch papers); variant "
                         f"{variant!r} follows the U-Transformer's TensorFlow original: leave initialization='keras'")
    check_input_shape(input_shape, STRIDE, f"the U-Net pools {DEPTH} times")
    if not is_positive_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
    check_positive_int(base_filters, "base_filters")


def _mhca_level_list(variant, mhca_levels) -> list[int]:
    if not (isinstance(mhca_levels, int) and not isinstance(mhca_levels, bool) and 0 <= mhca_levels <= DEPTH):
        raise ValueError(f"mhca_levels must be an integer in 0..{DEPTH}, got {mhca_levels!r}")
    return list(range(DEPTH - mhca_levels, DEPTH)) if variant in ("mhca", "u_transformer") else []


def _validate_attention(variant, widths, heads, positional_encoding, mhca_levels, return_attention):
    """Checks the attention settings; returns the skip levels that get MHCA."""
    mhca = _mhca_level_list(variant, mhca_levels)
    attention_widths = {f"MHCA at skip level {level}": widths[level] for level in mhca}
    if variant in ("mhsa", "u_transformer"):
        attention_widths["MHSA"] = widths[-1]
    if attention_widths and not is_positive_int(heads):
        raise ValueError(f"heads must be a positive integer, got {heads!r}")
    for where, width in attention_widths.items():
        if width % heads:
            raise ValueError(f"heads={heads} does not divide the attention width {width} of the {where}")
        if positional_encoding and width % 4:
            raise ValueError(
                f"positional_encoding needs channels divisible by 4, but the {where} has {width} channels "
                f"(change base_filters or set positional_encoding=False)"
            )
    if return_attention and not (attention_widths or variant == "attention_unet"):
        raise ValueError(f"return_attention=True, but variant {variant!r} with mhca_levels={mhca_levels} "
                         "has no attention maps")
    return mhca


def _named(tensor, name):
    # float32: under mixed_float16 an identity layer would otherwise cast the maps to float16.
    return layers.Identity(dtype="float32", name=name)(tensor)


def _gated_skip(variant, level, skip, y, mhca, config, maps):
    """The skip connection of one level, gated by the decoder feature ``y``."""
    heads, positional_encoding, strides, return_attention = config
    if variant == "attention_unet":
        block, map_name = AttentionGate(name=f"gate{level}"), f"gate_attention_{level}"
    elif level in mhca:
        block = MultiHeadCrossAttention(heads, positional_encoding, strides[level], name=f"mhca{level}")
        map_name = f"mhca_attention_{level}"
    else:
        return skip
    if not return_attention:
        return block([skip, y])
    skip, attention = block([skip, y], return_attention=True)
    maps.append(_named(attention, map_name))
    return skip


def build_model(variant: str = "u_transformer", input_shape=(None, None, 1), num_classes: int = 2,
                base_filters: int = RECIPE.base_filters, heads: int = 8, positional_encoding: bool = True,
                mhca_levels: int = 3, token_stride=None, return_attention: bool = False,
                initialization: str = "keras") -> keras.Model:
    """Builds a segmentation network of the U-Transformer family.

    Args:
        variant: one of ``VARIANTS``: "unet", "attention_unet", "mhsa",
            "mhca" or "u_transformer" (MHSA + MHCA, the paper's model).
        input_shape: (height, width, channels); height and width may be None
            (any multiple of 16 then works) or fixed multiples of 16.
        num_classes: output classes, background included.
        base_filters: width of the first level (``RECIPE.base_filters``, 64:
            the U-Net's, which the paper builds on).
        heads: attention heads of MHSA and MHCA (paper: 8); must divide
            every attention width.
        positional_encoding: add the 2D sinusoidal encoding in MHSA and MHCA
            (Table 3 ablation); attention widths must then be multiples of 4.
        mhca_levels: how many skip connections, deepest first, get MHCA
            (0..4; paper: 3, plain concat on the top one).
        token_stride: MHCA token pooling: None (none), an int for every
            level, or 4 ints, level 0 the highest resolution. Bounds the
            (H*W)^2 attention memory at high-resolution levels.
        return_attention: also output the attention maps, named
            "mhsa_attention", "mhca_attention_<level>" (or, for
            "attention_unet", "gate_attention_<level>"), float32.
        initialization: "keras" (glorot_uniform weights, zero biases: the
            U-Transformer's TensorFlow original) or, for the plain U-Net only,
            "torch" (PyTorch's U(+-1/sqrt(fan_in)) weights and biases: the
            baseline of a paper whose original trained in PyTorch).

    Returns:
        A functional ``keras.Model`` (``common.nn.built.BuiltModel``: its
        file records ``variant`` and the other arguments) mapping images to
        per-pixel softmax probabilities (float32 whatever the dtype policy),
        output "probabilities"; with ``return_attention`` a list,
        probabilities first.

    Example:
    >>> model = build_model("u_transformer", input_shape=(64, 64, 1), num_classes=3, base_filters=4, heads=4)
    >>> model.output_shape
    (None, 64, 64, 3)
    """
    input_shape = tuple(input_shape)
    _validate_backbone(variant, input_shape, num_classes, base_filters, initialization)
    widths = [base_filters * 2**i for i in range(DEPTH + 1)]
    mhca = _validate_attention(variant, widths, heads, positional_encoding, mhca_levels, return_attention)
    config = (heads, positional_encoding, _token_strides(token_stride), return_attention)
    inputs = keras.Input(shape=input_shape, name="image")
    x, skips, maps = inputs, [], []
    for level, width in enumerate(widths[:-1]):
        x = conv_block(x, width, name=f"enc{level}", initialization=initialization)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = conv_block(x, widths[-1], name="bottleneck", initialization=initialization)
    if variant in ("mhsa", "u_transformer"):
        mhsa = MultiHeadSelfAttention2D(heads, positional_encoding, name="mhsa")
        if return_attention:
            x, attention = mhsa(x, return_attention=True)
            maps.append(_named(attention, "mhsa_attention"))
        else:
            x = mhsa(x)
    for level in reversed(range(DEPTH)):
        skip = _gated_skip(variant, level, skips[level], x, mhca, config, maps)
        init = _initializers(initialization, (2, 2, widths[level], x.shape[-1]))
        x = layers.Conv2DTranspose(widths[level], 2, strides=2, name=f"up{level}", **init)(x)
        x = layers.Concatenate(name=f"concat{level}")([skip, x])
        x = conv_block(x, widths[level], name=f"dec{level}", initialization=initialization)
    init = _initializers(initialization, (1, 1, x.shape[-1], num_classes))
    logits = layers.Conv2D(num_classes, 1, name="logits", **init)(x)
    # Softmax in float32 so mixed_float16 training stays stable and outputs are float32.
    probabilities = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    arguments = dict(input_shape=list(input_shape), num_classes=num_classes, base_filters=base_filters, heads=heads,
                     positional_encoding=positional_encoding, mhca_levels=mhca_levels,
                     token_stride=list(token_stride) if isinstance(token_stride, tuple) else token_stride,
                     return_attention=return_attention, initialization=initialization)
    return BuiltModel(variant, arguments, inputs=inputs, name=variant,
                      outputs=[probabilities, *maps] if return_attention else probabilities)


for _variant in VARIANTS:  # the registry's names: a saved variant rebuilds as itself
    register_builder(_variant, functools.partial(build_model, _variant))
