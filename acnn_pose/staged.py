"""Staged training (section 3.3): heatmaps first, then the masks, then both.

Stage A trains the heatmap path with every mask forced to ones and the mask
heads frozen; stage B freezes the heatmap path and trains the mask heads;
stage C trains everything. RMSprop throughout, with Torch's rule (the
paper: "Our implementation follows [15] using Torch"; ``TorchRMSprop``), the
learning rate divided by 10 at fixed epochs (``STAGES``). ``scaled_stages(factor)`` shortens every
stage (and its drops) by one factor for short runs.

A run folder gets ``stage_<X>.weights.h5`` after each finished stage and
``backup/stage_<X>/`` (Keras ``BackupAndRestore``, written atomically) during
one, so rerunning the same call resumes: finished stages are loaded, not
retrained, and an interrupted one continues from its last epoch;
``history_<X>.csv`` never holds an epoch twice (``zoo train-pose`` also
writes TensorBoard's ``logs/stage_<X>/``, through ``logs``). A NaN or
infinite loss ends training with ``NonFiniteLoss`` naming the stage, nothing
of its epoch saved (``common.nn.callbacks``). Progress lines go to this
module's logger.

``train_staged`` is ``model.fit`` per stage plus that resume state and those logs. Trained by hand as the paper
did, each stage of ``STAGES`` in turn (A, B, C): ``configure_stage`` the model, compile its ``training_model``
(P_1..P_S stacked) with ``stage.optimizer()`` and eq. 3's ``stacked_mse``, and fit ``stage.epochs`` epochs on
batches of ``RECIPE.batch_size`` crops, the rate following ``stage.learning_rate_at``. Stage A, one step:

>>> import keras, numpy as np
>>> from acnn_pose import build_model
>>> model = build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=8)
>>> trainer = training_model(model)
>>> trainer.output_shape  # (batch, stages, H/4, W/4, joints)
(None, 2, 16, 16, 16)
>>> stage = STAGES[0]
>>> configure_stage(model, stage)  # stage A: masks forced to ones, mask heads frozen
>>> trainer.compile(optimizer=stage.optimizer(), loss=stacked_mse, run_eagerly=True)  # eagerly: tiny, fast
>>> schedule = keras.callbacks.LearningRateScheduler(stage.learning_rate_at)
>>> images, heatmaps = np.zeros((1, 64, 64, 3), "float32"), np.zeros((1, 16, 16, 16), "float32")
>>> history = trainer.fit(images, heatmaps, epochs=1, callbacks=[schedule], verbose=0)  # the paper: stage.epochs
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib

import keras
from keras import ops

from acnn_pose.layers import AttentionMaskGate
from common import atomic  # stdlib only: this module stays keras-only
from common.nn import callbacks as nn_callbacks
from common.nn.optimizers import TorchRMSprop, build_compiled

logger = logging.getLogger(__name__)

TRAINS = ("heatmaps", "masks", "all")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage: what it trains (one of ``TRAINS``), RMSprop's rate, epochs, and the epochs where it drops x0.1."""

    name: str
    trains: str
    learning_rate: float
    epochs: int
    drops: tuple[int, ...]

    def learning_rate_at(self, epoch: int) -> float:
        return self.learning_rate * 0.1 ** sum(epoch >= drop for drop in self.drops)

    def optimizer(self) -> TorchRMSprop:
        """The stage's RMSprop as the paper's Torch code runs it: Torch7's optim.rmsprop (alpha 0.99, eps 1e-8 outside
        the root), as Newell's and ACNN's code; Keras' RMSprop puts eps inside and took ~100x smaller steps here
        (measurements/acnn-rmsprop-epsilon.md)."""
        return TorchRMSprop(self.learning_rate, rho=0.99, epsilon=1e-8)


# Section 3.3: A 200 epochs at 5e-4, B 200 at 2.5e-4 (drops at 120 and 170), C 100 at 2.5e-4 (drops at 50, 70).
STAGES = (
    Stage("A", "heatmaps", 5e-4, 200, (120, 170)),
    Stage("B", "masks", 2.5e-4, 200, (120, 170)),
    Stage("C", "all", 2.5e-4, 100, (50, 70)),
)


def scaled_stages(factor: float = 1.0, attention: bool = True) -> list[Stage]:
    """The paper's stages with epochs and drop epochs multiplied by ``factor`` (at least one epoch each).

    Without attention there are no masks to train: stage B is left out.
    """
    if not factor > 0:
        raise ValueError(f"stage factor must be > 0, got {factor!r}")
    stages = []
    for stage in STAGES:
        if stage.trains == "masks" and not attention:
            continue
        epochs = max(1, round(stage.epochs * factor))
        drops = tuple(sorted({max(1, round(d * factor)) for d in stage.drops} - {epochs}))
        stages.append(dataclasses.replace(stage, epochs=epochs, drops=tuple(d for d in drops if d < epochs)))
    return stages


def is_mask_layer(layer) -> bool:
    """The mask heads f_c (eq. 2), named ``mask_<stage>_*`` by ``build_model``."""
    return layer.name.startswith("mask_")


