"""U-Transformer (Petit et al., MLMI 2021): U-Net with self- and cross-attention.

Public API: ``build_model``, ``RECIPE`` (the paper's training setup) and the custom layers (the computation behind
them is in ``unet_transformer.ops``). Imports keras, numpy and the keras-only
``common.nn`` only, so it also runs under Keras' JAX backend.

The paper trained in TensorFlow and its code is not public, so the zoo keeps
TensorFlow's arithmetic and Keras' initialisation (glorot_uniform kernels,
zero biases): its convolutions are 3x3 stride 1 "same" (symmetric), 1x1, and
2x2 stride 2 without padding (transposed upsampling, the attention gate's
theta), so no padding convention arises; bilinear upsampling uses
half-pixel centres as ``tf.image.resize``. One deliberate exception:
BatchNorm momentum 0.1 / epsilon 1e-5 (``common.nn.ops.batch_norm``) instead of
Keras' 0.99 / 1e-3, for the lag measured there. Where the paper is silent (the
positional encoding added after the Y/S convolutions, Y upsampled by a 2x2
transposed convolution before the concatenation) ``docs/fidelity.md`` says what
the zoo chose and why.
"""

from unet_transformer.layers import (
    AttentionGate,
    MultiHeadCrossAttention,
    MultiHeadSelfAttention2D,
    PositionalEncoding2D,
)
from unet_transformer.model import STRIDE, VARIANTS, build_model
from unet_transformer.recipe import RECIPE

# What an exported model card says of the paper (common.serve.card; MONAI bundle names): its authors and reference.
PAPER = {
    "authors": "Olivier Petit, Nicolas Thome, Clement Rambour, Loic Themyr, Toby Collins, Luc Soler",
    "references": [
        "Petit O., Thome N., Rambour C., Themyr L., Collins T., Soler L. U-Net Transformer: Self and Cross Attention "
        "for Medical Image Segmentation. MICCAI workshop MLMI, Strasbourg, 2021. hal-03337089, "
        "https://hal.archives-ouvertes.fr/hal-03337089",
    ],
}

__all__ = [
    "PAPER",
    "RECIPE",
    "STRIDE",
    "VARIANTS",
    "AttentionGate",
    "MultiHeadCrossAttention",
    "MultiHeadSelfAttention2D",
    "PositionalEncoding2D",
    "build_model",
]
