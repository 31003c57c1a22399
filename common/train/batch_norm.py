"""Training-mode batch norm with TensorFlow's fused kernel: a speed default, same results."""

from __future__ import annotations

import keras
import tensorflow as tf


class _FusedBatchNormCall:
    """One BatchNormalization layer's ``call``, with TensorFlow's fused kernel for batch statistics.

    Keras 3 computes training-mode batch norm from separate moment, subtract,
    scale and shift ops, and their gradients op by op; ``FusedBatchNormV3``
    does each direction in one kernel. Same results: the moving statistics
    take the biased batch variance as Keras' own layer does. Anything else
    (inference, masks, renorm, synchronized replicas, other ranks or axes)
    goes to Keras' ``call``.
    """

    def __init__(self, layer: keras.layers.BatchNormalization):
        self.layer = layer
        self.keras_call = layer.call

    def _fusable(self, inputs, training, mask) -> bool:
        layer = self.layer
        return (training is True and layer.trainable and mask is None and len(inputs.shape) == 4
                and layer.axis in (-1, 3) and layer.center and layer.scale
                and not layer.renorm and not layer.synchronized)

    def __call__(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return self.keras_call(inputs, training=training, mask=mask)
        layer = self.layer
        x = tf.cast(inputs, tf.float32)  # as Keras' layer: statistics in float32 whatever the policy
        empty = tf.constant([], tf.float32)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.cast(layer.gamma, tf.float32), offset=tf.cast(layer.beta, tf.float32), mean=empty,
            variance=empty, epsilon=layer.epsilon, is_training=True, data_format="NHWC")
        count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        variance = variance * (count - 1.0) / count  # the kernel returns the unbiased variance
        momentum = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * momentum + mean * (1.0 - momentum))
        layer.moving_variance.assign(layer.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(y, layer.compute_dtype)


def fuse_batch_norm(model: keras.Model) -> int:
    """Trains every BatchNormalization layer of ``model`` (nested ones too) with TensorFlow's fused kernel.

    A speed default of ``compile_model``: on the project's CPU it trains the
    U-Net at 1.27x and the U-Transformer at 1.12x the images/s of Keras' own
    batch norm (docs/performance.md, ``speed-settings``). Only how this
    process computes the layers changes: their weights, configuration and
    saved files are Keras' own, so the model still loads on every backend.
    Call it before the first ``fit``. Returns how many layers it changed.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        if not isinstance(layer.call, _FusedBatchNormCall):
            layer.call = _FusedBatchNormCall(layer)
    return len(layers)