def configure_stage(model: keras.Model, stage: Stage) -> None:
    """Freezes what ``stage`` does not train (``trainable``) and forces the masks to ones in stage A."""
    if stage.trains not in TRAINS:
        raise ValueError(f"stage {stage.name}: trains must be one of {TRAINS}, got {stage.trains!r}")
    for layer in model.layers:
        if isinstance(layer, AttentionMaskGate):
            layer.force_ones = stage.trains == "heatmaps"
        elif is_mask_layer(layer):
            layer.trainable = stage.trains in ("masks", "all")
        else:
            layer.trainable = stage.trains in ("heatmaps", "all")


def stacked_mse(y_true, y_pred):
    """Eq. 3 for every stage, summed: y_pred (B, S, H, W, K) against y_true (B, H, W, K)."""
    y_true = ops.expand_dims(ops.cast(y_true, "float32"), 1)
    return ops.sum(ops.mean(ops.square(ops.cast(y_pred, "float32") - y_true), axis=(2, 3, 4)), axis=1)


def training_model(model: keras.Model) -> keras.Model:
    """The predictions P_1..P_S of ``model`` stacked on axis 1, sharing its layers (for ``stacked_mse``)."""
    predictions = [t for t, name in zip(model.outputs, model.output_names) if name.startswith("prediction_")]
    if not predictions:
        raise ValueError(f"model {model.name!r} has no prediction_<i> outputs (build it with acnn_pose.build_model)")
    return keras.Model(model.inputs, ops.stack(predictions, axis=1), name=f"{model.name}_training")


def history_csv(out, stage: Stage) -> list[keras.callbacks.Callback]:
    """``train_staged``'s default logs: ``out/history_<X>.csv``, one row per epoch, never an epoch twice."""
    return [nn_callbacks.EpochHistory(pathlib.Path(out) / f"history_{stage.name}.csv", atomic.atomic_path)]


def train_staged(model: keras.Model, dataset, out, stages=STAGES, steps_per_epoch: int | None = None,
                 callbacks=(), verbose: int = 2, run_eagerly: bool = False, validation=None,
                 logs=None) -> keras.Model:
    """Trains ``model`` through ``stages`` in order; rerunning with the same ``out`` resumes.

    Args:
        model: from ``build_model``.
        dataset: yields (images, target heatmaps) batches, repeating when
            ``steps_per_epoch`` is given (e.g. ``common.pose.data.pose_dataset``).
        out: run folder for per-stage weights, backups and ``history_<X>.csv``.
        stages: ``STAGES`` or ``scaled_stages(factor)``.
        steps_per_epoch: batches per epoch.
        callbacks: more Keras callbacks, added to every stage.
        run_eagerly: skip graph tracing (tiny models and tests: tracing the
            hourglass costs more than a few eager steps).
        validation: finite (images, heatmaps) batches without augmentation;
            each stage then logs their stacked loss before its first step
            (the point it starts from: stage B's masks learn most in their
            first steps) and ``history_<X>.csv`` gets ``val_loss`` per epoch.
        logs: ``stage -> callbacks`` writing the stage's logs once per epoch, run before its backup (``zoo
            train-pose``: ``common.train.callbacks.logging_callbacks``, CSV and TensorBoard); default
            ``history_<X>.csv`` only (``history_csv``).

    Returns:
        ``model``, trained (and configured as the last stage left it).
    """
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = training_model(model)
    logs = logs or functools.partial(history_csv, out)
    for stage in stages:
        done = out / f"stage_{stage.name}.weights.h5"
        configure_stage(model, stage)
        backup = nn_callbacks.BackupAndRestore(out / "backup" / f"stage_{stage.name}", atomic.atomic_path)
        if done.exists():
            logger.info(f"stage {stage.name}: already trained, loading {done}")
            model.load_weights(done)
            configure_stage(model, stage)
            backup.discard()  # left by a kill between the stage's weights and this removal
            continue
        logger.info(f"stage {stage.name}: trains {stage.trains}, {stage.epochs} epochs, RMSprop "
                    f"{stage.learning_rate:g}, x0.1 at {list(stage.drops)}; "
                    f"{sum(int(ops.size(w)) for w in model.trainable_weights):,} trainable parameters")
        trainer.compile(optimizer=stage.optimizer(), loss=stacked_mse, run_eagerly=run_eagerly)
        build_compiled(trainer)  # after configure_stage: the stage's trainable weights only
        stage_callbacks = [
            nn_callbacks.StopOnNonFiniteLoss(f"{out}: stage {stage.name}"),
            keras.callbacks.LearningRateScheduler(stage.learning_rate_at),
            *logs(stage),
            backup,  # after the logs: an epoch counts as done for a rerun once its row is written
            *callbacks,
        ]
        if validation is not None and not pathlib.Path(backup.backup_dir).exists():  # not resuming
            logger.info(f"stage {stage.name}: validation loss {trainer.evaluate(validation, verbose=0):.6f} "
                        "before training")
        trainer.fit(dataset, epochs=stage.epochs, steps_per_epoch=steps_per_epoch, callbacks=stage_callbacks,
                    validation_data=validation, verbose=verbose, shuffle=False)  # the dataset shuffles itself
        atomic.save_weights(model, done)
        backup.discard()  # only now: a failed save of the stage's weights resumes from its last epoch
    return model
