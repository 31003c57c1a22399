"""Fused batch norm computes what Keras batch norm computes."""

import keras
import numpy as np
import pytest

import unet_transformer
from common.train import batch_norm


def _bn_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.BatchNormalization(momentum=0.9)(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_fused_batch_norm_trains_exactly_like_keras(precision):
    import tensorflow as tf

    keras.config.set_dtype_policy(precision)
    try:
        plain, fused = _bn_model(), _bn_model()
    finally:
        keras.config.set_dtype_policy("float32")
    fused.set_weights(plain.get_weights())
    config = fused.get_config()
    assert batch_norm.fuse_batch_norm(fused) == 1
    assert fused.get_config() == config  # nothing of the saved model changes
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 6, 5, 3)).astype("float32")
    results = []
    for model in (plain, fused):
        with tf.GradientTape() as tape:
            y = tf.cast(model(x, training=True), tf.float32)
            loss = tf.reduce_mean(y**2)
        grads = tape.gradient(loss, model.trainable_variables)
        results.append((y.numpy(), [g.numpy() for g in grads], [w.numpy() for w in model.layers[1].weights],
                        model(x, training=False).numpy()))
    tolerance = 1e-5 if precision == "float32" else 1e-2
    (y_a, g_a, w_a, inf_a), (y_b, g_b, w_b, inf_b) = results
    np.testing.assert_allclose(y_b, y_a, rtol=tolerance, atol=tolerance)
    for a, b in zip(g_a, g_b):
        np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance)
    for a, b in zip(w_a, w_b):  # gamma, beta and the moving mean and (biased) variance
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert not np.allclose(w_b[3], 1.0)  # the moving variance did move
    np.testing.assert_allclose(inf_b, inf_a, rtol=tolerance, atol=tolerance)


def test_fused_batch_norm_reaches_nested_layers_and_leaves_synchronized_ones_to_keras():
    model = unet_transformer.build_model("u_transformer", input_shape=(32, 32, 1), num_classes=2, base_filters=4,
                                         heads=2)
    bns = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norm.fuse_batch_norm(model) == len(bns) > 18  # 18 backbone + 3 in each MHCA
    assert all(isinstance(layer.call, batch_norm._FusedBatchNormCall) for layer in bns)
    layer = bns[0]
    layer.synchronized = True
    assert not layer.call._fusable(np.zeros((1, 4, 4, 4), "float32"), True, None)
