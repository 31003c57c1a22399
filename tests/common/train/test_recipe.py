"""Compiling a paper's recipe, as `zoo train`, `zoo cv` and `gpu-check` do: its settings; it needs no TensorFlow."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import unet_transformer
from common.nn import losses
from common.train import recipe


def test_steps_per_execution_defaults_by_device_and_never_exceeds_an_epoch(monkeypatch):
    monkeypatch.setattr(recipe, "has_gpu", lambda: False)
    assert recipe.resolve_steps_per_execution(None, 100) == 1
    assert recipe.resolve_steps_per_execution(8, 100) == 8
    assert recipe.resolve_steps_per_execution(8, 3) == 3
    monkeypatch.setattr(recipe, "has_gpu", lambda: True)
    assert recipe.resolve_steps_per_execution(None, 100) == recipe.GPU_STEPS_PER_EXECUTION
    assert recipe.resolve_steps_per_execution(None, 4) == 4
    assert recipe.resolve_steps_per_execution(1, 100) == 1


def test_compile_model_sets_the_recipe():
    model = unet_transformer.build_model("unet", num_classes=3, base_filters=2)
    recipe.compile_model(model, dataclasses.replace(unet_transformer.RECIPE, steps_per_execution=4, loss="dice"),
                         num_classes=3, steps_per_epoch=10)
    assert model.steps_per_execution == 4
    assert model.jit_compile is False  # Keras' "auto": no XLA for TensorFlow on a CPU
    compiled, main = model._compile_config.config, model.output_names[0]
    assert isinstance(compiled["loss"][main], losses.SoftDiceLoss)
    assert [m.name for m in compiled["metrics"][main]] == ["mean_iou"]
    assert isinstance(model.optimizer, keras.optimizers.Adam)


class _CountsCalls(keras.layers.Layer):
    """Identity whose Python ``call`` runs once per trace of a step through the model (and once eagerly)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, x):
        self.calls += 1
        return x


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fit_traces_the_training_step_once(optimizer):
    # Keras creates optimizer variables in fit's first traced step unless they exist: TensorFlow then traces twice.
    counter = _CountsCalls()
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="softmax")(counter(inputs)))
    recipe.compile_model(model, dataclasses.replace(unet_transformer.RECIPE, optimizer=optimizer), num_classes=3,
                         steps_per_epoch=2)
    assert model.optimizer.built and len(model.optimizer.variables) > 2  # moments, not only the step count
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, (4, 8, 8))
    counter.calls = 0  # the functional build called it symbolically
    model.fit(x, y, batch_size=2, epochs=2, verbose=0, shuffle=False)
    assert counter.calls == 1


# The GPU machine has no TensorFlow: the recipe must compile and train a model with TensorFlow unimportable.
NO_TENSORFLOW = textwrap.dedent("""
    import sys
    sys.modules["tensorflow"] = None  # any import of it now fails
    import dataclasses
    import numpy as np
    import keras
    import unet_transformer
    from common.train import recipe

    assert keras.backend.backend() == "jax"
    print("precision", recipe.configure_precision("auto"))
    model = unet_transformer.build_model("unet", num_classes=3, base_filters=2)
    recipe.compile_model(model, dataclasses.replace(unet_transformer.RECIPE, steps_per_execution=2), num_classes=3,
                         steps_per_epoch=2)
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 2, 32, 32, 1), dtype=np.float32), rng.integers(0, 3, (2, 2, 32, 32)).astype(np.uint8)
    history = model.fit(((x[i], y[i]) for i in range(2)), steps_per_epoch=2, verbose=0)
    print("loss", history.history["loss"][-1], "jit", model.jit_compile)
""")


def test_recipe_compiles_and_trains_under_jax_without_tensorflow():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_backend_optimization_level=0"}  # tiny model: XLA's LLVM passes are its compile time
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW], capture_output=True, text=True, encoding="utf-8",
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert lines["precision"] == "float32"  # auto on a CPU
    loss, _, jit = lines["loss"].split()
    assert float(loss) > 0 and jit == "True"  # Keras' "auto" is XLA on JAX
