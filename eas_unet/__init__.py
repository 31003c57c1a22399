"""EAS U-Net (Wang et al., 2024): ECA-attention and separable convolutions for liver segmentation.

Public API: ``build_model``, ``RECIPE`` (the paper's training setup) and the custom layers. Imports keras and the
keras-only ``common.nn`` only, so it also runs under Keras' JAX backend.

The authors trained in PyTorch 2.0 (section III.A) and published no code, so
the zoo follows PyTorch's arithmetic where Keras' defaults differ (SPEC,
"Matching the original implementation"; ``docs/fidelity.md``): BatchNorm
momentum 0.1 and epsilon 1e-5, LeakyReLU slope 0.01, bilinear upsampling with
half-pixel centres (``align_corners=False``), and PyTorch's default
initialisation, U(+-1/sqrt(fan_in)) for every kernel and bias with fan_in
counted as PyTorch does (kh * kw for a depthwise kernel, kh * kw * out for a
transposed one; ``common.nn.initializers``). Padding needs no choice: every
convolution has stride 1 and an odd kernel ("same" is symmetric, PyTorch's
``padding=dilation``), the 2x2 transposed convolutions have stride 2 and no
padding, and the poolings are 2x2 without padding.
"""

from eas_unet.layers import ECA, BilinearUpsampling2D, EASPyramid, SeparableConvBNHSwish
from eas_unet.model import STRIDE, build_model
from eas_unet.recipe import RECIPE

# What an exported model card says of the paper (common.serve.card; MONAI bundle names): its authors and reference.
PAPER = {
    "authors": "Weimin Wang, Yufeng Li, Xu Yan, Mingxuan Xiao, Min Gao",
    "references": [
        "Wang W., Li Y., Yan X., Xiao M., Gao M. Enhancing Liver Segmentation: A Deep Learning Approach with EAS "
        "Feature Extraction and Multi-Scale Fusion. IJIRCST (www.ijircst.org), 2024.",
    ],
}

__all__ = [
    "ECA",
    "PAPER",
    "RECIPE",
    "BilinearUpsampling2D",
    "STRIDE",
    "EASPyramid",
    "SeparableConvBNHSwish",
    "build_model",
]
