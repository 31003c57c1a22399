"""Keypoints from heatmaps: eq. 5's argmax, a quarter-pixel refinement, and the way back to the image.

Coordinates are (x, y) with pixel centres at integers. A heatmap pixel u of
a model with output stride s covers input pixels ``s u .. s u + s - 1``, so
its centre is the input coordinate ``s (u + 0.5) - 0.5``.
"""

from __future__ import annotations

from keras import ops

from acnn_pose.model import OUTPUT_STRIDE


def _quarter_offset(flat, index, coordinate, size: int, step):
    """+-0.25 toward the higher of the two neighbours along one axis; 0 on the border or a tie."""
    inside = ops.logical_and(coordinate > 0, coordinate < size - 1)
    after = ops.take_along_axis(flat, ops.expand_dims(ops.where(inside, index + step, index), -1), axis=-1)[..., 0]
    before = ops.take_along_axis(flat, ops.expand_dims(ops.where(inside, index - step, index), -1), axis=-1)[..., 0]
    return ops.where(inside, 0.25 * ops.sign(after - before), 0.0)


def decode_heatmaps(heatmaps):
    """Each joint's location on its heatmap (eq. 5) refined by a quarter pixel.

    Args:
        heatmaps: (B, H, W, K) with static H and W, any float dtype.

    Returns:
        ``(coords, scores)``: (B, K, 2) float32 heatmap coordinates (x, y) and
        (B, K) float32 peak values.

    Example:
    >>> import numpy as np
    >>> h = np.zeros((1, 8, 8, 1), "float32"); h[0, 3, 5, 0] = 1.0; h[0, 3, 6, 0] = 0.5
    >>> coords, scores = decode_heatmaps(h)
    >>> np.asarray(coords)[0, 0].tolist(), float(np.asarray(scores)[0, 0])
    ([5.25, 3.0], 1.0)
    """
    heatmaps = ops.cast(heatmaps, "float32")
    height, width, joints = heatmaps.shape[1], heatmaps.shape[2], heatmaps.shape[3]
    if height is None or width is None:
        height, width = ops.shape(heatmaps)[1], ops.shape(heatmaps)[2]
    flat = ops.reshape(ops.transpose(heatmaps, (0, 3, 1, 2)), (-1, joints, height * width))
    index = ops.cast(ops.argmax(flat, axis=-1), "int32")
    scores = ops.max(flat, axis=-1)
    x, y = index % width, index // width
    dx = _quarter_offset(flat, index, x, width, 1)
    dy = _quarter_offset(flat, index, y, height, width)
    coords = ops.stack([ops.cast(x, "float32") + dx, ops.cast(y, "float32") + dy], axis=-1)
    return coords, scores


def heatmap_to_input(coords, stride: int = OUTPUT_STRIDE):
    """Heatmap coordinates to the model input's pixel coordinates: ``s (u + 0.5) - 0.5``."""
    return stride * (coords + 0.5) - 0.5


def serving_outputs(num_stacks: int, stride: int = OUTPUT_STRIDE):
    """The ``outputs`` callable for ``common.serve.export``: the last prediction and its keypoints.

    Returns a function of the model's output list giving ``heatmaps`` (the
    last P), ``keypoints`` (B, K, 2) in input-image pixels (x, y) and
    ``scores`` (B, K), all float32.
    """
    def outputs(result):
        heatmaps = result[num_stacks - 1] if isinstance(result, (list, tuple)) else result
        coords, scores = decode_heatmaps(heatmaps)
        return {"heatmaps": heatmaps, "keypoints": heatmap_to_input(coords, stride), "scores": scores}

    return outputs
