"""U-Transformer (Petit et al., MLMI 2021): U-Net with self- and cross-attention.

Public API: ``build_model`` and the custom layers (the computation behind
them is in ``unet_transformer.ops``). Imports keras, numpy and the keras-only
``common.nn`` only, so it also runs under Keras' JAX backend.
"""

from unet_transformer.layers import (
    AttentionGate,
    MultiHeadCrossAttention,
    MultiHeadSelfAttention2D,
    PositionalEncoding2D,
)
from unet_transformer.model import STRIDE, VARIANTS, build_model

__all__ = [
    "STRIDE",
    "VARIANTS",
    "AttentionGate",
    "MultiHeadCrossAttention",
    "MultiHeadSelfAttention2D",
    "PositionalEncoding2D",
    "build_model",
]
