"""Optimizers with the update rules of the frameworks the papers trained in, as Keras optimizers.

Keras' built-in rules differ from Torch's and PyTorch's in ways that are
silent and can decide a run (SPEC, "Matching the original implementation"):

- ``TorchRMSprop``: Torch7 ``optim.rmsprop`` / ``torch.optim.RMSprop`` add
  epsilon *outside* the square root, ``lr * g / (sqrt(v) + eps)``. Keras
  adds it inside, ``lr * g / sqrt(v + eps)``, so with eps 1e-8 its
  denominator never drops below 1e-4; on ACNN's small heatmap gradients
  that made the steps ~100x smaller than Torch's
  (``/work/shared/measurements/acnn-rmsprop-epsilon.md``).
- ``TorchSGD``: PyTorch's ``weight_decay`` is L2 coupled into the gradient
  before momentum, ``g + wd * w``; Keras' ``weight_decay`` is decoupled
  (``w -= lr * wd * w``, outside the momentum), about ten times weaker with
  momentum 0.9.

Both subclass ``keras.optimizers.Optimizer`` (clipping, gradient
accumulation, loss scaling and schedules come from Keras), are registered
for serialization and go straight into ``model.compile``. Keras-only.

``build_compiled`` creates a compiled model's optimizer variables before
``fit``, so that TensorFlow traces the training step once, not twice.

Example:

>>> import keras, numpy as np
>>> w = keras.Variable(np.array([1.0], "float32"))
>>> TorchRMSprop(learning_rate=0.1).apply([np.array([2.0], "float32")], [w])
>>> round(float(w.numpy()[0]), 4)  # Torch's first step: lr * g / (sqrt(0.01 g^2) + eps) = 10 lr
0.0
>>> w = keras.Variable(np.array([1.0], "float32"))
>>> TorchSGD(learning_rate=0.1, momentum=0.9, weight_decay=0.5).apply([np.array([2.0], "float32")], [w])
>>> round(float(w.numpy()[0]), 4)  # 1 - 0.1 * (2 + 0.5 * 1)
0.75
"""

from __future__ import annotations

import keras
from keras import ops


def build_compiled(model: keras.Model) -> None:
    """Creates the compiled optimizer's variables (moments, step count) now, for ``model``'s trainable weights.

    Keras builds them inside ``fit``'s first traced step, and a ``tf.function`` that creates variables on
    its first call is traced a second time (tensorflow/tensorflow#48851): every ``fit`` on TensorFlow
    traced its training step twice. Call after ``compile``, under the strategy's scope, with the trainable
    flags as they will train. Harmless on JAX, whose trainer builds the optimizer before its first step.
    """
    model.optimizer.build(model.trainable_variables)


def _check_range(value, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")


@keras.saving.register_keras_serializable(package="common")
class TorchRMSprop(keras.optimizers.Optimizer):
    """RMSprop with Torch's rule: ``v = rho v + (1 - rho) g^2; w -= lr g / (sqrt(v) + eps)``.

    Torch7's ``optim.rmsprop`` (Newell's and ACNN's training code) and
    ``torch.optim.RMSprop`` both put epsilon outside the square root; Keras'
    ``RMSprop`` puts it inside, which caps the step at ``lr * g / sqrt(eps)``
    for small gradients. ``v`` starts at zero (Torch's ``initialMean``), so
    the first step is ``lr * g / (sqrt(1 - rho) |g| + eps)``, about ``10 lr``
    at rho 0.99, as in Torch.

    Args:
        learning_rate: the step size (Torch's default 1e-2), or a schedule.
        rho: the squares' moving-average factor (Torch's ``alpha``, 0.99).
        epsilon: added to ``sqrt(v)`` (Torch's 1e-8).
        weight_decay: L2 added to the gradient before the average, as
            Torch's ``weightDecay`` (coupled, not Keras' decoupled decay).
        **kwargs: Keras' optimizer arguments (``clipnorm``, ``name``, ...).
    """

    def __init__(self, learning_rate=1e-2, rho: float = 0.99, epsilon: float = 1e-8, weight_decay: float = 0.0,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=None, **kwargs)
        _check_range(rho, "rho", 0.0, 1.0)
        _check_range(epsilon, "epsilon", 0.0, float("inf"))
        _check_range(weight_decay, "weight_decay", 0.0, float("inf"))
        self.rho, self.epsilon, self.coupled_weight_decay = float(rho), float(epsilon), float(weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._velocities = self.add_optimizer_variables(variables, "velocity")

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay:
            g = g + self.coupled_weight_decay * variable
        v = self._velocities[self._get_variable_index(variable)]
        self.assign(v, self.rho * v + (1.0 - self.rho) * ops.square(g))
        self.assign_sub(variable, lr * g / (ops.sqrt(v) + self.epsilon))  # Torch: eps outside the root

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon,
                "weight_decay": self.coupled_weight_decay}


@keras.saving.register_keras_serializable(package="common")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with PyTorch's coupled weight decay: ``g += wd w; buf = momentum buf + g; w -= lr buf``.

    ``torch.optim.SGD`` adds ``weight_decay * w`` to the gradient before the
    momentum buffer (L2 regularisation that momentum amplifies); Keras'
    ``weight_decay`` shrinks the weights outside the momentum. PyTorch starts
    the buffer at the first gradient; with its default ``dampening=0`` that is
    what a zero buffer gives, so the buffer starts at zero here. With
    ``nesterov`` the step is ``g + momentum * buf`` (PyTorch's form, in which
    the learning rate multiplies the whole step).

    Args:
        learning_rate: the step size, or a schedule.
        momentum: PyTorch's ``momentum`` (0 for plain SGD).
        weight_decay: PyTorch's ``weight_decay``, applied to every variable.
        nesterov: Nesterov momentum as PyTorch computes it.
        **kwargs: Keras' optimizer arguments (``clipnorm``, ``name``, ...).
    """

    def __init__(self, learning_rate=1e-2, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=None, **kwargs)
        _check_range(momentum, "momentum", 0.0, 1.0)
        _check_range(weight_decay, "weight_decay", 0.0, float("inf"))
        if nesterov and not momentum:
            raise ValueError("nesterov needs a momentum > 0 (as in torch.optim.SGD)")
        self.momentum, self.coupled_weight_decay, self.nesterov = float(momentum), float(weight_decay), bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._buffers = self.add_optimizer_variables(variables, "momentum") if self.momentum else []

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay:
            g = g + self.coupled_weight_decay * variable  # PyTorch: L2 inside the gradient, before momentum
        if self.momentum:
            buffer = self._buffers[self._get_variable_index(variable)]
            self.assign(buffer, self.momentum * buffer + g)
            g = g + self.momentum * buffer if self.nesterov else buffer
        self.assign_sub(variable, lr * g)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "weight_decay": self.coupled_weight_decay,
                "nesterov": self.nesterov}
