"""Soft Dice and cross-entropy + Dice losses for softmax segmentation heads.

Both losses take sparse integer labels, shaped like the prediction without
its class axis (or with a trailing axis of 1), and softmax probabilities with
the classes last. Dice is global over the batch: each class's overlap is
summed over the batch and spatial axes together before the ratio is taken,
so a class absent from one image does not make that image's Dice undefined.
Each call returns one scalar for the whole batch, in float32 whatever the
prediction's dtype, so the losses are safe under mixed precision.

Only `keras` is imported, so the losses run on any Keras 3 backend.

Example (``model.compile(loss=CEDiceLoss(num_classes=3))`` in training):

>>> import numpy as np
>>> labels = np.array([[[0, 1], [2, 1]]])
>>> round(float(SoftDiceLoss(3)(labels, np.eye(3, dtype="float32")[labels])), 4)
0.0
>>> round(float(CEDiceLoss(3)(labels, np.full((1, 2, 2, 3), 1 / 3, "float32"))), 3)
1.756
"""

import keras
from keras import ops


def _soft_dice_loss(y_true, y_pred, num_classes, include_background, smooth):
    """Returns 1 - mean soft Dice over classes, pooled over batch and space.

    Args:
        y_true: integer labels, y_pred's shape without its class axis or with
            a trailing axis of 1.
        y_pred: class probabilities, classes last.
        num_classes: number of classes C on the last axis of y_pred.
        include_background: whether class 0 enters the mean.
        smooth: added to numerator and denominator; makes a class absent
            from both labels and prediction score Dice 1 instead of 0/0.
    """
    y_pred = ops.cast(y_pred, "float32")
    labels = _sparse_labels(y_true, y_pred)
    one_hot = ops.one_hot(labels, num_classes, dtype="float32")
    axes = tuple(range(len(y_pred.shape) - 1))
    intersection = ops.sum(one_hot * y_pred, axis=axes)
    denominator = ops.sum(one_hot, axis=axes) + ops.sum(y_pred, axis=axes)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    if not include_background:
        dice = dice[1:]
    return 1.0 - ops.mean(dice)


def _sparse_labels(y_true, y_pred):
    """Returns y_true as int32 labels of y_pred's shape minus the class axis.

    Args:
        y_true: integer labels, possibly float-typed by `Loss.__call__`, with
            or without a trailing axis of 1.
        y_pred: class probabilities, classes last.
    """
    if len(y_true.shape) == len(y_pred.shape):
        y_true = ops.squeeze(y_true, axis=-1)
    return ops.cast(y_true, "int32")


def _check_num_classes(num_classes, include_background):
    """Raises ValueError unless Dice has at least one class to average.

    Args:
        num_classes: number of classes of the prediction.
        include_background: whether class 0 counts.
    """
    minimum = 1 if include_background else 2
    if int(num_classes) < minimum:
        raise ValueError(
            f"num_classes must be >= {minimum} with include_background="
            f"{include_background}, got num_classes={num_classes}"
        )


def _check_smooth(smooth):
    if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not smooth > 0:
        raise ValueError(f"smooth must be a positive number, got {smooth!r}")


@keras.saving.register_keras_serializable(package="common")
class SoftDiceLoss(keras.losses.Loss):
    """Soft Dice loss, 1 - mean per-class Dice pooled over the batch.

    Args:
        num_classes: number of classes C; y_pred is (batch, ..., C).
        include_background: whether class 0 enters the mean over classes.
        smooth: added to Dice's numerator and denominator.
        name: name of the loss.
        reduction: Keras reduction; the loss is already one scalar per batch,
            which every reduction leaves unchanged.

    Example:

    ```python
    import numpy as np
    labels = np.array([[[0, 1], [2, 1]]])
    SoftDiceLoss(3)(labels, np.eye(3, dtype="float32")[labels])  # ~0.0
    ```
    """

    def __init__(
        self,
        num_classes,
        include_background=False,
        smooth=1e-5,
        name="soft_dice",
        reduction="sum_over_batch_size",
    ):
        super().__init__(name=name, reduction=reduction)
        _check_num_classes(num_classes, include_background)
        _check_smooth(smooth)
        self.num_classes = int(num_classes)
        self.include_background = bool(include_background)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        return _soft_dice_loss(
            y_true, y_pred, self.num_classes, self.include_background, self.smooth
        )

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "include_background": self.include_background,
            "smooth": self.smooth,
            "name": self.name,
            "reduction": self.reduction,
        }


@keras.saving.register_keras_serializable(package="common")
class CEDiceLoss(keras.losses.Loss):
    """Sparse categorical cross-entropy plus weighted soft Dice loss.

    Args:
        num_classes: number of classes C; y_pred is (batch, ..., C).
        dice_weight: factor of the Dice term; cross-entropy has weight 1.
        include_background: whether class 0 enters the Dice mean.
        smooth: added to Dice's numerator and denominator.
        name: name of the loss.
        reduction: Keras reduction; the loss is already one scalar per batch.

    Example:

    ```python
    import numpy as np
    labels = np.array([[[0, 1], [2, 1]]])
    CEDiceLoss(3)(labels, np.full((1, 2, 2, 3), 1 / 3, "float32"))  # ~1.756
    ```
    """

    def __init__(
        self,
        num_classes,
        dice_weight=1.0,
        include_background=False,
        smooth=1e-5,
        name="ce_dice",
        reduction="sum_over_batch_size",
    ):
        super().__init__(name=name, reduction=reduction)
        _check_num_classes(num_classes, include_background)
        if not float(dice_weight) >= 0:
            raise ValueError(f"dice_weight must be >= 0, got {dice_weight!r}")
        _check_smooth(smooth)
        self.num_classes = int(num_classes)
        self.dice_weight = float(dice_weight)
        self.include_background = bool(include_background)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        labels = _sparse_labels(y_true, y_pred)
        cross_entropy = ops.mean(
            ops.sparse_categorical_crossentropy(labels, y_pred, from_logits=False)
        )
        dice = _soft_dice_loss(
            labels, y_pred, self.num_classes, self.include_background, self.smooth
        )
        return cross_entropy + self.dice_weight * dice

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "dice_weight": self.dice_weight,
            "include_background": self.include_background,
            "smooth": self.smooth,
            "name": self.name,
            "reduction": self.reduction,
        }
