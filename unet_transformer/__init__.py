"""U-Transformer (Petit et al., MLMI 2021): U-Net with self- and cross-attention.

Public API: ``build_model``. Imports keras only, so it also runs under Keras'
JAX backend.
"""

from unet_transformer.model import STRIDE, VARIANTS, build_model

__all__ = ["STRIDE", "VARIANTS", "build_model"]
