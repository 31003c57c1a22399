"""Where a U-Transformer looks: cross-attention maps for one pixel (paper Fig. 1b and Fig. 6).

For a chosen pixel of a slice, each MHCA level's attention row of the query
token holding that pixel is averaged over heads, reshaped to the key grid,
resized to the slice and drawn over the CT, one panel per level, the pixel
marked. Works on any trained model with MHCA blocks: the blocks are called
again on their own inputs with ``return_attention=True``.
"""

from __future__ import annotations

import math

import cv2
import keras
import numpy as np

from common import atomic


def mhca_layers(model: keras.Model) -> list:
    """The model's MultiHeadCrossAttention layers, deepest level first."""
    from unet_transformer import MultiHeadCrossAttention

    found = [layer for layer in model.layers if isinstance(layer, MultiHeadCrossAttention)]
    if not found:
        raise ValueError(f"model {model.name!r} has no MultiHeadCrossAttention block (variant mhca or u_transformer)")
    return sorted(found, key=lambda layer: layer.name, reverse=True)


def attention_of(model: keras.Model, images: np.ndarray) -> list[np.ndarray]:
    """Every MHCA block's attention (B, heads, Nq, Nk) on ``images``, deepest block first.

    The blocks' inputs come from a sub-model of the trained graph; each block is
    then called on them with ``return_attention=True`` (same weights).
    """
    layers = mhca_layers(model)
    inputs_model = keras.Model(model.input, [tensor for layer in layers for tensor in layer.input])
    features = inputs_model(images)
    return [np.asarray(layer([features[2 * i], features[2 * i + 1]], return_attention=True)[1])
            for i, layer in enumerate(layers)]


def cross_attention_maps(model: keras.Model, image: np.ndarray, pixel: tuple[int, int]) -> dict[str, np.ndarray]:
    """Attention of the query token at ``pixel`` over the keys, per MHCA block, at the slice's size.

    Args:
        model: a trained model with MHCA blocks.
        image: (H, W) windowed slice; H and W multiples of the model's stride.
        pixel: (row, column) in the slice.

    Returns:
        {block name: (H, W) float32 map, summing to ~1 over the key grid before resizing}.
    """
    height, width = image.shape
    row, col = pixel
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"pixel: {pixel} is outside the {height}x{width} slice")
    maps = {}
    attentions = attention_of(model, image[None, :, :, None].astype(np.float32))
    for layer, attention in zip(mhca_layers(model), attentions):
        attention = attention[0].mean(axis=0)  # over heads: (Nq, Nk)
        factor = math.sqrt(height * width / attention.shape[0])  # pixels per token side
        grid_h, grid_w = round(height / factor), round(width / factor)
        query = int(row // factor) * grid_w + int(col // factor)
        key_map = attention[query].reshape(grid_h, grid_w).astype(np.float32)
        maps[layer.name] = cv2.resize(key_map, (width, height), interpolation=cv2.INTER_LINEAR)
    return maps


def render(path, image: np.ndarray, maps: dict[str, np.ndarray], pixel: tuple[int, int], scale: int = 2) -> None:
    """Writes one panel per block: the map as a heat overlay on the CT, the pixel as a cross."""
    gray = cv2.cvtColor((np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    panels = []
    for name, attention in maps.items():
        normalised = (255 * (attention - attention.min()) / (np.ptp(attention) + 1e-12)).astype(np.uint8)
        panel = cv2.addWeighted(gray, 0.5, cv2.applyColorMap(normalised, cv2.COLORMAP_JET), 0.5, 0)
        panel = cv2.resize(panel, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        centre = (pixel[1] * scale, pixel[0] * scale)
        cv2.drawMarker(panel, centre, (255, 255, 255), cv2.MARKER_CROSS, 6 * scale, 2)
        cv2.putText(panel, name, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        panels.append(panel)
    atomic.write_image(path, np.concatenate(panels, axis=1))
