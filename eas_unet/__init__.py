"""EAS U-Net (Wang et al., 2024): ECA-attention and separable convolutions for liver segmentation.

Public API: ``build_model`` and the custom layers. Imports keras and the
keras-only ``common.nn`` only, so it also runs under Keras' JAX backend.
"""

from eas_unet.layers import ECA, EASPyramid, SeparableConvBNHSwish
from eas_unet.model import STRIDE, build_model

__all__ = [
    "ECA",
    "STRIDE",
    "EASPyramid",
    "SeparableConvBNHSwish",
    "build_model",
]
