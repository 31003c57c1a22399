"""Tests of common.nn.losses: values against NumPy, training, serialization, dtype."""

import keras
import numpy as np
import pytest

from common.nn.losses import CEDiceLoss, SoftDiceLoss
from tests import helpers

NUM_CLASSES = 3


def _labels(seed=0, shape=(2, 8, 8)):
    """Returns random labels in which every class occurs."""
    labels = np.random.default_rng(seed).integers(0, NUM_CLASSES, shape)
    labels[0, 0, :NUM_CLASSES] = np.arange(NUM_CLASSES)
    return labels


def _random_probabilities(seed=1, shape=(2, 8, 8, NUM_CLASSES)):
    logits = np.random.default_rng(seed).normal(size=shape)
    exp = np.exp(logits)
    return (exp / exp.sum(-1, keepdims=True)).astype("float32")


def _numpy_dice_loss(labels, probs, include_background, smooth=1e-5):
    one_hot = np.eye(probs.shape[-1])[labels]
    axes = tuple(range(probs.ndim - 1))
    intersection = (one_hot * probs).sum(axes)
    dice = (2 * intersection + smooth) / (one_hot.sum(axes) + probs.sum(axes) + smooth)
    return 1 - (dice if include_background else dice[1:]).mean()


def _numpy_cross_entropy(labels, probs):
    picked = np.take_along_axis(probs, labels[..., None], axis=-1)
    return -np.log(picked).mean()


@pytest.mark.parametrize("trailing_axis", [False, True])
def test_perfect_prediction_has_zero_dice_loss(trailing_axis):
    labels = _labels()
    probs = np.eye(NUM_CLASSES, dtype="float32")[labels]
    y_true = labels[..., None] if trailing_axis else labels
    loss = SoftDiceLoss(NUM_CLASSES)(y_true, probs)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_fully_wrong_prediction_has_dice_loss_one():
    labels = _labels()
    wrong = np.eye(NUM_CLASSES, dtype="float32")[(labels + 1) % NUM_CLASSES]
    loss = SoftDiceLoss(NUM_CLASSES, include_background=True)(labels, wrong)
    assert float(loss) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("include_background", [False, True])
def test_dice_loss_matches_numpy(include_background):
    labels, probs = _labels(), _random_probabilities()
    loss = SoftDiceLoss(NUM_CLASSES, include_background=include_background)
    expected = _numpy_dice_loss(labels, probs, include_background)
    assert float(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)


def test_ce_dice_loss_matches_numpy():
    labels, probs = _labels(), _random_probabilities()
    loss = CEDiceLoss(NUM_CLASSES, dice_weight=0.5)
    expected = _numpy_cross_entropy(labels, probs) + 0.5 * _numpy_dice_loss(
        labels, probs, include_background=False
    )
    assert float(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "loss", [SoftDiceLoss(NUM_CLASSES), CEDiceLoss(NUM_CLASSES)], ids=lambda loss: loss.name
)
def test_loss_trains_a_tiny_model_for_one_step(loss):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(NUM_CLASSES, 1, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    images = np.random.default_rng(2).normal(size=(4, 8, 8, 1)).astype("float32")
    labels = _labels(shape=(4, 8, 8))
    kernel_before = model.layers[0].kernel.numpy().copy()
    history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(model.layers[0].kernel.numpy(), kernel_before)


@pytest.mark.parametrize(
    "loss",
    [SoftDiceLoss(4, include_background=True, smooth=0.5, name="d"),
     CEDiceLoss(4, dice_weight=2.0, include_background=True, name="c")],
    ids=lambda loss: loss.name,
)
def test_get_config_round_trips(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    labels, probs = _labels(shape=(1, 4, 4)), _random_probabilities(shape=(1, 4, 4, 4))
    assert float(restored(labels, probs)) == pytest.approx(float(loss(labels, probs)))


@pytest.mark.parametrize("loss_class", [SoftDiceLoss, CEDiceLoss])
def test_float16_prediction_gives_finite_float32_loss(loss_class):
    labels, probs = _labels(), _random_probabilities()
    loss = loss_class(NUM_CLASSES)
    value = loss.call(keras.ops.convert_to_tensor(labels),
                      keras.ops.convert_to_tensor(probs.astype("float16")))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert np.isfinite(float(value))
    assert float(value) == pytest.approx(float(loss(labels, probs)), rel=1e-3)


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 1}, {"num_classes": 0, "include_background": True}]
)
def test_too_few_classes_raise(kwargs):
    with pytest.raises(ValueError, match="num_classes"):
        SoftDiceLoss(**kwargs)


def test_mixed_float16_model_trains_with_float32_loss():
    keras.utils.set_random_seed(0)
    with helpers.dtype_policy("mixed_float16"):
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(NUM_CLASSES, 1, activation="softmax"),
        ])
    images = np.random.default_rng(2).normal(size=(4, 8, 8, 1)).astype("float32")
    labels = _labels(shape=(4, 8, 8))
    probs = model(images)
    assert keras.backend.standardize_dtype(probs.dtype) == "float16"
    value = CEDiceLoss(NUM_CLASSES)(labels, probs)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    model.compile(optimizer="sgd", loss=CEDiceLoss(NUM_CLASSES))
    history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("reduction", ["sum", "mean", None])
def test_batch_scalar_is_unchanged_by_reduction(reduction):
    labels, probs = _labels(), _random_probabilities()
    default = SoftDiceLoss(NUM_CLASSES)(labels, probs)
    other = SoftDiceLoss(NUM_CLASSES, reduction=reduction)(labels, probs)
    assert tuple(other.shape) == ()
    assert float(other) == pytest.approx(float(default))
