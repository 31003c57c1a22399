"""How the zoo compiles a segmentation model: precision, optimizer, loss, metrics, steps per execution. Keras-only.

What to compile with is a paper's ``Recipe`` (``common.nn.recipe``), declared beside its model (each
segmentation package's ``RECIPE``); ``compile_model`` here turns one into Keras' optimizer, losses and metrics.
A script trains a model as its paper did in three calls (the README shows them)::

    model = PACKAGE.build_model(num_classes=C)
    compile_model(model, PACKAGE.RECIPE, num_classes=C, steps_per_epoch=len(batches))
    model.fit(batches, epochs=PACKAGE.RECIPE.epochs)   # batches of RECIPE.batch_size crops

``zoo train`` and ``zoo cv`` (``common.train.segmentation``) compile through
``compile_model`` here, and so does ``benchmarks gpu-check`` on the lent GPU
machine, which has JAX but no TensorFlow: the settings timed on a GPU are the
ones users train with. This module imports ``keras`` and ``common.nn`` (both
keras-only), never TensorFlow itself; only ``has_gpu`` asks the backend Keras
already runs on (JAX, TensorFlow or PyTorch) for its devices.

Speed settings, by device (SPEC, "speed defaults"):

- ``steps_per_execution`` None (the default) is 1 on a CPU (no gain measured
  there, docs/performance.md) and ``GPU_STEPS_PER_EXECUTION`` on a GPU: the
  31M U-Net (256², batch 16, mixed_float16, Keras on JAX, H100) trained at
  488 images/s with 1 and 778 with 10. Per-step work on the host (callbacks
  and logs, which Keras runs once per execution) was the gap, not the
  arithmetic. Never more than an epoch's steps.
- ``jit_compile`` stays Keras' "auto": XLA on JAX; on TensorFlow, XLA where
  there is a GPU and one replica.
- The loss (every output's, in float32) and the mean IoU run inside the
  compiled step; nothing leaves the device until Keras hands the logs to the
  callbacks (see ``common.train.callbacks`` for why those never wait on it).
- Precision "auto": mixed_float16 on a GPU (SPEC), float32 otherwise, decided
  by the backend Keras runs on (JAX on a GPU with a CPU-only TensorFlow
  installed beside it still gets mixed precision).

Example:

>>> import dataclasses
>>> from common import registry
>>> name = registry.names("segmentation")[0]
>>> model = registry.build(name, num_classes=3, base_filters=2)
>>> recipe = dataclasses.replace(registry.get(name).recipe, steps_per_execution=4)
>>> compile_model(model, recipe, num_classes=3, steps_per_epoch=2)
>>> model.steps_per_execution  # no more than an epoch's steps
2
"""

from __future__ import annotations

import keras

from common.nn import losses, optimizers
from common.nn.recipe import PRECISIONS, Recipe

__all__ = ["Recipe", "compile_model", "configure_precision", "make_optimizer", "output_weights"]

LOSSES = {"ce_dice": losses.CEDiceLoss, "dice": losses.SoftDiceLoss}  # common.nn.recipe.LOSSES, by name
GPU_STEPS_PER_EXECUTION = 10  # H100, Keras on JAX: 488 images/s at 1, 778 at 10 (SPEC)


def has_gpu() -> bool:
    """Whether the backend Keras runs on sees a GPU (or TPU); never initialises TensorFlow's runtime."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "tensorflow":
        import tensorflow as tf  # already loaded: Keras runs on it

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def configure_precision(precision: str = "auto") -> str:
    """Sets Keras' global dtype policy and returns its name; call it before building the model.

    Args:
        precision: "auto" (mixed_float16 on a GPU, float32 otherwise),
            "float32", "mixed_float16" or "mixed_bfloat16".
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        precision = "mixed_float16" if has_gpu() else "float32"
    keras.config.set_dtype_policy(precision)
    return precision


def resolve_steps_per_execution(requested: int | None, steps_per_epoch: int) -> int:
    """``requested``, or 1 on a CPU and ``GPU_STEPS_PER_EXECUTION`` on a GPU; at most ``steps_per_epoch``."""
    steps = requested if requested is not None else (GPU_STEPS_PER_EXECUTION if has_gpu() else 1)
    return max(1, min(steps, steps_per_epoch))


def output_weights(model: keras.Model, side_weight: float) -> dict[str, float]:
    """The loss weight of each output: 1 for the first (the model's prediction), ``side_weight`` for each other.

    The labels supervise every output of the prediction's shape (deep supervision's side outputs); an output of
    another shape (an attention map) is for inspection and cannot be trained on them: a ValueError naming it.
    """
    names, shapes = model.output_names, [tuple(output.shape[1:]) for output in model.outputs]
    extra = [name for name, shape in zip(names[1:], shapes[1:]) if shape != shapes[0]]
    if extra:
        raise ValueError(f"model_options: outputs {extra} are for inspection, not training (their shape is not the "
                         f"prediction's {shapes[0]}; build the model without them)")
    return {names[0]: 1.0, **{name: side_weight for name in names[1:]}}


def make_optimizer(recipe: Recipe, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam, or SGD with PyTorch's update rule (momentum, coupled weight decay); the rate decays per epoch."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        recipe.learning_rate, decay_steps=max(steps_per_epoch, 1), decay_rate=recipe.lr_decay
    )
    if recipe.optimizer == "sgd":  # PyTorch's rule: the EAS U-Net paper trained in PyTorch
        return optimizers.TorchSGD(schedule, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return keras.optimizers.Adam(schedule, weight_decay=recipe.weight_decay or None)


def compile_model(model: keras.Model, recipe: Recipe, num_classes: int, steps_per_epoch: int) -> None:
    """The recipe's optimizer and loss (every supervised output), mean IoU of the main output, steps per execution.

    Set the precision (``configure_precision``) before building ``model``.
    Under mixed_float16 Keras wraps the optimizer in its dynamic loss scaling.
    """
    weights = output_weights(model, recipe.side_weight)
    main = model.output_names[0]
    model.compile(
        optimizer=make_optimizer(recipe, steps_per_epoch),
        loss={name: LOSSES[recipe.loss](num_classes=num_classes) for name in weights},
        loss_weights=weights,
        metrics={main: [keras.metrics.MeanIoU(num_classes, sparse_y_pred=False, name="mean_iou")]},
        steps_per_execution=resolve_steps_per_execution(recipe.steps_per_execution, steps_per_epoch),
    )
    optimizers.build_compiled(model)
